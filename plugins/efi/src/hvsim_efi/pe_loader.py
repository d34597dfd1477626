"""Loading a PE32+ EFI image as firmware does (edk2 BasePeCoffLib): checks, placement, relocation.

- refused: not PE32+ x86-64, a subsystem that is not an EFI application or driver, a section whose
  raw data runs past the end of the file, sections overlapping each other or the headers, a section
  or the entry point outside SizeOfImage, a section alignment that is not a power of two;
- the headers (SizeOfHeaders) at the image base, each section at its RVA with VirtualSize beyond
  SizeOfRawData zero-filled; a section alignment below a page is accepted (RVA = file offset images);
- placed at a multiple of SectionAlignment when it is above a page (``PeLayout.alignment``: edk2
  aligns the allocation so, and xen.efi's 2 MiB alignment needs it);
- base relocations (DIR64, HIGHLOW, ABSOLUTE padding) applied when the image lands away from its
  ImageBase; an image marked IMAGE_FILE_RELOCS_STRIPPED must get its ImageBase or is refused.
  The relocation directory is checked whole when the image is parsed (block sizes of at least 8
  bytes and a whole number of 16-bit entries, x64 types only, every fixup inside SizeOfImage), so
  a corrupt one is a refusal before any memory is allocated;
- the image is built once, in guest memory (``place``): never as a host copy of SizeOfImage bytes,
  so a small file declaring a huge SizeOfImage costs guest pages, not host memory.
"""

from __future__ import annotations

import struct
from typing import Callable

import attrs

from hvsim.core.errors import LoadError
from hvsim.image.pe import (
    IMAGE_FILE_MACHINE_AMD64,
    IMAGE_SUBSYSTEM_EFI_APPLICATION,
    IMAGE_SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER,
    IMAGE_SUBSYSTEM_EFI_RUNTIME_DRIVER,
    SUBSYSTEM_NAMES,
)

EFI_SUBSYSTEMS = (IMAGE_SUBSYSTEM_EFI_APPLICATION, IMAGE_SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER,
                  IMAGE_SUBSYSTEM_EFI_RUNTIME_DRIVER)
IMAGE_FILE_RELOCS_STRIPPED = 0x0001
IMAGE_REL_BASED_ABSOLUTE, IMAGE_REL_BASED_HIGHLOW, IMAGE_REL_BASED_DIR64 = 0, 3, 10
PAGE = 0x1000
RELOC_BLOCK_HEADER = 8                  # IMAGE_BASE_RELOCATION: VirtualAddress (u32), SizeOfBlock (u32)
RELOC_WIDTHS = {IMAGE_REL_BASED_DIR64: 8, IMAGE_REL_BASED_HIGHLOW: 4}
ZERO_CHUNK = 1 << 20                    # zero fill is written this much at a time


class PeRefused(LoadError):
    """The image is not one this firmware loads; ``unsupported``: a valid PE of a machine or
    subsystem it does not run (EFI_UNSUPPORTED), otherwise a corrupt one (EFI_LOAD_ERROR)."""

    def __init__(self, message: str, unsupported: bool = False):
        super().__init__(message)
        self.unsupported = unsupported


@attrs.frozen
class Section:
    name: str
    rva: int
    virtual_size: int
    data: bytes


