"""Synthesise small kernel images in memory for tests: ELF32/ELF64, Xen notes, bzImage, PE32+.

Everything returns ``bytes``; nothing touches the disk.  Typical use::

    from imagegen import Load, build_elf, xen_note, build_bzimage, compress_payload

    notes = xen_note(XEN_ELFNOTE_PHYS32_ENTRY, 0x100000, size=4)
    elf = build_elf(bits=64, entry=0x100000, loads=[Load(0x100000, b"\\xf4")], notes=[notes])
    bz = build_bzimage(version=0x020F, payload=compress_payload("xz", elf))

The builders write what they are told, including values an older boot protocol would not have, so
tests can check that parsers ignore fields by version.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

EM_386, EM_X86_64 = 3, 62
ET_EXEC = 2
PT_LOAD, PT_NOTE = 1, 4
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE = 1, 2, 3, 7
PF_RWX = 7


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to if to > 1 else value


# --- ELF notes ------------------------------------------------------------------------------------

def elf_note(owner: bytes, note_type: int, desc: bytes) -> bytes:
    """One note as Linux's ELFNOTE macro lays it out: header, name+NUL and desc each 4-aligned."""
    name = owner + b"\0"
    return (struct.pack("<III", len(name), len(desc), note_type)
            + name.ljust(_align(len(name), 4), b"\0") + desc.ljust(_align(len(desc), 4), b"\0"))


def xen_note(note_type: int, value: Union[int, str, bytes], size: int = 8) -> bytes:
    """A "Xen" note: int -> ``size``-byte little-endian, str -> NUL-terminated, bytes as given."""
    if isinstance(value, int):
        desc = value.to_bytes(size, "little")
    elif isinstance(value, str):
        desc = value.encode() + b"\0"
    else:
        desc = value
    return elf_note(b"Xen", note_type, desc)


def linux_xen_notes(*, entry: Optional[int] = 0xFFFFFFFF81000100, phys32_entry: Optional[int] = 0x1000040,
                    phys32_size: int = 8, virt_base: int = 0xFFFFFFFF80000000) -> bytes:
    """The note set of an x86-64 Linux kernel with XEN_PV and PVH (arch/x86/xen/xen-head.S)."""
    blob = b"".join([
        xen_note(6, "linux"), xen_note(7, "2.6"), xen_note(5, "xen-3.0"),
        xen_note(3, virt_base), xen_note(15, 0x8000000000),
        xen_note(10, "!writable_page_tables|pae_pgdir_above_4gb"),
        xen_note(17, (1 << 0) | (1 << 11), size=4), xen_note(9, "yes"), xen_note(8, "generic"),
        xen_note(13, struct.pack("<QQ", 1, 1)), xen_note(14, 1, size=4), xen_note(16, 1, size=4),
        xen_note(12, 0xFFFF800000000000), xen_note(4, 0),
    ])
    if entry is not None:
        blob += xen_note(1, entry)
    if phys32_entry is not None:
        blob += xen_note(18, phys32_entry, size=phys32_size)
    return blob


# --- ELF ------------------------------------------------------------------------------------------

@dataclass
class Load:
    """One PT_LOAD: ``data`` at ``paddr`` (``vaddr`` defaults to paddr, ``memsz`` to len(data))."""

    paddr: int
    data: bytes
    vaddr: Optional[int] = None
    memsz: Optional[int] = None
    flags: int = PF_RWX
    align: int = 0x1000


@dataclass
class _Section:
    name: str
    sh_type: int
    data: bytes
    addr: int = 0
    link: int = 0
    entsize: int = 0
    offset: int = 0


