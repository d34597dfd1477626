"""The ESP directory as the sectors of a FAT32 volume, for loaders that read the disk themselves.

GRUB, like any loader with its own file-system drivers, does not use SIMPLE_FILE_SYSTEM: it reads
blocks through EFI_BLOCK_IO (``block_io``) and parses the FAT itself.  ``FatImage`` lays out the
files an ``esp.EspVolume`` lists as a FAT32 volume of ``esp.VOLUME_SIZE`` bytes in ``esp.CLUSTER``
clusters (Microsoft FAT specification, "FAT32 Boot Sector and BPB", "FSInfo", "Directory Structure",
"Long File Name Implementation"): 32 reserved sectors (boot sector, FSInfo, a backup of both at
sector 6), two FATs, then the data region with the root directory at cluster 2.  Each file and
directory takes a contiguous run of clusters; names keep their host spelling in long-name entries
beside a generated 8.3 alias.

The layout is computed from names and sizes only; file contents are read from the host when a
sector holding them is read.  A volume that changes (``EspVolume.generation``) is laid out again at
the next read, which a real disk would not do under a loader's feet; nothing is cached across it.
Not modelled: writing sectors (the block device is read-only), timestamps other than the
modification time, the hidden/system attributes.
"""

from __future__ import annotations

import bisect
import datetime
import struct

import attrs

from hvsim.core.errors import UsageError

from . import esp as fat

SECTOR = 512
SECTORS_PER_CLUSTER = fat.CLUSTER // SECTOR
RESERVED_SECTORS = 32
NUMBER_OF_FATS = 2
FSINFO_SECTOR, BACKUP_BOOT_SECTOR = 1, 6
ROOT_CLUSTER = 2
MEDIA_FIXED = 0xF8
END_OF_CHAIN = 0x0FFFFFFF
VOLUME_ID = 0x48564D53                       # hvsim's volume serial number ("SMVH")
OEM_NAME = b"HVSIM   "
# Directory entry (32 bytes): Name[11], Attr, NTRes, CrtTimeTenth, CrtTime, CrtDate, LstAccDate,
# FstClusHI, WrtTime, WrtDate, FstClusLO, FileSize.
DIR_ENTRY_FORMAT = "<11sBBBHHHHHHHI"
DIR_ENTRY_SIZE = 32
# Long-name entry: Ord, Name1 (5 chars), Attr (0x0F), Type, Chksum, Name2 (6), FstClusLO (0), Name3 (2).
LFN_FORMAT = "<B10sBBB12sH4s"
ATTR_READ_ONLY, ATTR_VOLUME_ID, ATTR_DIRECTORY, ATTR_ARCHIVE, ATTR_LONG_NAME = 0x01, 0x08, 0x10, 0x20, 0x0F
LAST_LONG_ENTRY = 0x40
LFN_CHARS = 13
SHORT_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$%'-_@~`!(){}^#&")


class LayoutError(UsageError):
    """The directory's files do not fit the volume (a usage error when ``--esp DIR`` is given)."""


def short_name_checksum(short: bytes) -> int:
    total = 0
    for byte in short:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def short_name(name: str, used: set[bytes]) -> bytes:
    """The 11-byte 8.3 alias of ``name``, unique among ``used`` (which it joins)."""
    upper = name.upper()
    stem, dot, ext = upper.rpartition(".") if "." in upper.lstrip(".") else (upper, "", "")
    clean = lambda s: "".join(c if c in SHORT_NAME_CHARS else "_" for c in s.replace(" ", "").replace(".", ""))
    base, extension = clean(stem.lstrip(".")), clean(ext)
    exact = (base == stem and extension == ext and 0 < len(base) <= 8 and len(extension) <= 3)
    candidate = (base.ljust(8) + extension[:3].ljust(3)).encode("ascii")
    if exact and candidate not in used:
        used.add(candidate)
        return candidate
    for n in range(1, 1_000_000):
        tail = f"~{n}"
        candidate = ((base or "_")[:8 - len(tail)] + tail).ljust(8).encode("ascii") + extension[:3].ljust(3).encode("ascii")
        if candidate not in used:
            used.add(candidate)
            return candidate
    raise LayoutError(f"no free 8.3 alias for {name!r}")