@attrs.frozen
class PeLayout:
    """What loading needs, checked."""

    name: str
    image_base: int
    size_of_image: int
    headers: bytes
    sections: tuple[Section, ...]
    entry_rva: int
    subsystem: int
    relocations: bytes | None        # the .reloc directory's bytes, None without one
    relocs_stripped: bool
    section_alignment: int = PAGE

    @property
    def pages(self) -> int:
        return -(-self.size_of_image // PAGE)

    @property
    def alignment(self) -> int:
        """Where the image may start: a page, or SectionAlignment when larger."""
        return max(PAGE, self.section_alignment)

    @property
    def relocatable(self) -> bool:
        return not self.relocs_stripped


def parse(data: bytes, name: str) -> PeLayout:
    """Check ``data`` as an EFI image; ``LoadError`` names the first thing a firmware would refuse."""
    import pefile

    def refuse(why: str, unsupported: bool = False):
        raise PeRefused(f"{name}: not loadable as an EFI image: {why}", unsupported)

    try:
        pe = pefile.PE(data=data, fast_load=True)
    except Exception as exc:  # pefile.PEFormatError and friends
        refuse(f"unreadable PE header ({exc})")
    opt, hdr = pe.OPTIONAL_HEADER, pe.FILE_HEADER
    if opt.Magic != 0x20B:
        refuse(f"optional header magic {opt.Magic:#x} is not PE32+ (0x20b)")
    if hdr.Machine != IMAGE_FILE_MACHINE_AMD64:
        refuse(f"machine {hdr.Machine:#06x} is not x86-64 ({IMAGE_FILE_MACHINE_AMD64:#06x})", True)
    if opt.Subsystem not in EFI_SUBSYSTEMS:
        refuse(f"subsystem {opt.Subsystem} is not an EFI application or driver "
               f"({', '.join(f'{n} {SUBSYSTEM_NAMES[n]}' for n in EFI_SUBSYSTEMS)})", True)
    align = opt.SectionAlignment
    if align == 0 or align & (align - 1):
        refuse(f"section alignment {align:#x} is not a power of two")
    size_of_image = opt.SizeOfImage
    headers_end = opt.SizeOfHeaders
    if headers_end > len(data) or headers_end > size_of_image:
        refuse(f"SizeOfHeaders {headers_end:#x} exceeds the file ({len(data):#x}) or SizeOfImage")
    sections = []
    for s in pe.sections:
        sname = s.Name.rstrip(b"\0").decode("ascii", "replace")
        vsize = s.Misc_VirtualSize or s.SizeOfRawData
        raw = min(s.SizeOfRawData, vsize)
        if s.SizeOfRawData and s.PointerToRawData + raw > len(data):
            refuse(f"section {sname!r} raw data {s.PointerToRawData:#x}+{raw:#x} is truncated "
                   f"(the file ends at {len(data):#x})")
        if s.VirtualAddress < headers_end:
            refuse(f"section {sname!r} at RVA {s.VirtualAddress:#x} overlaps the headers (end {headers_end:#x})")
        if s.VirtualAddress + vsize > size_of_image:
            refuse(f"section {sname!r} RVA {s.VirtualAddress:#x}+{vsize:#x} lies beyond SizeOfImage {size_of_image:#x}")
        sections.append(Section(sname, s.VirtualAddress, vsize, data[s.PointerToRawData:s.PointerToRawData + raw]))
    ordered = sorted(sections, key=lambda s: s.rva)
    for a, b in zip(ordered, ordered[1:]):
        if a.rva + a.virtual_size > b.rva:
            refuse(f"sections {a.name!r} ({a.rva:#x}+{a.virtual_size:#x}) and {b.name!r} (RVA {b.rva:#x}) overlap")
    if not 0 < opt.AddressOfEntryPoint < size_of_image:
        refuse(f"entry point RVA {opt.AddressOfEntryPoint:#x} lies outside the image ({size_of_image:#x})")
    relocations = None
    directories = opt.DATA_DIRECTORY
    if len(directories) > 5 and directories[5].Size:
        rva, size = directories[5].VirtualAddress, directories[5].Size
        relocations = _image_bytes(ordered, rva, size)
        if relocations is None:
            refuse(f"base relocation directory {rva:#x}+{size:#x} lies in no section's raw data")
        why = _check_relocations(relocations, size_of_image)
        if why:
            refuse(why)
    return PeLayout(name=name, image_base=opt.ImageBase, size_of_image=size_of_image,
                    headers=data[:headers_end], sections=tuple(ordered), entry_rva=opt.AddressOfEntryPoint,
                    subsystem=opt.Subsystem, relocations=relocations,
                    relocs_stripped=bool(hdr.Characteristics & IMAGE_FILE_RELOCS_STRIPPED),
                    section_alignment=align)


def _image_bytes(sections, rva: int, size: int) -> bytes | None:
    for s in sections:
        if s.rva <= rva and rva + size <= s.rva + len(s.data):
            return s.data[rva - s.rva: rva - s.rva + size]
    return None


def _relocation_entries(blob: bytes):
    """(kind, rva) of every entry of a base relocation directory already checked by
    ``_check_relocations``."""
    offset = 0
    while offset + RELOC_BLOCK_HEADER <= len(blob):
        page_rva, block_size = struct.unpack_from("<II", blob, offset)
        for (entry,) in struct.iter_unpack("<H", blob[offset + RELOC_BLOCK_HEADER:offset + block_size]):
            yield entry >> 12, page_rva + (entry & 0xFFF)
        offset += block_size


def _check_relocations(blob: bytes, size_of_image: int) -> str | None:
    """Why edk2 would refuse this base relocation directory, or None: a block whose size is below
    its header, not a whole number of entries or past the directory; an entry type that is not an
    x64 one; a fixup outside the image.  Trailing bytes too short for a block header are ignored."""
    offset = 0
    while offset + RELOC_BLOCK_HEADER <= len(blob):
        block_size = struct.unpack_from("<I", blob, offset + 4)[0]
        if block_size < RELOC_BLOCK_HEADER or block_size % 2 or offset + block_size > len(blob):
            return (f"base relocation block at offset {offset:#x} has SizeOfBlock {block_size:#x} "
                    f"(needs at least {RELOC_BLOCK_HEADER}, an even size, and to end inside the "
                    f"{len(blob):#x}-byte directory)")
        offset += block_size
    for kind, where in _relocation_entries(blob):
        if kind == IMAGE_REL_BASED_ABSOLUTE:
            continue
        width = RELOC_WIDTHS.get(kind)
        if width is None:
            return f"base relocation type {kind} at RVA {where:#x} is not an x64 type"
        if where + width > size_of_image:
            return f"base relocation at RVA {where:#x} lies outside the image ({size_of_image:#x})"
    return None


def place(layout: PeLayout, base: int, read: Callable[[int, int], bytes],
          write: Callable[[int, bytes], None]) -> None:
    """Build the image in guest memory at ``base`` through ``read``/``write`` (guest-physical
    accessors): headers, sections, zero fill up to the page-rounded SizeOfImage, then the
    relocations for ``base``.  Only the file's own bytes are held on the host."""
    end = layout.pages * PAGE
    pieces = [(0, layout.headers)] + [(s.rva, s.data) for s in layout.sections]
    cursor = 0
    for rva, data in sorted(pieces, key=lambda p: p[0]):
        _zero(write, base, cursor, rva)
        if data:
            write(base + rva, data)
        cursor = max(cursor, rva + len(data))
    _zero(write, base, cursor, end)
    delta = (base - layout.image_base) & 0xFFFF_FFFF_FFFF_FFFF
    if not delta or not layout.relocations:
        return
    for kind, where in _relocation_entries(layout.relocations):
        width = RELOC_WIDTHS.get(kind)
        if width is None:
            continue        # ABSOLUTE padding (other types were refused by parse)
        fmt = "<Q" if width == 8 else "<I"
        (value,) = struct.unpack(fmt, read(base + where, width))
        write(base + where, struct.pack(fmt, (value + delta) & ((1 << (8 * width)) - 1)))


def _zero(write: Callable[[int, bytes], None], base: int, start: int, end: int) -> None:
    chunk = bytes(min(ZERO_CHUNK, max(end - start, 0)))
    while start < end:
        n = min(len(chunk), end - start)
        write(base + start, chunk[:n] if n < len(chunk) else chunk)
        start += n
