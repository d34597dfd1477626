"""Loading a PE32+ EFI image as firmware does (edk2 BasePeCoffLib): checks, placement, relocation.

- refused: not PE32+ x86-64, a subsystem that is not an EFI application or driver, a section whose
  raw data runs past the end of the file, sections overlapping each other or the headers, a section
  or the entry point outside SizeOfImage, a section alignment that is not a power of two;
- the headers (SizeOfHeaders) at the image base, each section at its RVA with VirtualSize beyond
  SizeOfRawData zero-filled; a section alignment below a page is accepted (RVA = file offset images);
- base relocations (DIR64, HIGHLOW, ABSOLUTE padding) applied when the image lands away from its
  ImageBase; an image marked IMAGE_FILE_RELOCS_STRIPPED must get its ImageBase or is refused.
"""

from __future__ import annotations

import struct

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

    @property
    def pages(self) -> int:
        return -(-self.size_of_image // PAGE)

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
    return PeLayout(name=name, image_base=opt.ImageBase, size_of_image=size_of_image,
                    headers=data[:headers_end], sections=tuple(ordered), entry_rva=opt.AddressOfEntryPoint,
                    subsystem=opt.Subsystem, relocations=relocations,
                    relocs_stripped=bool(hdr.Characteristics & IMAGE_FILE_RELOCS_STRIPPED))


def _image_bytes(sections, rva: int, size: int) -> bytes | None:
    for s in sections:
        if s.rva <= rva and rva + size <= s.rva + len(s.data):
            return s.data[rva - s.rva: rva - s.rva + size]
    return None


def image_bytes(layout: PeLayout, base: int) -> bytes:
    """The image as it lies in memory at ``base``: headers, sections, zero fill, relocations."""
    image = bytearray(layout.pages * PAGE)
    image[:len(layout.headers)] = layout.headers
    for s in layout.sections:
        image[s.rva:s.rva + len(s.data)] = s.data
    delta = (base - layout.image_base) & 0xFFFF_FFFF_FFFF_FFFF
    if delta and layout.relocations:
        _relocate(image, layout, delta)
    return bytes(image)


def _relocate(image: bytearray, layout: PeLayout, delta: int) -> None:
    blob, offset = layout.relocations, 0
    while offset + 8 <= len(blob):
        page_rva, block_size = struct.unpack_from("<II", blob, offset)
        if block_size < 8 or offset + block_size > len(blob):
            raise LoadError(f"{layout.name}: base relocation block at {offset:#x} has size {block_size:#x}")
        for (entry,) in struct.iter_unpack("<H", blob[offset + 8:offset + block_size]):
            kind, where = entry >> 12, page_rva + (entry & 0xFFF)
            if kind == IMAGE_REL_BASED_ABSOLUTE:
                continue
            width = {IMAGE_REL_BASED_DIR64: 8, IMAGE_REL_BASED_HIGHLOW: 4}.get(kind)
            if width is None:
                raise LoadError(f"{layout.name}: base relocation type {kind} at RVA {where:#x} is not an x64 type")
            if where + width > len(image):
                raise LoadError(f"{layout.name}: base relocation at RVA {where:#x} lies outside the image")
            fmt = "<Q" if width == 8 else "<I"
            (value,) = struct.unpack_from(fmt, image, where)
            struct.pack_into(fmt, image, where, (value + delta) & ((1 << (8 * width)) - 1))
        offset += block_size
