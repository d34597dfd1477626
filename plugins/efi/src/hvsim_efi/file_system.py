"""EFI_SIMPLE_FILE_SYSTEM_PROTOCOL and EFI_FILE_PROTOCOL over the ESP (``esp.EspVolume``).

The ESP is a handle with a hard-drive media device path (UEFI 2.10 §10.3.5.1: partition 1 of a GPT
disk under hvsim's boot device) carrying DEVICE_PATH, SIMPLE_FILE_SYSTEM and BLOCK_IO (``block_io``).  Every open file or
directory is its own EFI_FILE_PROTOCOL instance (revision 1: Open ... Flush, §13.5.1) in
BootServicesData pool, freed by Close or Delete.  A directory's Read returns one EFI_FILE_INFO per
call and BufferSize 0 at the end; SetPosition(0) restarts it (§13.5.5, §13.5.9).  Files are read and
written on the host at each call (nothing is cached, so Flush has nothing to do).

Also here: what a device path names on the ESP (``file_from_device_path``), used by LoadImage and
the boot manager.  Not modelled: revision 2's OpenEx/ReadEx/WriteEx/FlushEx (the revision says 1).
"""

from __future__ import annotations

import struct

import attrs

from hvsim.abi import efi

from . import block_io, gpt_disk
from . import esp as fat
from .calls import EfiError, service
from .protocols import device_path_node

SIMPLE_FILE_SYSTEM_PROTOCOL_GUID = efi.SIMPLE_FILE_SYSTEM_PROTOCOL_GUID
SIMPLE_FILE_SYSTEM_REVISION = 0x00010000
FILE_PROTOCOL_REVISION = 0x00010000                                                       # §13.5.1
FILE_SERVICES = ("Open", "Close", "Delete", "Read", "Write", "GetPosition", "SetPosition", "GetInfo",
                 "SetInfo", "Flush")
FILE_PROTOCOL_SIZE = 8 + 8 * len(FILE_SERVICES)
SFS_SERVICES = ("OpenVolume",)
END_OF_FILE = 0xFFFF_FFFF_FFFF_FFFF           # SetPosition: the end of the file
# §10.3.5.1 Hard Drive media device path: type 4, subtype 1, 42 bytes.
MEDIA_HARDDRIVE_DP = efi.MEDIA_HARDDRIVE_DP
HARDDRIVE_FORMAT = "<IQQ16sBB"                # PartitionNumber, Start, Size (LBAs), Signature, MBRType, SignatureType
MBR_TYPE_GPT, SIGNATURE_TYPE_GUID = 0x02, 0x02
ESP_PARTITION_GUID = efi.guid_bytes("6e9b4f3e-7a5c-4c2f-9a1d-68767369e5b0")   # hvsim's ESP partition
ESP_FIRST_LBA, SECTOR = 0x800, 512
MAX_PATH_CHARS = 4096


@attrs.define
class OpenFile:
    entry: fat.Entry
    mode: int
    position: int = 0
    listing: list | None = None        # a directory's entries, taken when it is opened or rewound

    @property
    def for_write(self) -> bool:
        return bool(self.mode & fat.FILE_MODE_WRITE)


@attrs.define
class Esp:
    volume: fat.EspVolume
    handle: int
    interface: int
    device_path: bytes                 # without the End node
    files: dict[int, OpenFile] = attrs.field(factory=dict)
    block_devices: dict[int, "block_io.BlockDevice"] = attrs.field(factory=dict)


def harddrive_node() -> bytes:
    body = struct.pack(HARDDRIVE_FORMAT, 1, ESP_FIRST_LBA, fat.VOLUME_SIZE // SECTOR, ESP_PARTITION_GUID,
                       MBR_TYPE_GPT, SIGNATURE_TYPE_GUID)
    return device_path_node(efi.MEDIA_DEVICE_PATH, MEDIA_HARDDRIVE_DP, body)


