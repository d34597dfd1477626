"""PE/COFF images (EFI applications, and the EFI stub of a Linux bzImage): detection and summary.

Only what recognising and describing the image needs; placing sections and relocating is the EFI
loader's job.  Parsing uses ``pefile`` (fast_load); its exceptions become ImageError.

Sources: Microsoft PE/COFF specification (IMAGE_FILE_MACHINE_*, optional-header magic,
IMAGE_SUBSYSTEM_EFI_*, data directory 5 = base relocations).
"""

from __future__ import annotations

import struct
from typing import Optional

import attrs

from hvsim.abi import linux_boot as lb
from hvsim.core.errors import ImageError

MZ_MAGIC = b"MZ"
PE_SIGNATURE = b"PE\0\0"
E_LFANEW_OFFSET = 0x3C
PE32_MAGIC = 0x10B
PE32_PLUS_MAGIC = 0x20B
IMAGE_FILE_MACHINE_I386 = 0x014C
IMAGE_FILE_MACHINE_AMD64 = 0x8664
MACHINE_NAMES = {IMAGE_FILE_MACHINE_I386: "i386", IMAGE_FILE_MACHINE_AMD64: "x86_64",
                 0xAA64: "arm64", 0x01C4: "armv7", 0x5064: "riscv64"}
IMAGE_SUBSYSTEM_EFI_APPLICATION = 10
IMAGE_SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER = 11
IMAGE_SUBSYSTEM_EFI_RUNTIME_DRIVER = 12
SUBSYSTEM_NAMES = {IMAGE_SUBSYSTEM_EFI_APPLICATION: "EFI application",
                   IMAGE_SUBSYSTEM_EFI_BOOT_SERVICE_DRIVER: "EFI boot service driver",
                   IMAGE_SUBSYSTEM_EFI_RUNTIME_DRIVER: "EFI runtime driver"}
IMAGE_DIRECTORY_ENTRY_BASERELOC = 5


@attrs.frozen
class PeSection:
    name: str
    virtual_address: int
    virtual_size: int
    raw_offset: int
    raw_size: int
    characteristics: int


@attrs.frozen
class PeInfo:
    """Summary of a PE image's headers."""

    magic: int                   # optional-header magic: 0x20b PE32+, 0x10b PE32
    machine: int                 # IMAGE_FILE_MACHINE_*
    subsystem: int               # IMAGE_SUBSYSTEM_*
    entry_rva: int               # AddressOfEntryPoint
    image_base: int
    size_of_image: int
    size_of_headers: int
    section_alignment: int
    file_alignment: int
    has_relocations: bool        # base relocation directory is non-empty
    is_bzimage: bool             # also a Linux bzImage ("HdrS" at 0x202): the EFI stub
    sections: tuple[PeSection, ...]

    @property
    def is_pe32_plus(self) -> bool:
        return self.magic == PE32_PLUS_MAGIC

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, f"{self.machine:#06x}")

    def to_dict(self) -> dict:
        return {
            "kind": "PE32+" if self.is_pe32_plus else "PE32",
            "machine": self.machine_name,
            "subsystem": SUBSYSTEM_NAMES.get(self.subsystem, str(self.subsystem)),
            "entry_rva": self.entry_rva,
            "image_base": self.image_base,
            "size_of_image": self.size_of_image,
            "has_relocations": self.has_relocations,
            "is_bzimage": self.is_bzimage,
            "sections": [{"name": s.name, "rva": s.virtual_address, "size": s.virtual_size,
                          "raw_offset": s.raw_offset, "raw_size": s.raw_size}
                         for s in self.sections],
        }


def looks_like_pe(data: bytes) -> bool:
    """MZ header whose e_lfanew points at a "PE\\0\\0" signature inside the file."""
    if len(data) < E_LFANEW_OFFSET + 4 or not data.startswith(MZ_MAGIC):
        return False
    lfanew = struct.unpack_from("<I", data, E_LFANEW_OFFSET)[0]
    return data[lfanew:lfanew + 4] == PE_SIGNATURE


