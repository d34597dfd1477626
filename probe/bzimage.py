"""Wrap the linked probe.elf into a Linux bzImage (boot protocol 2.15), standard library only.

File layout (Documentation/arch/x86/boot.rst; field offsets = boot_params offsets):

    0x000  setup part, (setup_sects + 1) * 512 bytes: boot sector with the setup header at 0x1f1,
           the header continued at 0x200 (jump, "HdrS", ...), the kernel_version string
    ....   protected-mode part, loaded at code32_start = 0x100000:
             the flat image of probe.elf's PT_LOADs from 0x100000 (so +0x200 is linux64_entry),
             padding to 16 bytes,
             the payload: probe.elf gzip-compressed (payload_offset/payload_length point at it),
             as Linux stores its compressed vmlinux, so tools can extract the ELF.

The probe is never run in real mode: the 16-bit code in the setup part is only a `cli; hlt` loop.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass

LOAD_ADDR = 0x100000
ENTRY64_OFFSET = 0x200
SETUP_SECTS = 1  # the setup part is 2 sectors: boot sector + header continuation and version string
SECTOR = 512
HEADER_END = 0x26C  # end of the 2.15 setup header (kernel_info_offset is the last field)

BOOT_PROTOCOL = 0x020F
LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02
CMDLINE_SIZE = 2047
INITRD_ADDR_MAX = 0x7FFFFFFF
KERNEL_ALIGNMENT = 0x100000  # the probe is not relocatable; this equals its one load address's alignment

# 16-bit code: cli; hlt; jmp $-1 (back to the hlt). A BIOS or a real-mode loader that jumps here stops.
REAL_MODE_HALT = bytes([0xFA, 0xF4, 0xEB, 0xFD])

PT_LOAD = 1
SHT_SYMTAB = 2
EM_X86_64 = 62


@dataclass(frozen=True)
class Segment:
    paddr: int
    vaddr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class ElfImage:
    entry: int
    segments: tuple[Segment, ...]
    symbols: dict[str, tuple[int, int]]  # name -> (value, size)


def read_elf(blob: bytes) -> ElfImage:
    """The PT_LOAD segments, entry point and symbol table of a little-endian ELF64 x86-64 file."""
    if blob[:4] != b"\x7fELF" or blob[4] != 2 or blob[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (e_machine,) = struct.unpack_from("<H", blob, 0x12)
    if e_machine != EM_X86_64:
        raise ValueError(f"ELF e_machine is {e_machine}, not x86-64 ({EM_X86_64})")
    e_entry, e_phoff, e_shoff = struct.unpack_from("<QQQ", blob, 0x18)
    e_phentsize, e_phnum, e_shentsize, e_shnum = struct.unpack_from("<HHHH", blob, 0x36)

    segments = []
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", blob, e_phoff + i * e_phentsize
        )
        if p_type == PT_LOAD:
            segments.append(Segment(p_paddr, p_vaddr, blob[p_offset : p_offset + p_filesz], p_memsz))

    sections = [
        struct.unpack_from("<IIQQQQIIQQ", blob, e_shoff + i * e_shentsize) for i in range(e_shnum)
    ]
    symbols: dict[str, tuple[int, int]] = {}
    for _name, sh_type, _f, _a, sh_offset, sh_size, sh_link, _i, _al, sh_entsize in sections:
        if sh_type != SHT_SYMTAB:
            continue
        strtab = sections[sh_link]
        str_off = strtab[4]
        for off in range(sh_offset, sh_offset + sh_size, sh_entsize):
            st_name, _info, _other, _shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", blob, off)
            end = blob.index(b"\0", str_off + st_name)
            name = blob[str_off + st_name : end].decode()
            if name:
                symbols[name] = (st_value, st_size)
    return ElfImage(e_entry, tuple(sorted(segments, key=lambda s: s.paddr)), symbols)


def flat_image(elf: ElfImage) -> tuple[bytes, int]:
    """The PT_LOAD file contents laid out from LOAD_ADDR, and the memory span including .bss."""
    if not elf.segments or elf.segments[0].paddr != LOAD_ADDR:
        raise ValueError(f"the first PT_LOAD must be at {LOAD_ADDR:#x}")
    file_end = max(s.paddr + len(s.data) for s in elf.segments)
    mem_end = max(s.paddr + s.memsz for s in elf.segments)
    flat = bytearray(file_end - LOAD_ADDR)
    for s in elf.segments:
        flat[s.paddr - LOAD_ADDR : s.paddr - LOAD_ADDR + len(s.data)] = s.data
    return bytes(flat), mem_end - LOAD_ADDR


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def build_bzimage(elf_blob: bytes, entries: str = "linux64") -> bytes:
    """The bzImage for probe.elf (see the module docstring for the layout)."""
    elf = read_elf(elf_blob)
    if elf.entry != LOAD_ADDR + ENTRY64_OFFSET:
        raise ValueError(f"ELF entry {elf.entry:#x} is not load address + 0x200")
    flat, mem_span = flat_image(elf)
    payload_offset = _align(len(flat), 16)
    # mtime=0 and no file name keep the payload reproducible.
    payload = gzip.compress(elf_blob, compresslevel=9, mtime=0)
    pm = flat + bytes(payload_offset - len(flat)) + payload
    pm += bytes(_align(len(pm), 16) - len(pm))
    init_size = _align(max(mem_span, len(pm)), 4096)
    kernel_info = elf.symbols.get("kernel_info", (0, 0))[0]
    kernel_info_offset = kernel_info - LOAD_ADDR if kernel_info else 0

    digest = hashlib.sha256(elf_blob).hexdigest()[:12]
    version = f"hvsim-probe 1 (entries: {entries}; probe.elf sha256 {digest})".encode() + b"\0"

    setup = bytearray((SETUP_SECTS + 1) * SECTOR)
    setup[0 : len(REAL_MODE_HALT)] = REAL_MODE_HALT
    message = b"hvsim-probe: boot this with a Linux boot loader (64-bit entry at +0x200)\r\n\0"
    setup[0x10 : 0x10 + len(message)] = message
    version_off = HEADER_END + len(REAL_MODE_HALT)
    if version_off + len(version) > len(setup):
        raise ValueError("kernel_version string does not fit the setup part")
    setup[HEADER_END : version_off] = REAL_MODE_HALT
    setup[version_off : version_off + len(version)] = version

    def put(fmt: str, off: int, value: int | bytes) -> None:
        struct.pack_into("<" + fmt, setup, off, value)

    put("B", 0x1F1, SETUP_SECTS)  # setup_sects
    put("H", 0x1F2, 0)  # root_flags
    put("I", 0x1F4, len(pm) // 16)  # syssize, 16-byte paragraphs
    put("H", 0x1FA, 0xFFFF)  # vid_mode: normal
    put("H", 0x1FC, 0)  # root_dev
    put("H", 0x1FE, 0xAA55)  # boot_flag
    put("B", 0x200, 0xEB)  # jump: short jmp over the header
    put("B", 0x201, HEADER_END - 0x202)
    put("4s", 0x202, b"HdrS")  # header
    put("H", 0x206, BOOT_PROTOCOL)  # version
    put("I", 0x208, 0)  # realmode_swtch
    put("H", 0x20C, 0x1000)  # start_sys_seg (obsolete; Linux's value)
    put("H", 0x20E, version_off - 0x200)  # kernel_version
    put("B", 0x210, 0)  # type_of_loader (the loader writes it)
    put("B", 0x211, LOADED_HIGH)  # loadflags
    put("H", 0x212, 0x8000)  # setup_move_size
    put("I", 0x214, LOAD_ADDR)  # code32_start
    put("I", 0x22C, INITRD_ADDR_MAX)  # initrd_addr_max
    put("I", 0x230, KERNEL_ALIGNMENT)  # kernel_alignment
    put("B", 0x234, 0)  # relocatable_kernel
    put("B", 0x235, KERNEL_ALIGNMENT.bit_length() - 1)  # min_alignment (log2)
    put("H", 0x236, XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G)  # xloadflags
    put("I", 0x238, CMDLINE_SIZE)  # cmdline_size
    put("I", 0x23C, 0)  # hardware_subarch: PC
    put("Q", 0x240, 0)  # hardware_subarch_data
    put("I", 0x248, payload_offset)  # payload_offset, from the protected-mode part's start
    put("I", 0x24C, len(payload))  # payload_length
    put("Q", 0x250, 0)  # setup_data
    put("Q", 0x258, LOAD_ADDR)  # pref_address
    put("I", 0x260, init_size)  # init_size
    put("I", 0x264, 0)  # handover_offset: no EFI handover entry
    put("I", 0x268, kernel_info_offset)  # kernel_info_offset
    return bytes(setup) + pm