def install(fw, volume: fat.EspVolume) -> Esp:
    """The ESP's handle: the boot device's path + the hard-drive node, with SIMPLE_FILE_SYSTEM; and
    BLOCK_IO on it and on the boot device, over the disk that holds the ESP (``gpt_disk``)."""
    path = fw.boot_device_path[:-4] + harddrive_node()
    interface = fw.put(efi.BOOT_SERVICES_DATA, struct.pack("<QQ", SIMPLE_FILE_SYSTEM_REVISION,
                                                          fw.stubs[("SFS", "OpenVolume")]), 8)
    handle = fw.db.install(fw, 0, efi.DEVICE_PATH_PROTOCOL_GUID,
                           fw.put(efi.BOOT_SERVICES_DATA, path + efi.END_DEVICE_PATH, 8))
    fw.db.install(fw, handle, SIMPLE_FILE_SYSTEM_PROTOCOL_GUID, interface)
    fw.esp = Esp(volume, handle, interface, path)
    disk = gpt_disk.GptDisk(volume, ESP_FIRST_LBA, ESP_PARTITION_GUID)
    fw.esp.block_devices = block_io.install(fw, fw.boot_device, handle, disk)
    return fw.esp


def _new_file(ctx, entry: fat.Entry, mode: int) -> int:
    fw = ctx.fw
    interface = fw.pool.allocate(efi.BOOT_SERVICES_DATA, FILE_PROTOCOL_SIZE)
    ctx.write(interface, struct.pack("<Q", FILE_PROTOCOL_REVISION)
              + b"".join(struct.pack("<Q", fw.stubs[("File", n)]) for n in FILE_SERVICES))
    opened = OpenFile(entry, mode)
    if entry.is_dir:
        opened.listing = fw.esp.volume.listing(entry)
    fw.esp.files[interface] = opened
    ctx.record["path"] = "\\" + "\\".join(entry.parts)
    return interface


def _esp(ctx) -> Esp:
    if ctx.fw.esp is None:
        raise EfiError(efi.INVALID_PARAMETER, "no ESP")
    return ctx.fw.esp


def _this(ctx) -> OpenFile:
    opened = _esp(ctx).files.get(ctx.args["This"])
    if opened is None:
        raise EfiError(efi.INVALID_PARAMETER, f"This {ctx.args['This']:#x} is not an open file")
    return opened


def _close(ctx) -> None:
    ctx.fw.esp.files.pop(ctx.args["This"])
    ctx.fw.pool.free(ctx.args["This"])


@service("SFS", "OpenVolume", "This", "Root")
def open_volume(ctx):
    esp = _esp(ctx)
    if ctx.args["This"] != esp.interface:
        raise EfiError(efi.INVALID_PARAMETER, "This is not the ESP's file system protocol")
    out = ctx.pointer("Root")
    ctx.write_u64(out, _new_file(ctx, esp.volume.entry(()), fat.FILE_MODE_READ | (
        fat.FILE_MODE_WRITE if esp.volume.writable else 0)))
    return efi.SUCCESS


@service("File", "Open", "This", "NewHandle", "FileName", "OpenMode", "Attributes")
def file_open(ctx):
    a = ctx.args
    opened = _this(ctx)
    volume = ctx.fw.esp.volume
    out = ctx.pointer("NewHandle")
    name = ctx.ucs2(ctx.pointer("FileName"), MAX_PATH_CHARS)
    ctx.record["name"] = name
    mode = a["OpenMode"]
    if mode not in fat.OPEN_MODES:
        raise EfiError(efi.INVALID_PARAMETER, f"OpenMode {mode:#x}")
    create = bool(mode & fat.FILE_MODE_CREATE)
    if create and a["Attributes"] & ~fat.FILE_VALID_ATTR:
        raise EfiError(efi.INVALID_PARAMETER, f"Attributes {a['Attributes']:#x}")
    if mode & fat.FILE_MODE_WRITE and not volume.writable:
        raise EfiError(efi.WRITE_PROTECTED, "the ESP is read-only (--esp-writable makes it writable)")
    if not opened.entry.is_dir and not name.startswith("\\"):
        raise EfiError(efi.NOT_FOUND, "a relative name from a file handle")
    entry = volume.resolve(opened.entry.parts, name, must_exist=not create)
    if not entry.host.exists():
        entry = volume.create(entry, bool(a["Attributes"] & fat.FILE_DIRECTORY))
        ctx.record["created"] = True
    elif mode & fat.FILE_MODE_WRITE and volume.attributes(entry) & fat.FILE_READ_ONLY:
        raise EfiError(efi.ACCESS_DENIED, f"{name!r} is read-only")
    ctx.write_u64(out, _new_file(ctx, entry, mode))
    return efi.SUCCESS