def build_elf(*, bits: int = 64, machine: Optional[int] = None, entry: int = 0x100000,
              loads: Sequence[Load] = (), notes: Sequence[bytes] = (), note_align: int = 4,
              note_segments: bool = True, note_sections: bool = True,
              sections: Sequence[tuple[str, int, bytes]] = (),
              symbols: Optional[dict[str, int]] = None, e_type: int = ET_EXEC,
              zero_note_offset: bool = False) -> bytes:
    """An x86 ELF executable.

    ``notes``: one blob per note container; each becomes a PT_NOTE (p_align ``note_align``) when
    ``note_segments`` and a ``.note.Xen`` SHT_NOTE section when ``note_sections``.  ``sections``:
    extra (name, sh_type, data) sections such as ``("__xen_guest", SHT_PROGBITS, b"...\\0")``.
    ``zero_note_offset`` writes p_offset 0 in the PT_NOTE headers (the binutils bug libelf skips).
    """
    is64 = bits == 64
    machine = machine if machine is not None else (EM_X86_64 if is64 else EM_386)
    loads = list(loads) or [Load(entry, b"\xf4" * 16)]
    ehsize, phentsize, shentsize = (64, 56, 64) if is64 else (52, 32, 40)
    phnum = len(loads) + (len(notes) if note_segments else 0)
    body = bytearray(ehsize + phnum * phentsize)

    def put(blob: bytes, align: int = 16) -> int:
        body.extend(b"\0" * (_align(len(body), align) - len(body)))
        offset = len(body)
        body.extend(blob)
        return offset

    load_offsets = [put(ld.data, 16) for ld in loads]
    note_offsets = [put(blob, 4) for blob in notes]
    shdrs: list[_Section] = [_Section("", 0, b"")]
    for ld, offset in zip(loads, load_offsets):
        shdrs.append(_Section(f".load{len(shdrs)}", SHT_PROGBITS, ld.data, ld.vaddr or ld.paddr,
                              offset=offset))
    if note_sections:
        for blob, offset in zip(notes, note_offsets):
            shdrs.append(_Section(".note.Xen", SHT_NOTE, blob, offset=offset))
    for name, sh_type, data in sections:
        shdrs.append(_Section(name, sh_type, data, offset=put(data, 8)))
    if symbols:
        strtab = b"\0" + b"".join(n.encode() + b"\0" for n in symbols)
        fmt, size = ("<IBBHQQ", 24) if is64 else ("<IIIBBH", 16)
        rows, name_off = [b"\0" * size], 1
        for name, value in symbols.items():
            info = 0x12  # STB_GLOBAL, STT_FUNC
            rows.append(struct.pack(fmt, name_off, info, 0, 1, value, 0) if is64
                        else struct.pack(fmt, name_off, value, 0, info, 0, 1))
            name_off += len(name) + 1
        symtab_index = len(shdrs)
        shdrs.append(_Section(".symtab", SHT_SYMTAB, b"".join(rows), link=symtab_index + 1,
                              entsize=size, offset=put(b"".join(rows), 8)))
        shdrs.append(_Section(".strtab", SHT_STRTAB, strtab, offset=put(strtab, 1)))
    shstrtab = b"\0" + b"".join(s.name.encode() + b"\0" for s in shdrs[1:]) + b".shstrtab\0"
    shdrs.append(_Section(".shstrtab", SHT_STRTAB, shstrtab, offset=put(shstrtab, 1)))
    shoff = _align(len(body), 8)
    body.extend(b"\0" * (shoff - len(body)))

    name_offsets, cursor = [0], 1
    for s in shdrs[1:]:
        name_offsets.append(cursor)
        cursor += len(s.name) + 1
    for s, name_off in zip(shdrs, name_offsets):
        if is64:
            body += struct.pack("<IIQQQQIIQQ", name_off, s.sh_type, 0, s.addr, s.offset,
                                len(s.data), s.link, 0, 4, s.entsize)
        else:
            body += struct.pack("<IIIIIIIIII", name_off, s.sh_type, 0, s.addr, s.offset,
                                len(s.data), s.link, 0, 4, s.entsize)

    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1]) + b"\0" * 9
    ehdr_fmt = "<HHIQQQIHHHHHH" if is64 else "<HHIIIIIHHHHHH"
    body[0:ehsize] = ident + struct.pack(ehdr_fmt, e_type, machine, 1, entry, ehsize, shoff, 0,
                                         ehsize, phentsize, phnum, shentsize, len(shdrs),
                                         len(shdrs) - 1)
    pos = ehsize
    for ld, offset in zip(loads, load_offsets):
        pos = _put_phdr(body, pos, is64, PT_LOAD, ld.flags, offset, ld.vaddr or ld.paddr, ld.paddr,
                        len(ld.data), ld.memsz or len(ld.data), ld.align)
    if note_segments:
        for blob, offset in zip(notes, note_offsets):
            pos = _put_phdr(body, pos, is64, PT_NOTE, 4, 0 if zero_note_offset else offset,
                            0, 0, len(blob), len(blob), note_align)
    return bytes(body)


