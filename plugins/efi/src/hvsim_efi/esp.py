"""The EFI system partition: a host directory seen as a FAT volume (``--esp DIR``).

What it models: the naming and answers of a FAT file system as UEFI firmware's FAT driver gives
them (UEFI 2.10 §13.5 File Protocol, §13.3 FAT file system): ``\\``-separated paths from the root or
from an open directory, ``.`` and ``..`` (never above the root), names compared without case,
names of at most 255 characters without FAT's forbidden characters, subdirectories that list ``.``
and ``..``, a volume of ``VOLUME_SIZE`` bytes in 4 KiB clusters.  Read-only unless ``writable``.

The host is protected whatever the guest asks: every path is resolved component by component
inside DIR, the real path (symlinks followed) must stay inside DIR's real path or the answer is
EFI_ACCESS_DENIED, a name with ``/`` or ``:`` (a host path) is EFI_INVALID_PARAMETER, and writes are
bounded by the volume's size.  The same files as a FAT32 volume's sectors, for BLOCK_IO, are
``fat_image`` (which follows ``generation``, the count of changes made here).  Not modelled here:
FAT's 8.3 short names (``fat_image`` makes them for its directory entries), the hidden/system attributes
(host files have none), file times other than the host's modification and access times, a label
that survives the run (it is kept in memory).
"""

from __future__ import annotations

import datetime
import os
import stat
import struct
from pathlib import Path

import attrs

from hvsim.abi import efi
from hvsim.core.errors import UsageError

from .calls import EfiError

# UEFI 2.10 §13.5.1 EFI_FILE_PROTOCOL.Open: OpenMode and Attributes.
FILE_MODE_READ, FILE_MODE_WRITE, FILE_MODE_CREATE = 0x1, 0x2, 0x8000000000000000
OPEN_MODES = (FILE_MODE_READ, FILE_MODE_READ | FILE_MODE_WRITE, FILE_MODE_READ | FILE_MODE_WRITE | FILE_MODE_CREATE)
FILE_READ_ONLY, FILE_HIDDEN, FILE_SYSTEM, FILE_RESERVED = 0x01, 0x02, 0x04, 0x08
FILE_DIRECTORY, FILE_ARCHIVE = 0x10, 0x20
FILE_VALID_ATTR = 0x37
# §13.5.16 EFI_FILE_INFO: Size, FileSize, PhysicalSize, CreateTime, LastAccessTime,
# ModificationTime (EFI_TIME, §8.3), Attribute, then FileName (CHAR16[]).
FILE_INFO_GUID = efi.guid_bytes("09576e92-6d3f-11d2-8e39-00a0c969723b")
FILE_INFO_HEADER = "<QQQ16s16s16sQ"
SIZE_OF_FILE_INFO = struct.calcsize(FILE_INFO_HEADER)          # 0x50
# §13.5.17 EFI_FILE_SYSTEM_INFO: Size, ReadOnly (BOOLEAN, padded), VolumeSize, FreeSpace,
# BlockSize, then VolumeLabel (CHAR16[]) at offset 0x24.
FILE_SYSTEM_INFO_GUID = efi.guid_bytes("09576e93-6d3f-11d2-8e39-00a0c969723b")
FILE_SYSTEM_INFO_HEADER = "<QB7xQQI"
SIZE_OF_FILE_SYSTEM_INFO = struct.calcsize(FILE_SYSTEM_INFO_HEADER)   # 0x24
# §13.5.18 EFI_FILE_SYSTEM_VOLUME_LABEL: VolumeLabel (CHAR16[]).
VOLUME_LABEL_GUID = efi.guid_bytes("db47d7d3-fe81-11d3-9a35-0090273fc14d")
INFO_NAMES = {FILE_INFO_GUID: "FILE_INFO", FILE_SYSTEM_INFO_GUID: "FILE_SYSTEM_INFO",
              VOLUME_LABEL_GUID: "FILE_SYSTEM_VOLUME_LABEL"}
