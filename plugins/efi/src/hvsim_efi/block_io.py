"""EFI_BLOCK_IO_PROTOCOL on the boot disk and on its ESP partition (UEFI 2.10 §13.9).

With ``--esp DIR`` the boot device's handle (``protocols.install_boot_device``) is a disk: it gets
BLOCK_IO over the whole ``gpt_disk.GptDisk``, and the ESP's handle gets BLOCK_IO over the partition
alone (LogicalPartition TRUE), as a firmware's partition driver gives.  Loaders with their own file
system drivers (GRUB's efidisk, for one) find disks this way.

Each instance is the protocol (Revision, Media*, Reset, ReadBlocks, WriteBlocks, FlushBlocks) and its
EFI_BLOCK_IO_MEDIA (revision 3 fields) in BootServicesData.  512-byte blocks, no alignment
requirement (IoAlign 0), a fixed medium.  ReadBlocks checks as edk2's block drivers do: MediaId
(EFI_MEDIA_CHANGED), a NULL Buffer (EFI_INVALID_PARAMETER), BufferSize 0 (success, nothing read), a
size that is not whole blocks (EFI_BAD_BUFFER_SIZE), blocks past LastBlock (EFI_INVALID_PARAMETER).
The medium is read-only (ReadOnly TRUE): WriteBlocks answers EFI_WRITE_PROTECTED, whatever
``--esp-writable`` says (files are written through SIMPLE_FILE_SYSTEM only).
"""

from __future__ import annotations

import struct

import attrs

from hvsim.abi import efi

from .calls import EfiError, service
from .fat_image import SECTOR, LayoutError
from .gpt_disk import GptDisk

BLOCK_IO_PROTOCOL_GUID = efi.guid_bytes("964e5b21-6459-11d2-8e39-00a0c969723b")
BLOCK_IO_REVISION3 = (2 << 16) | 31                 # EFI_BLOCK_IO_PROTOCOL_REVISION3
BLOCK_IO_SERVICES = ("Reset", "ReadBlocks", "WriteBlocks", "FlushBlocks")
# EFI_BLOCK_IO_MEDIA: MediaId, RemovableMedia, MediaPresent, LogicalPartition, ReadOnly, WriteCaching,
# BlockSize, IoAlign, LastBlock, then (revision 2) LowestAlignedLba, LogicalBlocksPerPhysicalBlock,
# (revision 3) OptimalTransferLengthGranularity.
MEDIA_FORMAT = "<IBBBBB3xII4xQQII"
MEDIA_ID = 1


@attrs.define
class BlockDevice:
    """One BLOCK_IO instance: blocks ``first_lba`` .. ``first_lba + blocks - 1`` of ``disk``."""

    disk: GptDisk
    first_lba: int
    blocks: int


def install(fw, disk_handle: int, partition_handle: int, disk: GptDisk) -> dict[int, BlockDevice]:
    """BLOCK_IO on the disk's and the partition's handles; the instances by interface address."""
    devices = {}
    for handle, device, partition in ((disk_handle, BlockDevice(disk, 0, disk.total_sectors), False),
                                      (partition_handle, BlockDevice(disk, disk.first_lba, disk.partition_sectors), True)):
        media = fw.put(efi.BOOT_SERVICES_DATA, struct.pack(
            MEDIA_FORMAT, MEDIA_ID, 0, 1, int(partition), 1, 0, SECTOR, 0, device.blocks - 1, 0, 1, 0), 8)
        interface = fw.put(efi.BOOT_SERVICES_DATA, struct.pack(
            "<QQ4Q", BLOCK_IO_REVISION3, media, *(fw.stubs[("BlockIo", n)] for n in BLOCK_IO_SERVICES)), 8)
        fw.db.install(fw, handle, BLOCK_IO_PROTOCOL_GUID, interface)
        devices[interface] = device
    return devices


def _this(ctx) -> BlockDevice:
    esp = ctx.fw.esp
    device = esp.block_devices.get(ctx.args["This"]) if esp is not None else None
    if device is None:
        raise EfiError(efi.INVALID_PARAMETER, f"This {ctx.args['This']:#x} is not a BLOCK_IO instance")
    return device


@service("BlockIo", "Reset", "This", "ExtendedVerification")
def reset(ctx):
    _this(ctx)
    return efi.SUCCESS


def _check(ctx, device: BlockDevice) -> int:
    """The number of blocks a ReadBlocks/WriteBlocks call names, after the checks every call gets."""
    a = ctx.args
    if a["MediaId"] != MEDIA_ID:
        raise EfiError(efi.MEDIA_CHANGED, f"MediaId {a['MediaId']} is not the medium's ({MEDIA_ID})")
    ctx.pointer("Buffer")
    if a["BufferSize"] % SECTOR:
        raise EfiError(efi.BAD_BUFFER_SIZE, f"BufferSize {a['BufferSize']} is not a multiple of {SECTOR}")
    count = a["BufferSize"] // SECTOR
    if count and (a["Lba"] >= device.blocks or count > device.blocks - a["Lba"]):
        raise EfiError(efi.INVALID_PARAMETER, f"blocks {a['Lba']:#x}+{count} past LastBlock {device.blocks - 1:#x}")
    return count


@service("BlockIo", "ReadBlocks", "This", "MediaId", "Lba", "BufferSize", "Buffer")
def read_blocks(ctx):
    device = _this(ctx)
    count = _check(ctx, device)
    if count:
        ctx.check_range(ctx.args["Buffer"], count * SECTOR)
        try:
            data = device.disk.read(device.first_lba + ctx.args["Lba"], count)
        except LayoutError as exc:          # the files written since no longer fit the volume
            raise EfiError(efi.DEVICE_ERROR, str(exc)) from None
        ctx.write(ctx.args["Buffer"], data)
    return efi.SUCCESS


@service("BlockIo", "WriteBlocks", "This", "MediaId", "Lba", "BufferSize", "Buffer")
def write_blocks(ctx):
    _this(ctx)
    if ctx.args["MediaId"] != MEDIA_ID:
        raise EfiError(efi.MEDIA_CHANGED, f"MediaId {ctx.args['MediaId']} is not the medium's ({MEDIA_ID})")
    raise EfiError(efi.WRITE_PROTECTED, "the boot disk is read-only")


@service("BlockIo", "FlushBlocks", "This")
def flush_blocks(ctx):
    _this(ctx)
    return efi.SUCCESS