@service("File", "Close", "This")
def file_close(ctx):
    _this(ctx)
    _close(ctx)
    return efi.SUCCESS


@service("File", "Delete", "This")
def file_delete(ctx):
    opened = _this(ctx)
    volume = ctx.fw.esp.volume
    _close(ctx)
    if not (volume.writable and opened.for_write) or not volume.delete(opened.entry):
        ctx.record["error"] = "not deleted (read-only handle or volume, the root, or a directory not empty)"
        return fat.WARN_DELETE_FAILURE
    return efi.SUCCESS


@service("File", "Read", "This", "BufferSize", "Buffer")
def file_read(ctx):
    opened = _this(ctx)
    volume = ctx.fw.esp.volume
    size_ptr = ctx.pointer("BufferSize")
    have = ctx.read_u64(size_ptr)
    if opened.entry.is_dir:
        if opened.position >= len(opened.listing):
            ctx.write_u64(size_ptr, 0)
            return efi.SUCCESS
        entry = opened.listing[opened.position]
        name = {0: ".", 1: ".."}.get(opened.position) if opened.entry.parts else None
        info = volume.file_info(entry, name)
        if have < len(info):
            ctx.write_u64(size_ptr, len(info))
            return efi.BUFFER_TOO_SMALL
        ctx.write(ctx.pointer("Buffer"), info)
        ctx.write_u64(size_ptr, len(info))
        opened.position += 1
        return efi.SUCCESS
    if opened.position > volume.size(opened.entry):
        raise EfiError(efi.DEVICE_ERROR, f"the position {opened.position:#x} is beyond the end of the file")
    data = volume.read(opened.entry, opened.position, min(have, fat.VOLUME_SIZE))
    if data:
        ctx.write(ctx.pointer("Buffer"), data)
    ctx.write_u64(size_ptr, len(data))
    opened.position += len(data)
    ctx.record["read"] = len(data)
    return efi.SUCCESS


@service("File", "Write", "This", "BufferSize", "Buffer")
def file_write(ctx):
    opened = _this(ctx)
    volume = ctx.fw.esp.volume
    size_ptr = ctx.pointer("BufferSize")
    if opened.entry.is_dir:
        raise EfiError(efi.UNSUPPORTED, "a directory cannot be written")
    if not volume.writable:
        raise EfiError(efi.WRITE_PROTECTED, "the ESP is read-only")
    if not opened.for_write:
        raise EfiError(efi.ACCESS_DENIED, "the file was opened read-only")
    size = ctx.read_u64(size_ptr)
    if size > fat.VOLUME_SIZE:
        raise EfiError(fat.VOLUME_FULL, f"{size:#x} bytes")
    data = ctx.read(ctx.pointer("Buffer"), size) if size else b""
    volume.write(opened.entry, opened.position, data)
    opened.position += len(data)
    ctx.record["written"] = len(data)
    return efi.SUCCESS


@service("File", "GetPosition", "This", "Position")
def file_get_position(ctx):
    opened = _this(ctx)
    out = ctx.pointer("Position")
    if opened.entry.is_dir:
        raise EfiError(efi.UNSUPPORTED, "a directory has no position")
    ctx.write_u64(out, opened.position)
    return efi.SUCCESS