def parse_pe(data: bytes, where: str) -> PeInfo:
    """Summarise a PE image; ImageError if pefile cannot read its headers."""
    import pefile

    try:
        pe = pefile.PE(data=data, fast_load=True)
        try:
            return _summarise(pe, data, where)
        finally:
            pe.close()
    except ImageError:
        raise
    except Exception as exc:  # pefile.PEFormatError, struct errors, bad section tables ...
        raise ImageError(f"{where}: unreadable PE header ({type(exc).__name__}: {exc})") from None


def _check_extent(pe, data: bytes, where: str) -> None:
    """pefile reads truncated headers leniently; refuse headers or sections cut off by EOF."""
    lfanew = pe.DOS_HEADER.e_lfanew
    headers_end = (lfanew + 4 + 20 + pe.FILE_HEADER.SizeOfOptionalHeader
                   + 40 * pe.FILE_HEADER.NumberOfSections)
    if headers_end > len(data):
        raise ImageError(f"{where}: truncated PE headers (need {headers_end:#x} bytes, "
                         f"file has {len(data):#x})")
    for section in pe.sections:
        end = section.PointerToRawData + section.SizeOfRawData
        if section.SizeOfRawData and end > len(data):
            name = section.Name.rstrip(b"\0").decode("ascii", "replace")
            raise ImageError(f"{where}: PE section {name!r} (file offset "
                             f"{section.PointerToRawData:#x}, size {section.SizeOfRawData:#x}) "
                             f"runs past the end of the file ({len(data):#x} bytes)")


def _summarise(pe, data: bytes, where: str) -> PeInfo:
    _check_extent(pe, data, where)
    opt = pe.OPTIONAL_HEADER
    directories = getattr(opt, "DATA_DIRECTORY", [])
    reloc = (directories[IMAGE_DIRECTORY_ENTRY_BASERELOC]
             if len(directories) > IMAGE_DIRECTORY_ENTRY_BASERELOC else None)
    sections = tuple(
        PeSection(name=s.Name.rstrip(b"\0").decode("ascii", "replace"),
                  virtual_address=s.VirtualAddress, virtual_size=s.Misc_VirtualSize,
                  raw_offset=s.PointerToRawData, raw_size=s.SizeOfRawData,
                  characteristics=s.Characteristics)
        for s in pe.sections)
    is_bzimage = (len(data) >= lb.HEADER_MAGIC_OFFSET + 4
                  and struct.unpack_from("<I", data, lb.HEADER_MAGIC_OFFSET)[0] == lb.HEADER_MAGIC)
    return PeInfo(magic=opt.Magic, machine=pe.FILE_HEADER.Machine, subsystem=opt.Subsystem,
                  entry_rva=opt.AddressOfEntryPoint, image_base=opt.ImageBase,
                  size_of_image=opt.SizeOfImage, size_of_headers=opt.SizeOfHeaders,
                  section_alignment=opt.SectionAlignment, file_alignment=opt.FileAlignment,
                  has_relocations=bool(reloc is not None and reloc.Size),
                  is_bzimage=is_bzimage, sections=sections)


def check_efi_x64(info: PeInfo, where: str) -> None:
    """Refuse PE files that are not x86-64 PE32+ (what an x64 EFI firmware can start)."""
    if not info.is_pe32_plus:
        raise ImageError(f"{where}: PE optional header magic is {info.magic:#x} (PE32); "
                         "only PE32+ (0x20b) x86-64 EFI images are supported")
    if info.machine != IMAGE_FILE_MACHINE_AMD64:
        raise ImageError(f"{where}: PE32+ machine is {info.machine_name} ({info.machine:#06x}), "
                         f"not x86_64 ({IMAGE_FILE_MACHINE_AMD64:#06x})")


def efi_entry(info: Optional[PeInfo]) -> Optional[int]:
    """The EFI entry RVA of an x86-64 PE32+ image, else None."""
    if info is None or not info.is_pe32_plus or info.machine != IMAGE_FILE_MACHINE_AMD64:
        return None
    return info.entry_rva
