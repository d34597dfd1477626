"""ELF32/ELF64 x86 kernels: headers, loadable segments, sections, Xen notes, symbols.

The parser is our own (``struct`` over the file bytes) so that every malformed header becomes an
``ImageError`` naming the file, the header and the value; nothing else escapes ``parse_elf``.
Only little-endian x86 files are accepted: EM_386 and EM_X86_64, including ELF32 with EM_X86_64
(the ``elf32-x86-64`` objcopy output XTF and others boot through a 32-bit entry).

Sources: the System V gABI (``include/uapi/linux/elf.h`` for the numbers).
"""

from __future__ import annotations

import functools
import struct
from typing import Optional

import attrs

from hvsim.abi import xen_elfnote as xn
from hvsim.core.errors import ImageError
from hvsim.image.xen_notes import XenNotes, find_xen_notes

ELF_MAGIC = b"\x7fELF"
EI_NIDENT = 16
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
ET_EXEC, ET_DYN = 2, 3
EM_386, EM_X86_64 = 3, 62
MACHINE_NAMES = {EM_386: "EM_386", EM_X86_64: "EM_X86_64"}
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_NOBITS = 2, 3, 7, 8
SHN_UNDEF, SHN_XINDEX = 0, 0xFFFF
PN_XNUM = 0xFFFF
STT_SECTION, STT_FILE = 3, 4

#: Per class: (ELF header, program header, section header, symbol) struct layouts.
_LAYOUTS = {
    ELFCLASS32: {
        "ehdr": "<HHIIIIIHHHHHH",   # e_type .. e_shstrndx, after e_ident
        "phdr": "<IIIIIIII",        # type offset vaddr paddr filesz memsz flags align
        "shdr": "<IIIIIIIIII",      # name type flags addr offset size link info addralign entsize
        "sym": "<IIIBBH",           # name value size info other shndx
    },
    ELFCLASS64: {
        "ehdr": "<HHIQQQIHHHHHH",
        "phdr": "<IIQQQQQQ",        # type flags offset vaddr paddr filesz memsz align
        "shdr": "<IIQQQQIIQQ",
        "sym": "<IBBHQQ",           # name info other shndx value size
    },
}


@attrs.frozen
class Segment:
    """One PT_LOAD program header and the ``filesz`` bytes it loads (the rest up to memsz is zero)."""

    paddr: int
    vaddr: int
    filesz: int
    memsz: int
    flags: int
    align: int
    offset: int
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class ProgramHeader:
    type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int
    align: int


@attrs.frozen
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@attrs.frozen
class ElfImage:
    """A parsed x86 ELF kernel.  ``symbols`` is read from ``.symtab`` on first use."""

    elf_class: int                      # 32 or 64
    machine: int                        # e_machine: EM_386 or EM_X86_64
    elf_type: int                       # e_type: ET_EXEC or ET_DYN
    entry: int                          # e_entry
    segments: tuple[Segment, ...]       # PT_LOAD only, in file order
    program_headers: tuple[ProgramHeader, ...] = attrs.field(repr=False)
    sections: tuple[Section, ...] = attrs.field(repr=False)
    xen_notes: Optional[XenNotes]
    data: bytes = attrs.field(repr=False, eq=False)

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, str(self.machine))

    @property
    def phys_range(self) -> tuple[int, int]:
        """(lowest p_paddr, highest p_paddr + p_memsz) over the PT_LOAD segments."""
        return (min(s.paddr for s in self.segments),
                max(s.paddr + s.memsz for s in self.segments))

    @property
    def virt_range(self) -> tuple[int, int]:
        return (min(s.vaddr for s in self.segments),
                max(s.vaddr + s.memsz for s in self.segments))

    def section(self, name: str) -> Optional[Section]:
        return next((s for s in self.sections if s.name == name), None)

    @functools.cached_property
    def symbols(self) -> dict[str, int]:
        """Defined symbols of every SHT_SYMTAB (name -> st_value); first definition wins.

        A table or string table that runs past the end of the file is read as far as it goes.
        """
        found: dict[str, int] = {}
        fmt = _LAYOUTS[ELFCLASS64 if self.elf_class == 64 else ELFCLASS32]["sym"]
        size = struct.calcsize(fmt)
        for table in self.sections:
            if table.type != SHT_SYMTAB or table.link >= len(self.sections):
                continue
            strtab = self.sections[table.link]
            strings = self.data[strtab.offset:strtab.offset + strtab.size]
            raw = self.data[table.offset:table.offset + table.size]
            for start in range(0, len(raw) - size + 1, size):
                fields = struct.unpack_from(fmt, raw, start)
                if self.elf_class == 64:
                    name_off, info, _, shndx, value, _ = fields
                else:
                    name_off, value, _, info, _, shndx = fields
                if shndx == SHN_UNDEF or (info & 0xF) in (STT_SECTION, STT_FILE):
                    continue
                name = _cstring(strings, name_off)
                if name:
                    found.setdefault(name, value)
        return found

    def to_dict(self) -> dict:
        """JSON-able summary for ``hvsim inspect``."""
        return {
            "class": self.elf_class,
            "machine": self.machine_name,
            "entry": self.entry,
            "phys_range": list(self.phys_range),
            "segments": [{"paddr": s.paddr, "vaddr": s.vaddr, "filesz": s.filesz, "memsz": s.memsz,
                          "flags": _flag_text(s.flags), "align": s.align} for s in self.segments],
            "xen_notes": self.xen_notes.to_dict() if self.xen_notes else None,
        }