# §8.3 EFI_TIME.TimeZone when the time is local time of no known zone.
UNSPECIFIED_TIMEZONE = 0x07FF
# Appendix D status codes not in hvsim.abi.efi.
WARN_DELETE_FAILURE = efi.WARN_DELETE_FAILURE
VOLUME_FULL = efi.VOLUME_FULL
# FAT (Microsoft FAT32 specification, "Long Directory Entries"): at most 255 characters, and these
# are not allowed in a long name (nor characters below 0x20).
MAX_NAME = 255
FAT_FORBIDDEN = set('"*/:<>?\\|')
# hvsim's choices for the volume: 4 KiB clusters, 512 MiB (a usual ESP size), label.
CLUSTER = 4096
VOLUME_SIZE = 512 << 20
DEFAULT_LABEL = "HVSIM ESP"


def efi_time(seconds: float) -> bytes:
    """A host time as EFI_TIME (UTC, TimeZone unspecified)."""
    t = datetime.datetime.fromtimestamp(max(seconds, 0), datetime.timezone.utc)
    year = min(max(t.year, 1900), 9999)
    return struct.pack("<HBBBBBBIhBB", year, t.month, t.day, t.hour, t.minute, t.second, 0,
                       t.microsecond * 1000, UNSPECIFIED_TIMEZONE, 0, 0)


def _time_seconds(raw: bytes) -> float | None:
    """An EFI_TIME as host seconds, None when all zero (meaning: leave unchanged) or invalid."""
    year, month, day, hour, minute, second, _, nano, _, _, _ = struct.unpack("<HBBBBBBIhBB", raw)
    if not any(raw):
        return None
    try:
        return datetime.datetime(year, month, day, hour, minute, second, nano // 1000,
                                 datetime.timezone.utc).timestamp()
    except ValueError:
        return None


@attrs.define
class Entry:
    """A file or directory of the volume: its path from the root (host names) and host path."""

    parts: tuple[str, ...]
    host: Path
    is_dir: bool

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""