def _put_phdr(body: bytearray, pos: int, is64: bool, p_type: int, flags: int, offset: int,
              vaddr: int, paddr: int, filesz: int, memsz: int, align: int) -> int:
    if is64:
        struct.pack_into("<IIQQQQQQ", body, pos, p_type, flags, offset, vaddr, paddr, filesz,
                         memsz, align)
        return pos + 56
    struct.pack_into("<IIIIIIII", body, pos, p_type, offset, vaddr, paddr, filesz, memsz, flags,
                     align)
    return pos + 32


# --- compressed payloads --------------------------------------------------------------------------

COMPRESSIONS = ("gzip", "xz", "lzma", "bzip2", "lz4", "zstd")


def compress_payload(kind: str, data: bytes) -> bytes:
    """``data`` compressed as the kernel build does it, including the 4-byte size it appends."""
    size = struct.pack("<I", len(data) & 0xFFFFFFFF)
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) + size
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE) + size
    if kind == "bzip2":
        return bz2.compress(data) + size
    if kind == "lz4":
        import lz4.block
        out = struct.pack("<I", 0x184C2102)
        for start in range(0, max(len(data), 1), 8 << 20):
            block = lz4.block.compress(data[start:start + (8 << 20)], store_size=False)
            out += struct.pack("<I", len(block)) + block
        return out + size
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=3, write_content_size=False).compress(data) + size
    raise ValueError(f"unknown compression {kind!r}")


# --- bzImage --------------------------------------------------------------------------------------

#: Values written by build_bzimage unless overridden (Debian-like).
BZ_DEFAULTS = dict(
    root_flags=1, vid_mode=0xFFFF, type_of_loader=0, loadflags=0x01, code32_start=0x100000,
    heap_end_ptr=0x5000, initrd_addr_max=0x7FFFFFFF, kernel_alignment=0x200000,
    relocatable_kernel=1, min_alignment=21, xloadflags=0x7F, cmdline_size=0x7FF,
    hardware_subarch=0, pref_address=0x1000000, init_size=0x3F98000, handover_offset=0x1000,
    kernel_info_offset=0x2000, setup_data=0,
)
_BZ_FIELDS = {  # name: (offset, format)
    "setup_sects": (0x1F1, "B"), "root_flags": (0x1F2, "H"), "syssize": (0x1F4, "I"),
    "vid_mode": (0x1FA, "H"), "boot_flag": (0x1FE, "H"), "jump": (0x200, "H"),
    "header": (0x202, "I"), "version": (0x206, "H"), "kernel_version": (0x20E, "H"),
    "type_of_loader": (0x210, "B"), "loadflags": (0x211, "B"), "code32_start": (0x214, "I"),
    "heap_end_ptr": (0x224, "H"), "cmd_line_ptr": (0x228, "I"), "initrd_addr_max": (0x22C, "I"),
    "kernel_alignment": (0x230, "I"), "relocatable_kernel": (0x234, "B"),
    "min_alignment": (0x235, "B"), "xloadflags": (0x236, "H"), "cmdline_size": (0x238, "I"),
    "hardware_subarch": (0x23C, "I"), "payload_offset": (0x248, "I"),
    "payload_length": (0x24C, "I"), "setup_data": (0x250, "Q"), "pref_address": (0x258, "Q"),
    "init_size": (0x260, "I"), "handover_offset": (0x264, "I"),
    "kernel_info_offset": (0x268, "I"),
}
VERSION_STRING_OFFSET = 0x300  # file offset where build_bzimage puts the kernel version string