@service("File", "SetPosition", "This", "Position")
def file_set_position(ctx):
    opened = _this(ctx)
    position = ctx.args["Position"]
    if opened.entry.is_dir:
        if position != 0:
            raise EfiError(efi.UNSUPPORTED, "a directory's position can only be set to 0")
        opened.listing = ctx.fw.esp.volume.listing(opened.entry)
    elif position == END_OF_FILE:
        position = ctx.fw.esp.volume.size(opened.entry)
    opened.position = position
    return efi.SUCCESS


def _info_type(ctx) -> bytes:
    guid = ctx.read(ctx.pointer("InformationType"), 16)
    ctx.record["InformationType"] = fat.INFO_NAMES.get(guid, efi.guid_name(guid))
    if guid not in fat.INFO_NAMES:
        raise EfiError(efi.UNSUPPORTED, "an information type this file system does not have")
    return guid


@service("File", "GetInfo", "This", "InformationType", "BufferSize", "Buffer")
def file_get_info(ctx):
    opened = _this(ctx)
    volume = ctx.fw.esp.volume
    guid = _info_type(ctx)
    size_ptr = ctx.pointer("BufferSize")
    info = (volume.file_info(opened.entry) if guid == fat.FILE_INFO_GUID
            else volume.file_system_info() if guid == fat.FILE_SYSTEM_INFO_GUID else volume.volume_label())
    have = ctx.read_u64(size_ptr)
    ctx.write_u64(size_ptr, len(info))
    if have < len(info):
        return efi.BUFFER_TOO_SMALL
    ctx.write(ctx.pointer("Buffer"), info)
    return efi.SUCCESS


@service("File", "SetInfo", "This", "InformationType", "BufferSize", "Buffer")
def file_set_info(ctx):
    opened = _this(ctx)
    volume = ctx.fw.esp.volume
    guid = _info_type(ctx)
    size = ctx.args["BufferSize"]
    minimum = {fat.FILE_INFO_GUID: fat.SIZE_OF_FILE_INFO + 2,
               fat.FILE_SYSTEM_INFO_GUID: fat.SIZE_OF_FILE_SYSTEM_INFO + 2}.get(guid, 2)
    if size < minimum or size > 1 << 16:
        raise EfiError(efi.BAD_BUFFER_SIZE, f"BufferSize {size:#x} (at least {minimum:#x})")
    raw = ctx.read(ctx.pointer("Buffer"), size)
    if guid != fat.FILE_INFO_GUID:
        if not volume.writable:
            raise EfiError(efi.WRITE_PROTECTED, "the ESP is read-only")
        text = raw[fat.SIZE_OF_FILE_SYSTEM_INFO if guid == fat.FILE_SYSTEM_INFO_GUID else 0:]
        label = text.decode("utf-16-le", "replace").split("\0", 1)[0]
        if len(label) > 11 * 4:
            raise EfiError(efi.INVALID_PARAMETER, f"a volume label of {len(label)} characters")
        volume.label = label
        volume.generation += 1
        ctx.record["label"] = label
        return efi.SUCCESS
    if struct.unpack_from("<Q", raw)[0] > size:
        raise EfiError(efi.BAD_BUFFER_SIZE, "EFI_FILE_INFO.Size is larger than BufferSize")
    file_size, times, attribute, name = fat.parse_file_info(raw)
    if attribute & ~fat.FILE_VALID_ATTR:
        raise EfiError(efi.INVALID_PARAMETER, f"Attribute {attribute:#x}")
    entry = opened.entry
    current_size = volume.size(entry)
    renamed = name != entry.name and bool(entry.parts)
    if not entry.parts and name not in ("", "\\"):
        raise EfiError(efi.ACCESS_DENIED, "the root directory cannot be renamed")
    if bool(attribute & fat.FILE_DIRECTORY) != entry.is_dir:
        raise EfiError(efi.ACCESS_DENIED, "the directory attribute cannot change")
    if not volume.writable:
        raise EfiError(efi.WRITE_PROTECTED, "the ESP is read-only")
    if not opened.for_write and (renamed or (not entry.is_dir and file_size != current_size)):
        raise EfiError(efi.ACCESS_DENIED, "the file was opened read-only")
    if renamed:
        target = volume.resolve(entry.parts[:-1], name, must_exist=False)
        if target.host.exists() or target.host.is_symlink():
            raise EfiError(efi.ACCESS_DENIED, f"{name!r} already exists")
        opened.entry = entry = volume.rename(entry, target)
        ctx.record["renamed"] = "\\" + "\\".join(entry.parts)
    if not entry.is_dir and file_size != current_size:
        volume.truncate(entry, file_size)
    if not entry.is_dir and bool(attribute & fat.FILE_READ_ONLY) != bool(volume.attributes(entry) & fat.FILE_READ_ONLY):
        volume.set_read_only(entry, bool(attribute & fat.FILE_READ_ONLY))
    volume.set_times(entry, *times)
    return efi.SUCCESS