class EspVolume:
    """The host directory ``root`` as a FAT volume; all host access goes through here."""

    def __init__(self, root: "str | os.PathLike", writable: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"--esp {root}: not a directory")
        self.real_root = Path(os.path.realpath(self.root))
        self.writable = writable
        self.label = DEFAULT_LABEL
        self.generation = 0            # counts changes made through here (``fat_image`` lays out again)

    # -- names ------------------------------------------------------------------------------------
    def _inside(self, host: Path) -> bool:
        real = os.path.realpath(host)
        return real == str(self.real_root) or real.startswith(str(self.real_root) + os.sep)

    def _child(self, parts: tuple[str, ...], name: str) -> str | None:
        """The host name in directory ``parts`` matching ``name`` without case, or None."""
        directory = self.real_root.joinpath(*parts)
        if (directory / name).exists() or (directory / name).is_symlink():
            return name
        folded = name.casefold()
        try:
            return next((n for n in sorted(os.listdir(directory)) if n.casefold() == folded), None)
        except OSError:
            return None

    def resolve(self, base: tuple[str, ...], path: str, *, must_exist: bool = True) -> Entry:
        """The entry ``path`` names, relative to the directory ``base`` (from the root when it
        starts with ``\\``).  With ``must_exist`` False the last component may be missing (its
        Entry then has the guest's spelling and ``is_dir`` False).  EfiError otherwise."""
        parts = [] if path.startswith("\\") else list(base)
        names = [c for c in path.split("\\") if c not in ("", ".")]
        for index, name in enumerate(names):
            last = index == len(names) - 1
            if name == "..":
                if not parts:
                    raise EfiError(efi.NOT_FOUND, f"{path!r}: '..' above the volume's root")
                parts.pop()
                continue
            if len(name) > MAX_NAME:
                raise EfiError(efi.INVALID_PARAMETER, f"{path!r}: a name of {len(name)} characters (FAT allows {MAX_NAME})")
            if any(c in FAT_FORBIDDEN or ord(c) < 0x20 for c in name) or name.strip(" .") == "":
                raise EfiError(efi.INVALID_PARAMETER, f"{path!r}: {name!r} is not a valid FAT name")
            found = self._child(tuple(parts), name)
            if found is None:
                if last and not must_exist:
                    parts.append(name)
                    host = self.real_root.joinpath(*parts)
                    if not self._inside(host.parent):
                        raise EfiError(efi.ACCESS_DENIED, f"{path!r} leads outside the ESP")
                    return Entry(tuple(parts), host, False)
                raise EfiError(efi.NOT_FOUND, f"{path!r}: no {name!r}")
            parts.append(found)
            host = self.real_root.joinpath(*parts)
            if not self._inside(host):
                raise EfiError(efi.ACCESS_DENIED, f"{path!r}: {found!r} is a link leading outside the ESP")
            if not last and not host.is_dir():
                raise EfiError(efi.NOT_FOUND, f"{path!r}: {found!r} is not a directory")
        host = self.real_root.joinpath(*parts)
        if not (host.is_dir() or host.is_file()):
            raise EfiError(efi.NOT_FOUND, f"{path!r} is neither a file nor a directory")
        return Entry(tuple(parts), host, host.is_dir())

    def entry(self, parts: tuple[str, ...]) -> Entry:
        host = self.real_root.joinpath(*parts)
        return Entry(parts, host, host.is_dir())

    # -- contents ---------------------------------------------------------------------------------
    def listing(self, entry: Entry) -> list[Entry]:
        """A directory's entries in the order a read returns them: ``.`` and ``..`` first (not in
        the root), then the names sorted; links leading outside and other host kinds are left out."""
        out = []
        if entry.parts:
            out += [Entry(entry.parts, entry.host, True), Entry(entry.parts[:-1], entry.host.parent, True)]
        try:
            names = sorted(os.listdir(entry.host))
        except OSError:
            return out
        for name in names:
            host = entry.host / name
            if len(name) > MAX_NAME or not self._inside(host) or not (host.is_dir() or host.is_file()):
                continue
            out.append(Entry(entry.parts + (name,), host, host.is_dir()))
        return out

    def read(self, entry: Entry, position: int, size: int) -> bytes:
        try:
            with open(entry.host, "rb") as f:
                f.seek(position)
                return f.read(size)
        except OSError as exc:
            raise EfiError(efi.DEVICE_ERROR, f"{entry.host.name}: {exc.strerror or exc}") from None

    def size(self, entry: Entry) -> int:
        try:
            return 0 if entry.is_dir else entry.host.stat().st_size
        except OSError:
            return 0

    def used(self) -> int:
        """Bytes the volume's files take in whole clusters (directories one cluster each)."""
        total = 0
        for directory, dirs, files in os.walk(self.real_root):
            total += CLUSTER * (1 + len(dirs))
            for name in files:
                try:
                    total += -(-os.stat(os.path.join(directory, name)).st_size // CLUSTER) * CLUSTER
                except OSError:
                    pass
        return total

    # -- changes (the caller has checked ``writable`` and the handle's mode) ------------------------
    def _room(self, growth: int) -> None:
        if growth > 0 and self.used() + growth > VOLUME_SIZE:
            raise EfiError(VOLUME_FULL, f"the ESP holds {VOLUME_SIZE >> 20} MiB")

    def create(self, entry: Entry, directory: bool) -> Entry:
        self.generation += 1
        self._room(CLUSTER)
        try:
            if directory:
                entry.host.mkdir()
            else:
                entry.host.touch(exist_ok=False)
        except OSError as exc:
            raise EfiError(efi.DEVICE_ERROR, f"{entry.host.name}: {exc.strerror or exc}") from None
        return Entry(entry.parts, entry.host, directory)

    def write(self, entry: Entry, position: int, data: bytes) -> None:
        self.generation += 1
        old = self.size(entry)
        self._room(max(position + len(data), old) - old)
        try:
            with open(entry.host, "r+b") as f:
                f.seek(position)
                f.write(data)
        except OSError as exc:
            raise EfiError(efi.DEVICE_ERROR, f"{entry.host.name}: {exc.strerror or exc}") from None

    def truncate(self, entry: Entry, size: int) -> None:
        self.generation += 1
        self._room(size - self.size(entry))
        try:
            os.truncate(entry.host, size)
        except OSError as exc:
            raise EfiError(efi.DEVICE_ERROR, f"{entry.host.name}: {exc.strerror or exc}") from None

    def delete(self, entry: Entry) -> bool:
        """True when removed (a directory must be empty; the root never is removed)."""
        self.generation += 1
        if not entry.parts:
            return False
        try:
            entry.host.rmdir() if entry.is_dir else entry.host.unlink()
        except OSError:
            return False
        return True

    def rename(self, entry: Entry, target: Entry) -> Entry:
        self.generation += 1
        try:
            os.rename(entry.host, target.host)
        except OSError as exc:
            raise EfiError(efi.ACCESS_DENIED, f"rename to {target.name!r}: {exc.strerror or exc}") from None
        return Entry(target.parts, target.host, entry.is_dir)

    def set_read_only(self, entry: Entry, read_only: bool) -> None:
        self.generation += 1
        mode = entry.host.stat().st_mode
        os.chmod(entry.host, (mode & ~stat.S_IWUSR) if read_only else (mode | stat.S_IWUSR))

    def set_times(self, entry: Entry, access: float | None, modification: float | None) -> None:
        self.generation += 1
        if access is None and modification is None:
            return
        st = entry.host.stat()
        os.utime(entry.host, (access if access is not None else st.st_atime,
                              modification if modification is not None else st.st_mtime))

    # -- info records -----------------------------------------------------------------------------
    def attributes(self, entry: Entry) -> int:
        if entry.is_dir:
            return FILE_DIRECTORY
        try:
            writable = entry.host.stat().st_mode & stat.S_IWUSR
        except OSError:
            writable = 0
        return FILE_ARCHIVE | (0 if writable else FILE_READ_ONLY)

    def file_info(self, entry: Entry, name: str | None = None) -> bytes:
        """EFI_FILE_INFO for ``entry``; ``name`` overrides the file name (``.`` and ``..``)."""
        label = ("" if not entry.parts else entry.name) if name is None else name
        encoded = (label + "\0").encode("utf-16-le")
        try:
            st = entry.host.stat()
            size = 0 if entry.is_dir else st.st_size
            times = (efi_time(st.st_mtime), efi_time(st.st_atime), efi_time(st.st_mtime))
        except OSError:
            size, times = 0, (bytes(16),) * 3
        physical = CLUSTER if entry.is_dir else -(-size // CLUSTER) * CLUSTER
        return struct.pack(FILE_INFO_HEADER, SIZE_OF_FILE_INFO + len(encoded), size, physical, *times,
                           self.attributes(entry)) + encoded

    def file_system_info(self) -> bytes:
        encoded = (self.label + "\0").encode("utf-16-le")
        used = self.used()
        return struct.pack(FILE_SYSTEM_INFO_HEADER, SIZE_OF_FILE_SYSTEM_INFO + len(encoded), not self.writable,
                           VOLUME_SIZE, max(VOLUME_SIZE - used, 0), CLUSTER) + encoded

    def volume_label(self) -> bytes:
        return (self.label + "\0").encode("utf-16-le")


def parse_file_info(raw: bytes) -> tuple[int, tuple[float | None, float | None], int, str]:
    """(FileSize, (access, modification) host times or None, Attribute, FileName) of an
    EFI_FILE_INFO the caller checked for size."""
    _, file_size, _, _, access, modification, attribute = struct.unpack_from(FILE_INFO_HEADER, raw)
    name = raw[SIZE_OF_FILE_INFO:].decode("utf-16-le", "replace").split("\0", 1)[0]
    return file_size, (_time_seconds(access), _time_seconds(modification)), attribute, name