def _fat_time(seconds: float) -> tuple[int, int]:
    t = datetime.datetime.fromtimestamp(max(seconds, 0), datetime.timezone.utc)
    year = min(max(t.year, 1980), 2107)
    return ((t.hour << 11) | (t.minute << 5) | (t.second // 2),
            ((year - 1980) << 9) | (t.month << 5) | t.day)


def _long_entries(name: str, checksum: int) -> list[bytes]:
    units = name.encode("utf-16-le")
    units += b"\0\0" if len(units) % (2 * LFN_CHARS) else b""
    units = units.ljust(-(-len(units) // (2 * LFN_CHARS)) * 2 * LFN_CHARS, b"\xff")
    pieces = [units[i:i + 2 * LFN_CHARS] for i in range(0, len(units), 2 * LFN_CHARS)]
    out = []
    for index in range(len(pieces), 0, -1):        # stored last piece first
        piece = pieces[index - 1]
        order = index | (LAST_LONG_ENTRY if index == len(pieces) else 0)
        out.append(struct.pack(LFN_FORMAT, order, piece[:10], ATTR_LONG_NAME, 0, checksum, piece[10:22], 0,
                               piece[22:26]))
    return out


@attrs.define
class Node:
    """A file or directory placed on the volume."""

    entry: fat.Entry
    short: bytes
    first_cluster: int = 0
    clusters: int = 0
    children: list["Node"] = attrs.field(factory=list)

    @property
    def entries(self) -> int:
        """Directory entries this node's directory data holds (a directory only)."""
        count = 2 if self.entry.parts else 1          # . and .., or the root's volume label
        for child in self.children:
            count += 1 + (0 if _is_plain_short(child) else -(-len(child.entry.name.encode("utf-16-le")) // (2 * LFN_CHARS)))
        return count


def _is_plain_short(node: Node) -> bool:
    stem, ext = node.short[:8].decode().rstrip(), node.short[8:].decode().rstrip()
    return node.entry.name == (stem + "." + ext if ext else stem)


class FatImage:
    """The sectors of the FAT32 volume holding ``volume``'s files (see the module docstring)."""

    def __init__(self, volume: fat.EspVolume, hidden_sectors: int = 0):
        self.volume = volume
        self.hidden_sectors = hidden_sectors      # sectors before the volume on its disk (BPB_HiddSec)
        self.total_sectors = fat.VOLUME_SIZE // SECTOR
        self.fat_sectors = self._fat_size()
        self.data_start = RESERVED_SECTORS + NUMBER_OF_FATS * self.fat_sectors
        self.cluster_count = (self.total_sectors - self.data_start) // SECTORS_PER_CLUSTER
        self.generation = None
        self._lay_out()

    def _fat_size(self) -> int:
        """Sectors per FAT: the smallest that maps every cluster the rest of the volume holds."""
        size = 1
        while True:
            clusters = (self.total_sectors - RESERVED_SECTORS - NUMBER_OF_FATS * size) // SECTORS_PER_CLUSTER
            if (clusters + 2) * 4 <= size * SECTOR:
                return size
            size = -(-(clusters + 2) * 4 // SECTOR)

    # -- layout ---------------------------------------------------------------------------------------
    def _tree(self, entry: fat.Entry, short: bytes) -> Node:
        node = Node(entry, short)
        if entry.is_dir:
            used: set[bytes] = {b".          ", b"..         "}
            for child in self.volume.listing(entry):
                if len(child.parts) == len(entry.parts) + 1:
                    node.children.append(self._tree(child, short_name(child.name, used)))
        return node

    def _lay_out(self) -> None:
        self.generation = self.volume.generation
        self.root = self._tree(self.volume.entry(()), b"")
        self.fat = bytearray(self.fat_sectors * SECTOR)
        struct.pack_into("<II", self.fat, 0, 0x0FFFFF00 | MEDIA_FIXED, END_OF_CHAIN)
        self.extents: list[tuple[int, int, Node]] = []     # (first cluster, clusters, node), ascending
        next_cluster = ROOT_CLUSTER
        pending = [self.root]
        while pending:
            node = pending.pop(0)
            size = node.entries * DIR_ENTRY_SIZE if node.entry.is_dir else self.volume.size(node.entry)
            node.clusters = max(1, -(-size // fat.CLUSTER)) if node.entry.is_dir else -(-size // fat.CLUSTER)
            if node.clusters:
                if next_cluster + node.clusters > self.cluster_count + 2:
                    raise LayoutError(f"{self.volume.root}: the files take more than the "
                                      f"{fat.VOLUME_SIZE >> 20} MiB volume")
                node.first_cluster = next_cluster
                for cluster in range(next_cluster, next_cluster + node.clusters):
                    link = cluster + 1 if cluster + 1 < next_cluster + node.clusters else END_OF_CHAIN
                    struct.pack_into("<I", self.fat, cluster * 4, link)
                self.extents.append((next_cluster, node.clusters, node))
                next_cluster += node.clusters
            pending.extend(node.children)
        self.next_free = next_cluster
        self.reserved = self._reserved_sectors()
        self._starts = [e[0] for e in self.extents]

    def _dir_entry(self, node: Node, short: bytes | None = None) -> bytes:
        entry = node.entry
        try:
            st = entry.host.stat()
            time, date = _fat_time(st.st_mtime)
            _, access = _fat_time(st.st_atime)
        except OSError:
            time, date, access = 0, (1 << 5) | 1, (1 << 5) | 1
        attribute = ATTR_DIRECTORY if entry.is_dir else self.volume.attributes(entry) & (ATTR_READ_ONLY | ATTR_ARCHIVE)
        size = 0 if entry.is_dir else self.volume.size(entry)
        cluster = node.first_cluster
        return struct.pack(DIR_ENTRY_FORMAT, short or node.short, attribute, 0, 0, time, date, access,
                           cluster >> 16, time, date, cluster & 0xFFFF, size)

    def directory_data(self, node: Node) -> bytes:
        """The directory entries of ``node`` (a directory), in listing order."""
        out = bytearray()
        if node.entry.parts:
            out += self._dir_entry(node, b".          ")
            parent = self._parent(node)
            dotdot = Node(parent.entry, b"..         ", 0 if parent is self.root else parent.first_cluster)
            out += self._dir_entry(dotdot)
        else:
            label = self.volume.label.upper().encode("ascii", "replace")[:11].ljust(11)
            out += struct.pack(DIR_ENTRY_FORMAT, label, ATTR_VOLUME_ID, 0, 0, 0, (1 << 5) | 1, 0, 0, 0,
                               (1 << 5) | 1, 0, 0)
        for child in node.children:
            if not _is_plain_short(child):
                for long_entry in _long_entries(child.entry.name, short_name_checksum(child.short)):
                    out += long_entry
            out += self._dir_entry(child)
        return bytes(out)

    def _parent(self, node: Node) -> Node:
        parent = self.root
        for name in node.entry.parts[:-1]:
            parent = next(c for c in parent.children if c.entry.name == name)
        return parent

    def _reserved_sectors(self) -> bytes:
        label = self.volume.label.upper().encode("ascii", "replace")[:11].ljust(11)
        boot = bytearray(SECTOR)
        boot[0:3] = b"\xEB\x58\x90"
        struct.pack_into("<8sHBHBHHBHHHII", boot, 3, OEM_NAME, SECTOR, SECTORS_PER_CLUSTER, RESERVED_SECTORS,
                         NUMBER_OF_FATS, 0, 0, MEDIA_FIXED, 0, 63, 255, self.hidden_sectors, self.total_sectors)
        struct.pack_into("<IHHIHH12xBxBI11s8s", boot, 36, self.fat_sectors, 0, 0, ROOT_CLUSTER, FSINFO_SECTOR,
                         BACKUP_BOOT_SECTOR, 0x80, 0x29, VOLUME_ID, label, b"FAT32   ")
        boot[510:512] = b"\x55\xAA"
        fsinfo = bytearray(SECTOR)
        struct.pack_into("<I", fsinfo, 0, 0x41615252)
        struct.pack_into("<IIII", fsinfo, 484, 0x61417272, self.cluster_count + 2 - self.next_free,
                         self.next_free, 0)
        struct.pack_into("<I", fsinfo, 508, 0xAA550000)
        out = bytearray(RESERVED_SECTORS * SECTOR)
        for at in (0, BACKUP_BOOT_SECTOR):
            out[at * SECTOR:(at + 1) * SECTOR] = boot
            out[(at + 1) * SECTOR:(at + 2) * SECTOR] = fsinfo
            out[(at + 2) * SECTOR + 510:(at + 3) * SECTOR] = b"\x55\xAA"
        return bytes(out)

    # -- reading --------------------------------------------------------------------------------------
    def read(self, first_sector: int, count: int) -> bytes:
        """``count`` sectors from ``first_sector`` (the caller checked the range)."""
        if self.volume.generation != self.generation:
            self._lay_out()
        start, end = first_sector * SECTOR, (first_sector + count) * SECTOR
        out = bytearray()
        fats_end = self.data_start * SECTOR
        while start < end:
            if start < RESERVED_SECTORS * SECTOR:
                piece = self.reserved[start:min(end, RESERVED_SECTORS * SECTOR)]
            elif start < fats_end:
                offset = (start - RESERVED_SECTORS * SECTOR) % len(self.fat)
                piece = bytes(self.fat[offset:offset + min(end, fats_end) - start])
            else:
                piece = self._data(start - fats_end, end - start)
            out += piece
            start += len(piece)
        return bytes(out)

    def _data(self, offset: int, length: int) -> bytes:
        """Bytes of the data region from ``offset``, up to the end of the extent or gap it is in."""
        cluster = ROOT_CLUSTER + offset // fat.CLUSTER
        index = bisect.bisect_right(self._starts, cluster) - 1
        if index >= 0 and cluster < self.extents[index][0] + self.extents[index][1]:
            first, clusters, node = self.extents[index]
            within = offset - (first - ROOT_CLUSTER) * fat.CLUSTER
            n = min(length, clusters * fat.CLUSTER - within)
            if node.entry.is_dir:
                data = self.directory_data(node)[within:within + n]
            else:
                data = self.volume.read(node.entry, within, n)
            return data.ljust(n, b"\0")
        following = self._starts[index + 1] if index + 1 < len(self._starts) else self.cluster_count + 2
        n = min(length, (following - ROOT_CLUSTER) * fat.CLUSTER - offset)
        return bytes(n if n > 0 else length)        # a gap, or the sectors after the last cluster
