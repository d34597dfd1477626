"""Wrap the probe linked at PROBE_EFI_BASE into a PE32+ EFI application (probe.efi), standard
library only.

Layout (Microsoft PE/COFF specification; UEFI 2.10 §2.1.1 for the subsystem and machine):

    RVA 0       headers: DOS stub with e_lfanew, "PE\\0\\0", COFF header (machine x86-64,
                IMAGE_FILE_RELOCS_STRIPPED | EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE), PE32+
                optional header (subsystem 10, EFI application; ImageBase = PROBE_EFI_BASE - 0x1000),
                section table
    RVA 0x1000  .text: the text PT_LOAD (text, rodata, notes, hypercall page)
    ...         .data: the data PT_LOAD, VirtualSize covering .bss

The probe's code is linked for its one address (no relocations), so the image says
IMAGE_FILE_RELOCS_STRIPPED: a firmware must load it at its ImageBase, as edk2 does.
"""

from __future__ import annotations

import struct

PROBE_EFI_BASE = 0x401000           # link address of .text; the headers take the page below
IMAGE_BASE = PROBE_EFI_BASE - 0x1000
FILE_ALIGNMENT = 0x200
SECTION_ALIGNMENT = 0x1000
HEADERS_SIZE = 0x400
MACHINE_X86_64 = 0x8664
SUBSYSTEM_EFI_APPLICATION = 10
CHARACTERISTICS = 0x0001 | 0x0002 | 0x0020   # RELOCS_STRIPPED, EXECUTABLE_IMAGE, LARGE_ADDRESS_AWARE
TEXT_FLAGS = 0x60000020                       # CODE | MEM_EXECUTE | MEM_READ
DATA_FLAGS = 0xC0000040                       # INITIALIZED_DATA | MEM_READ | MEM_WRITE


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def build_pe(elf, entry: int) -> bytes:
    """``elf`` is ``bzimage.read_elf`` of the probe linked at PROBE_EFI_BASE; ``entry`` the
    address of efi_entry."""
    segments = elf.segments
    if not segments or segments[0].vaddr != PROBE_EFI_BASE:
        raise ValueError(f"the first PT_LOAD must be at {PROBE_EFI_BASE:#x}")
    names = (b".text", b".data")
    if len(segments) != len(names):
        raise ValueError(f"expected {len(names)} PT_LOADs, found {len(segments)}")
    table, body = b"", b""
    raw_at = HEADERS_SIZE
    code_size = data_size = 0
    for name, segment, flags in zip(names, segments, (TEXT_FLAGS, DATA_FLAGS)):
        raw = segment.data + bytes(-len(segment.data) % FILE_ALIGNMENT)
        table += struct.pack("<8sIIIIIIHHI", name, segment.memsz, segment.vaddr - IMAGE_BASE, len(raw), raw_at,
                             0, 0, 0, 0, flags)
        body += raw
        raw_at += len(raw)
        if flags == TEXT_FLAGS:
            code_size += len(raw)
        else:
            data_size += len(raw)
    image_end = max(s.vaddr + s.memsz for s in segments)
    size_of_image = _align(image_end - IMAGE_BASE, SECTION_ALIGNMENT)
    opt = struct.pack("<HBBIIIII", 0x20B, 2, 40, code_size, data_size, 0, entry - IMAGE_BASE,
                      PROBE_EFI_BASE - IMAGE_BASE)
    opt += struct.pack("<QIIHHHHHHIIIIHH", IMAGE_BASE, SECTION_ALIGNMENT, FILE_ALIGNMENT, 0, 0, 0, 0, 0, 0, 0,
                       size_of_image, HEADERS_SIZE, 0, SUBSYSTEM_EFI_APPLICATION, 0)
    opt += struct.pack("<QQQQII", 0x10000, 0x1000, 0x10000, 0x1000, 0, 16) + bytes(16 * 8)
    coff = struct.pack("<HHIIIHH", MACHINE_X86_64, len(names), 0, 0, 0, len(opt), CHARACTERISTICS)
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    headers = bytes(dos) + b"PE\0\0" + coff + opt + table
    if len(headers) > HEADERS_SIZE:
        raise ValueError("PE headers do not fit")
    return headers.ljust(HEADERS_SIZE, b"\0") + body