def build_bzimage(*, version: int = 0x020F, setup_sects: int = 4, payload: Optional[bytes] = None,
                  pm_prefix: bytes = b"\xf4" * 0x300, kernel_version: Optional[str] = "6.1.0-test",
                  pe_entry: Optional[int] = None, **fields: int) -> bytes:
    """A bzImage: boot sector + ``setup_sects`` sectors, then the protected-mode part.

    The PM part is ``pm_prefix`` (startup_32 / startup_64 stand-in) followed by ``payload``;
    payload_offset/length point at it.  ``pe_entry`` adds an MZ/PE32+ header (an EFI stub) whose
    AddressOfEntryPoint is that RVA.  Any header field can be overridden by keyword.
    """
    setup_size = ((setup_sects or 4) + 1) * 512
    image = bytearray(setup_size)
    pm = bytearray(pm_prefix)
    payload_offset = len(pm)
    if payload is not None:
        pm += payload
    pm += b"\0" * (_align(len(pm), 16) - len(pm))
    values = dict(BZ_DEFAULTS, setup_sects=setup_sects, boot_flag=0xAA55,
                  jump=0xEB | ((0x26C - 0x202) << 8), header=0x53726448, version=version,
                  syssize=len(pm) // 16, payload_offset=payload_offset,
                  payload_length=len(payload) if payload is not None else 0)
    if kernel_version is not None:
        text = kernel_version.encode() + b"\0"
        image[VERSION_STRING_OFFSET:VERSION_STRING_OFFSET + len(text)] = text
        values["kernel_version"] = VERSION_STRING_OFFSET - 0x200
    values.update(fields)
    for name, value in values.items():
        offset, fmt = _BZ_FIELDS[name]
        struct.pack_into("<" + fmt, image, offset, value)
    if pe_entry is not None:
        image[0:2] = b"MZ"
        header = pe_header(entry_rva=pe_entry, size_of_image=_align(setup_size + len(pm), 0x1000),
                           size_of_headers=setup_size,
                           sections=[(".text", setup_size, setup_size, len(pm))])
        struct.pack_into("<I", image, 0x3C, 0x40)
        image[0x40:0x40 + len(header)] = header
        assert 0x40 + len(header) <= 0x1F1, "PE header overlaps the setup header"
    return bytes(image + pm)


# --- PE32+ ----------------------------------------------------------------------------------------

def pe_header(*, entry_rva: int, machine: int = 0x8664, magic: int = 0x20B, subsystem: int = 10,
              image_base: int = 0, size_of_image: int = 0x3000, size_of_headers: int = 0x200,
              sections: Sequence[tuple[str, int, int, int]] = ()) -> bytes:
    """"PE\\0\\0" + COFF header + optional header + section table; sections are
    (name, rva, raw file offset, size)."""
    plus = magic == 0x20B
    opt = struct.pack("<HBBIIIII", magic, 2, 20, 0, 0, 0, entry_rva, 0x1000)
    if plus:
        opt += struct.pack("<Q", image_base)
    else:
        opt += struct.pack("<II", 0, image_base)
    opt += struct.pack("<IIHHHHHHIIIIHH", 0x1000, 0x200, 0, 0, 1, 0, 0, 0, 0, size_of_image,
                       size_of_headers, 0, subsystem, 0)
    opt += struct.pack("<QQQQ" if plus else "<IIII", 0, 0, 0, 0)
    opt += struct.pack("<II", 0, 16) + b"\0" * (16 * 8)
    coff = struct.pack("<HHIIIHH", machine, len(sections), 0, 0, 0, len(opt), 0x0206)
    table = b"".join(struct.pack("<8sIIIIIIHHI", name.encode(), size, rva, size, raw, 0, 0, 0, 0,
                                 0x60000020) for name, rva, raw, size in sections)
    return b"PE\0\0" + coff + opt + table


def build_pe(*, entry_rva: int = 0x1000, machine: int = 0x8664, magic: int = 0x20B,
             subsystem: int = 10, code: bytes = b"\xc3" * 0x200) -> bytes:
    """A minimal EFI application: headers in the first 0x200 bytes, one .text section at RVA 0x1000."""
    header = pe_header(entry_rva=entry_rva, machine=machine, magic=magic, subsystem=subsystem,
                       size_of_image=0x1000 + _align(len(code), 0x1000),
                       sections=[(".text", 0x1000, 0x200, len(code))])
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    head = bytes(dos) + header
    return head.ljust(0x200, b"\0") + code


def damaged_images(bases: dict, window: int, max_changes: int, values: Sequence[int]):
    """A hypothesis strategy: (name, bytes) of one of ``bases`` with 1..``max_changes`` bytes in its
    first ``window`` bytes flipped by one bit or set to one of ``values``, sometimes truncated."""
    from hypothesis import strategies as st

    @st.composite
    def damaged(draw):
        name = draw(st.sampled_from(sorted(bases)))
        data = bytearray(bases[name])
        span = min(len(data), window)
        for _ in range(draw(st.integers(1, max_changes))):
            position = draw(st.integers(0, span - 1))
            if draw(st.booleans()):
                data[position] ^= 1 << draw(st.integers(0, 7))
            else:
                data[position] = draw(st.sampled_from(list(values)))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        return name, bytes(data)

    return damaged()
