"""Kernel image recognition: ``load_image`` reads a file and says what it is and where it can start.

    from hvsim.image import load_image
    img = load_image("vmlinuz")          # or load_image(raw_bytes, name="test")
    img.format                           # "elf32" | "elf64" | "bzimage" | "pe32+"
    img.header_entries                   # entries read from headers only (cheap)
    img.entries                          # + entries of a bzImage's compressed vmlinux (lazy)
    img.payload_elf()                    # the decompressed vmlinux of a bzImage (cached)

Detection order: ELF magic; "HdrS" at 0x202 with the 0xAA55 boot flag (bzImage, whose PE header is
also summarised when it carries an EFI stub); MZ + PE32+ header.  Anything else, and any missing,
empty, unreadable or malformed file, is an ``ImageError``; no other exception leaves ``load_image``.

Laziness: ``load_image`` never decompresses.  A bzImage's payload is decompressed the first time
``entries``, ``payload_elf()``, ``payload_error`` or ``describe()`` needs it (about a second for a
distribution kernel's 8 MB XZ payload), and the result, success or failure, is cached.

``BootEntry.address`` means different things per kind:
- "elf", "xen_pv": virtual address (e_entry / XEN_ELFNOTE_ENTRY);
- "xen_pvh": 32-bit physical address (PHYS32_ENTRY);
- "linux64", "efi_handover64": offset from the start of the loaded protected-mode part;
- "efi_pe": RVA from the PE image base.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional, Union

import attrs

from hvsim.abi import linux_boot as lb
from hvsim.core.errors import ImageError
from hvsim.image.bzimage import BzImage, looks_like_bzimage, parse_bzimage
from hvsim.image.elf import ELF_MAGIC, ElfImage, Segment, parse_elf
from hvsim.image.pe import PeInfo, check_efi_x64, efi_entry, looks_like_pe, parse_pe
from hvsim.image.xen_notes import SOURCE_XEN_GUEST, FeatureFlag, XenNotes

__all__ = [
    "BootEntry", "BzImage", "ElfImage", "FeatureFlag", "KernelImage", "PeInfo", "Segment",
    "XenNotes", "elf_entries", "load_image",
]

FORMATS = ("elf32", "elf64", "bzimage", "pe32+")
ENTRY_KINDS = ("elf", "linux64", "xen_pv", "xen_pvh", "efi_pe", "efi_handover64")
PAYLOAD_PREFIX = "payload ELF "


@attrs.frozen
class BootEntry:
    """One way to start the image: ``kind`` (see ENTRY_KINDS), where, in which CPU mode, and why."""

    kind: str
    address: int
    mode: str      # "64", "32" or "pe"
    source: str    # human text: which header field gave the address
    in_payload: bool = False  # address belongs to ``payload_elf()``, not to the file itself

    def to_dict(self) -> dict:
        return {"kind": self.kind, "address": self.address, "mode": self.mode,
                "source": self.source, "in_payload": self.in_payload}


@attrs.frozen
class KernelImage:
    """A recognised kernel file.  Exactly one of ``elf``/``bzimage``/``pe`` describes the format;
    a bzImage with an EFI stub has both ``bzimage`` and ``pe``."""

    name: str
    data: bytes = attrs.field(repr=False, eq=False)
    format: str
    elf: Optional[ElfImage] = None
    bzimage: Optional[BzImage] = None
    pe: Optional[PeInfo] = None
    header_entries: tuple[BootEntry, ...] = ()

    @functools.cached_property
    def _payload(self) -> Union[ElfImage, ImageError, None]:
        if self.bzimage is None:
            return None
        where = f"{self.name}: payload"
        try:
            raw = self.bzimage.decompress_payload(self.name)
            if not raw.startswith(ELF_MAGIC):
                raise ImageError(f"{where}: decompressed {self.bzimage.compression} data is not "
                                 f"an ELF file (starts with {raw[:4].hex()})")
            return parse_elf(raw, f"{where} ELF")
        except ImageError as exc:
            return exc
        except Exception as exc:  # a bug, not a bad file: still only ImageError leaves
            return ImageError(f"{where}: internal error ({type(exc).__name__}: {exc})")

    def payload_elf(self) -> ElfImage:
        """The ELF ``vmlinux`` decompressed from a bzImage payload (cached).

        ImageError if this is not a bzImage or its payload is absent, corrupt or not ELF.
        """
        result = self._payload
        if result is None:
            raise ImageError(f"{self.name}: {self.format} image has no compressed payload")
        if isinstance(result, ImageError):
            raise ImageError(str(result))
        return result

    @property
    def payload_error(self) -> Optional[str]:
        """Why ``payload_elf()`` fails, or None (decompresses a bzImage payload on first use)."""
        return str(self._payload) if isinstance(self._payload, ImageError) else None

    @functools.cached_property
    def entries(self) -> tuple[BootEntry, ...]:
        """``header_entries`` plus, for a bzImage, the Xen entries of its payload ELF.

        Payload entries have ``in_payload`` set: booting them means loading ``payload_elf()``'s
        segments, not the bzImage.  The payload's own e_entry is left out.  Never raises: a payload that cannot be read adds nothing (see ``payload_error``).
        """
        payload = self._payload
        if not isinstance(payload, ElfImage):
            return self.header_entries
        extra = tuple(attrs.evolve(e, in_payload=True)
                      for e in elf_entries(payload, PAYLOAD_PREFIX) if e.kind != "elf")
        return self.header_entries + extra

    def entry(self, kind: str) -> Optional[BootEntry]:
        """The first entry of ``kind``, or None."""
        return next((e for e in self.entries if e.kind == kind), None)

    def describe(self, decompress: bool = True) -> dict:
        """JSON-able summary (``hvsim inspect --json``); ``decompress=False`` skips the payload."""
        summary: dict = {"name": self.name, "format": self.format, "size": len(self.data)}
        entries = self.entries if decompress or self.bzimage is None else self.header_entries
        summary["entries"] = [e.to_dict() for e in entries]
        if self.elf is not None:
            summary["elf"] = self.elf.to_dict()
        if self.bzimage is not None:
            summary["bzimage"] = self.bzimage.to_dict()
            if decompress:
                payload = self._payload
                summary["payload_elf"] = (payload.to_dict() if isinstance(payload, ElfImage)
                                          else None)
                summary["payload_error"] = self.payload_error
        if self.pe is not None:
            summary["pe"] = self.pe.to_dict()
        return summary


def elf_entries(elf: ElfImage, prefix: str = "") -> tuple[BootEntry, ...]:
    """Entries of an ELF: e_entry, Xen PV (ENTRY note, else e_entry) and PVH (PHYS32_ENTRY).

    ``mode`` of "elf" and "xen_pv" follows the ELF class; ``prefix`` starts each ``source``.
    """
    bits = str(elf.elf_class)
    found = [BootEntry("elf", elf.entry, bits, f"{prefix}ELF e_entry")]
    notes = elf.xen_notes
    if notes is None:
        return tuple(found)
    if notes.is_pv:
        if notes.entry is not None:
            how = ("__xen_guest VIRT_ENTRY" if notes.source == SOURCE_XEN_GUEST
                   else "XEN_ELFNOTE_ENTRY")
            found.append(BootEntry("xen_pv", notes.entry, bits, f"{prefix}{how}"))
        else:
            found.append(BootEntry("xen_pv", elf.entry, bits,
                                   f"{prefix}ELF e_entry (Xen notes without XEN_ELFNOTE_ENTRY)"))
    if notes.phys32_entry is not None:
        found.append(BootEntry("xen_pvh", notes.phys32_entry, "32",
                               f"{prefix}XEN_ELFNOTE_PHYS32_ENTRY"))
    return tuple(found)


def _bzimage_entries(bz: BzImage, pe: Optional[PeInfo]) -> tuple[BootEntry, ...]:
    hdr = bz.header
    found = []
    if hdr.has_xloadflag(lb.XLF_KERNEL_64):
        found.append(BootEntry("linux64", lb.KERNEL_64_ENTRY_OFFSET, "64",
                               "bzImage 64-bit entry (+0x200)"))
    pe_entry = efi_entry(pe)
    if pe_entry is not None:
        found.append(BootEntry("efi_pe", pe_entry, "pe", "PE AddressOfEntryPoint"))
    if hdr.has_xloadflag(lb.XLF_EFI_HANDOVER_64) and hdr.handover_offset is not None:
        found.append(BootEntry("efi_handover64", hdr.handover_offset + lb.EFI_HANDOVER_64_EXTRA,
                               "64", "EFI handover_offset+0x200"))
    return tuple(found)


def _read(source: Union[str, os.PathLike]) -> bytes:
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not a kernel image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_image(source: Union[str, os.PathLike, bytes, bytearray, memoryview],
               name: Optional[str] = None) -> KernelImage:
    """Read and recognise a kernel image from a path or from bytes.  Raises only ImageError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        if os.path.isdir(source):
            raise ImageError(f"{name}: is a directory, not a kernel image")
        data = _read(source)
    else:
        raise ImageError(f"load_image: expected a path or bytes, got {type(source).__name__}")
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        return _recognise(data, name)
    except ImageError:
        raise
    except Exception as exc:  # a bug, not a bad file: still only ImageError leaves
        raise ImageError(f"{name}: internal error while parsing "
                         f"({type(exc).__name__}: {exc})") from None


def _recognise(data: bytes, name: str) -> KernelImage:
    if data.startswith(ELF_MAGIC):
        elf = parse_elf(data, name)
        return KernelImage(name=name, data=data, format=f"elf{elf.elf_class}", elf=elf,
                           header_entries=elf_entries(elf))
    if looks_like_bzimage(data):
        bz = parse_bzimage(data, name)
        pe = None
        if looks_like_pe(data):
            try:
                pe = parse_pe(data, name)
            except ImageError:
                pe = None  # a damaged EFI stub header does not stop the bzImage boot paths
        return KernelImage(name=name, data=data, format="bzimage", bzimage=bz, pe=pe,
                           header_entries=_bzimage_entries(bz, pe))
    if looks_like_pe(data):
        pe = parse_pe(data, name)
        check_efi_x64(pe, name)
        return KernelImage(name=name, data=data, format="pe32+", pe=pe,
                           header_entries=(BootEntry("efi_pe", pe.entry_rva, "pe",
                                                     "PE AddressOfEntryPoint"),))
    raise ImageError(f"{name}: not a kernel image (no ELF, bzImage or PE32+ header)")