def _flag_text(flags: int) -> str:
    return "".join(c if flags & bit else "-" for c, bit in (("R", PF_R), ("W", PF_W), ("X", PF_X)))


def _cstring(blob: bytes, offset: int) -> str:
    if offset >= len(blob):
        return ""
    end = blob.find(b"\0", offset)
    return blob[offset:end if end >= 0 else len(blob)].decode("ascii", "replace")


def _table(data: bytes, where: str, what: str, offset: int, count: int, entsize: int,
           fmt: str) -> list[tuple]:
    """Unpack ``count`` entries of a header table, refusing wrong entry sizes and truncation."""
    if count == 0:
        return []
    if entsize != struct.calcsize(fmt):
        raise ImageError(f"{where}: {what} entry size is {entsize}, expected {struct.calcsize(fmt)}")
    if offset + count * entsize > len(data):
        raise ImageError(f"{where}: {what} table (offset {offset:#x}, {count} x {entsize} bytes) "
                         f"runs past the end of the file ({len(data):#x} bytes)")
    return [struct.unpack_from(fmt, data, offset + i * entsize) for i in range(count)]


def parse_elf(data: bytes, where: str) -> ElfImage:
    """Parse an x86 ELF kernel; ``where`` names it in errors.  Raises only ImageError."""
    if len(data) < EI_NIDENT or not data.startswith(ELF_MAGIC):
        raise ImageError(f"{where}: not an ELF file (no \\x7fELF magic)")
    elf_class, byte_order = data[4], data[5]
    if elf_class not in _LAYOUTS:
        raise ImageError(f"{where}: ELF class (e_ident[EI_CLASS]) is {elf_class}, expected 1 or 2")
    if byte_order != ELFDATA2LSB:
        raise ImageError(f"{where}: ELF data encoding (e_ident[EI_DATA]) is {byte_order}, "
                         "only little-endian (1) is supported")
    layout = _LAYOUTS[elf_class]
    bits = 64 if elf_class == ELFCLASS64 else 32
    ehdr_size = EI_NIDENT + struct.calcsize(layout["ehdr"])
    if len(data) < ehdr_size:
        raise ImageError(f"{where}: truncated ELF{bits} header ({len(data)} of {ehdr_size} bytes)")
    (e_type, e_machine, _, e_entry, e_phoff, e_shoff, _, _, e_phentsize, e_phnum,
     e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from(layout["ehdr"], data, EI_NIDENT)
    if e_machine not in MACHINE_NAMES:
        raise ImageError(f"{where}: ELF e_machine is {e_machine}, not x86 "
                         f"(expected {EM_386} EM_386 or {EM_X86_64} EM_X86_64)")
    if e_type not in (ET_EXEC, ET_DYN):
        raise ImageError(f"{where}: ELF e_type is {e_type}, not an executable (ET_EXEC/ET_DYN)")

    # Section headers first: extended numbering keeps the real counts in section 0.
    shdr_rows: list[tuple] = []
    if e_shoff:
        count = e_shnum
        if count == 0:
            first = _table(data, where, "section header", e_shoff, 1, e_shentsize, layout["shdr"])
            count = first[0][5]  # sh_size of section 0
        if count > len(data) // max(e_shentsize, 1):
            raise ImageError(f"{where}: ELF e_shnum {count} cannot fit in a {len(data)}-byte file")
        shdr_rows = _table(data, where, "section header", e_shoff, count, e_shentsize, layout["shdr"])
    if e_phnum == PN_XNUM and shdr_rows:
        e_phnum = shdr_rows[0][7]  # sh_info of section 0
    if e_phnum == 0:
        raise ImageError(f"{where}: ELF has no program headers (e_phnum 0)")
    phdr_rows = _table(data, where, "program header", e_phoff, e_phnum, e_phentsize, layout["phdr"])

    sections = _sections(data, where, shdr_rows, e_shstrndx)
    program_headers = tuple(_program_header(row, elf_class) for row in phdr_rows)
    segments = []
    for index, ph in enumerate(program_headers):
        if ph.type != PT_LOAD:
            continue
        if ph.offset + ph.filesz > len(data):
            raise ImageError(f"{where}: PT_LOAD #{index} (offset {ph.offset:#x}, filesz "
                             f"{ph.filesz:#x}) runs past the end of the file ({len(data):#x} bytes)")
        if ph.filesz > ph.memsz:
            raise ImageError(f"{where}: PT_LOAD #{index} has p_filesz {ph.filesz:#x} > "
                             f"p_memsz {ph.memsz:#x}")
        segments.append(Segment(paddr=ph.paddr, vaddr=ph.vaddr, filesz=ph.filesz, memsz=ph.memsz,
                                flags=ph.flags, align=ph.align, offset=ph.offset,
                                data=data[ph.offset:ph.offset + ph.filesz]))
    if not segments:
        raise ImageError(f"{where}: ELF has no PT_LOAD segments, nothing to load")

    guest = next((s for s in sections if s.name == xn.XEN_GUEST_SECTION), None)
    xen_notes = find_xen_notes(
        data, word_size=bits // 8, where=where,
        note_segments=[(ph.offset, ph.filesz) for ph in program_headers if ph.type == PT_NOTE],
        note_sections=[(s.offset, s.size) for s in sections[1:] if s.type == SHT_NOTE],
        xen_guest=None if guest is None else data[guest.offset:guest.offset + guest.size],
    )
    return ElfImage(elf_class=bits, machine=e_machine, elf_type=e_type, entry=e_entry,
                    segments=tuple(segments), program_headers=program_headers,
                    sections=sections, xen_notes=xen_notes, data=data)


def _program_header(row: tuple, elf_class: int) -> ProgramHeader:
    if elf_class == ELFCLASS64:
        p_type, flags, offset, vaddr, paddr, filesz, memsz, align = row
    else:
        p_type, offset, vaddr, paddr, filesz, memsz, flags, align = row
    return ProgramHeader(type=p_type, offset=offset, vaddr=vaddr, paddr=paddr, filesz=filesz,
                         memsz=memsz, flags=flags, align=align)


def _sections(data: bytes, where: str, rows: list[tuple], shstrndx: int) -> tuple[Section, ...]:
    if shstrndx == SHN_XINDEX and rows:
        shstrndx = rows[0][6]  # sh_link of section 0
    names = b""
    if rows and shstrndx != SHN_UNDEF:
        if shstrndx >= len(rows):
            raise ImageError(f"{where}: ELF e_shstrndx {shstrndx} is not a section "
                             f"(there are {len(rows)})")
        _, _, _, _, offset, size, *_ = rows[shstrndx]
        if offset + size > len(data):
            raise ImageError(f"{where}: section name table (offset {offset:#x}, size {size:#x}) "
                             f"runs past the end of the file ({len(data):#x} bytes)")
        names = data[offset:offset + size]
    sections = []
    for name, s_type, flags, addr, offset, size, link, _, _, entsize in rows:
        sections.append(Section(name=_cstring(names, name), type=s_type, flags=flags, addr=addr,
                                offset=offset, size=size, link=link, entsize=entsize))
    return tuple(sections)
