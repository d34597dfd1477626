"""Building ``struct boot_params`` (the Linux "zero page") a boot loader hands to the kernel.

Layout: arch/x86/include/uapi/asm/bootparam.h (offsets in ``linux_boot``).  The setup header part
is the kernel's own (copied from the bzImage at 0x1F1, as boot.rst tells loaders to do); the loader
then fills the fields it owns (``type_of_loader``, ``cmd_line_ptr``, ramdisk, ``acpi_rsdp_addr``,
the E820 table).  An ELF vmlinux has no setup header, so a minimal one is synthesised the way
Firecracker does (boot flag, "HdrS", a protocol version, ``kernel_alignment``).
"""

from __future__ import annotations

import struct
from typing import Iterable

from . import linux_boot as lb

SYNTHETIC_VERSION = 0x020F          # protocol 2.15 for ELF kernels entered directly
SYNTHETIC_ALIGNMENT = 0x1000000


def zero_page(
    *,
    header_bytes: bytes | None,
    cmd_line_ptr: int,
    ramdisk: tuple[int, int] | None,
    e820: Iterable[tuple[int, int, int]],
    rsdp: int | None,
    type_of_loader: int = lb.TYPE_OF_LOADER_UNDEFINED,
) -> bytes:
    """A 4096-byte zero page.  ``header_bytes`` is the file's bytes 0x1F1..end-of-header, or None."""
    page = bytearray(lb.BOOT_PARAMS_SIZE)
    if header_bytes is not None:
        page[lb.SETUP_HEADER_OFFSET:lb.SETUP_HEADER_OFFSET + len(header_bytes)] = header_bytes
        version = struct.unpack_from("<H", page, lb.VERSION_OFFSET)[0]
    else:
        struct.pack_into("<H", page, lb.BOOT_FLAG_OFFSET, lb.BOOT_FLAG)
        struct.pack_into("<I", page, lb.HEADER_MAGIC_OFFSET, lb.HEADER_MAGIC)
        struct.pack_into("<H", page, lb.VERSION_OFFSET, SYNTHETIC_VERSION)
        struct.pack_into("<I", page, lb.FIELD_OFFSETS["kernel_alignment"], SYNTHETIC_ALIGNMENT)
        version = SYNTHETIC_VERSION
    page[lb.FIELD_OFFSETS["type_of_loader"]] = type_of_loader
    page[lb.FIELD_OFFSETS["loadflags"]] |= lb.LOADED_HIGH
    struct.pack_into("<I", page, lb.FIELD_OFFSETS["cmd_line_ptr"], cmd_line_ptr & 0xFFFF_FFFF)
    struct.pack_into("<I", page, lb.BP_EXT_CMD_LINE_PTR, cmd_line_ptr >> 32)
    if ramdisk is not None:
        address, size = ramdisk
        struct.pack_into("<II", page, lb.FIELD_OFFSETS["ramdisk_image"], address & 0xFFFF_FFFF, size & 0xFFFF_FFFF)
        struct.pack_into("<I", page, lb.BP_EXT_RAMDISK_IMAGE, address >> 32)
        struct.pack_into("<I", page, lb.BP_EXT_RAMDISK_SIZE, size >> 32)
    if rsdp is not None and version >= 0x020E:     # acpi_rsdp_addr exists since protocol 2.14
        struct.pack_into("<Q", page, lb.BP_ACPI_RSDP_ADDR, rsdp)
    entries = list(e820)
    if len(entries) > lb.BP_E820_MAX_ENTRIES:
        raise ValueError(f"{len(entries)} memory-map entries; the zero page holds {lb.BP_E820_MAX_ENTRIES}")
    page[lb.BP_E820_ENTRIES] = len(entries)
    for i, (start, size, kind) in enumerate(entries):
        struct.pack_into("<QQI", page, lb.BP_E820_TABLE + i * lb.BP_E820_ENTRY_SIZE, start, size, kind)
    return bytes(page)