@service("File", "Flush", "This")
def file_flush(ctx):
    opened = _this(ctx)
    if not ctx.fw.esp.volume.writable:
        raise EfiError(efi.WRITE_PROTECTED, "the ESP is read-only")
    if not opened.for_write:
        raise EfiError(efi.ACCESS_DENIED, "the file was opened read-only")
    return efi.SUCCESS


# -- device paths naming ESP files ---------------------------------------------------------------------
def _nodes(path: bytes):
    at = 0
    while at + 4 <= len(path):
        kind, subtype, length = struct.unpack_from("<BBH", path, at)
        if length < 4 or at + length > len(path):
            raise EfiError(efi.INVALID_PARAMETER, f"device path node at offset {at} has length {length}")
        if kind == efi.END_DEVICE_PATH_TYPE:
            return
        yield kind, subtype, path[at:at + length]
        at += length


def file_path_name(fw, path: bytes) -> str:
    """The ESP file a device path (nodes, the End node optional) names, as ``\\``-joined text:
    the ESP's full path or a short-form one starting at its hard-drive node, then file-path nodes.
    EFI_NOT_FOUND for a path to another device or one with no file."""
    esp = fw.esp
    if esp is None:
        raise EfiError(efi.NOT_FOUND, "no ESP (--esp DIR) to load a device path from")
    nodes = list(_nodes(path))
    prefix = list(_nodes(esp.device_path))
    short = [n for n in prefix if n[0] == efi.MEDIA_DEVICE_PATH and n[1] == MEDIA_HARDDRIVE_DP]
    if nodes[:len(prefix)] == prefix:
        rest = nodes[len(prefix):]
    elif nodes[:1] == short:
        rest = nodes[1:]
    else:
        raise EfiError(efi.NOT_FOUND, "the device path is not on the ESP")
    if not rest or any((k, s) != (efi.MEDIA_DEVICE_PATH, efi.MEDIA_FILEPATH_DP) for k, s, _ in rest):
        raise EfiError(efi.NOT_FOUND, "the device path names no file on the ESP")
    name = ""
    for _, _, raw in rest:
        part = raw[4:].decode("utf-16-le", "replace").split("\0", 1)[0]
        name = name + part if name.endswith("\\") or part.startswith("\\") or not name else name + "\\" + part
    return name if name.startswith("\\") else "\\" + name


def read_file(fw, name: str) -> tuple[str, bytes]:
    """(the canonical ``\\``-path, the bytes) of the ESP file ``name``; EfiError as Open gives."""
    volume = fw.esp.volume
    entry = volume.resolve((), name)
    if entry.is_dir:
        raise EfiError(efi.NOT_FOUND, f"{name!r} is a directory")
    size = volume.size(entry)
    if size > fat.VOLUME_SIZE:
        raise EfiError(efi.LOAD_ERROR, f"{name!r} is larger than the volume")
    return "\\" + "\\".join(entry.parts), volume.read(entry, 0, size)
