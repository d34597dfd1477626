"""Xen ELF notes, found and read the way Xen's libelf does (``libelf-dominfo.c`` elf_xen_parse).

Search order, stopping at the first container kind that yields at least one Xen note:

1. every PT_NOTE program header, except those with p_offset == 0 (a binutils bug workaround);
2. every SHT_NOTE section;
3. the legacy ``__xen_guest`` section (a ``KEY=VALUE,KEY=VALUE`` string).

Notes are walked at 4-byte alignment whatever p_align says; only notes whose name is ``"Xen"`` count.
Numeric descriptors of 1, 2, 4 or 8 bytes are little-endian; other sizes read as 0. libelf caps the
total number of notes; past the cap, or when a note runs past its container, the image is refused.
"""

from __future__ import annotations

import string
import struct
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import attrs

from hvsim.abi import xen_elfnote as xn
from hvsim.core.errors import ImageError

NoteValue = Union[int, str, bytes, tuple[int, ...]]

SOURCE_PT_NOTE = "PT_NOTE"
SOURCE_SHT_NOTE = "SHT_NOTE"
SOURCE_XEN_GUEST = "__xen_guest"


@attrs.frozen
class FeatureFlag:
    """One entry of the FEATURES string: ``bit`` is None when libelf does not know the name."""

    name: str
    required: bool
    bit: Optional[int]


@attrs.frozen
class XenNotes:
    """The Xen notes of one ELF image.

    ``raw`` maps the note number (``xen_elfnote.XEN_ELFNOTE_*``) to its value: ``str`` for string
    notes, ``int`` for numeric ones, a tuple of ints for PHYS32_RELOC and L1_MFN_VALID, ``bytes``
    for notes libelf does not interpret.  A repeated note keeps its last value, like libelf.
    Legacy ``__xen_guest`` keys are stored under the note they stand for (VIRT_ENTRY as ENTRY,
    HYPERCALL_PAGE already turned into an address, BSD_SYMTAB's presence as ``"yes"``).
    """

    raw: Mapping[int, NoteValue]
    source: str
    feature_strings: tuple[str, ...] = ()

    def _num(self, note: int) -> Optional[int]:
        value = self.raw.get(note)
        return value if isinstance(value, int) else None

    def _str(self, note: int) -> Optional[str]:
        value = self.raw.get(note)
        return value if isinstance(value, str) else None

    entry = property(lambda self: self._num(xn.XEN_ELFNOTE_ENTRY))
    hypercall_page = property(lambda self: self._num(xn.XEN_ELFNOTE_HYPERCALL_PAGE))
    virt_base = property(lambda self: self._num(xn.XEN_ELFNOTE_VIRT_BASE))
    paddr_offset = property(lambda self: self._num(xn.XEN_ELFNOTE_PADDR_OFFSET))
    hv_start_low = property(lambda self: self._num(xn.XEN_ELFNOTE_HV_START_LOW))
    init_p2m = property(lambda self: self._num(xn.XEN_ELFNOTE_INIT_P2M))
    mod_start_pfn = property(lambda self: self._num(xn.XEN_ELFNOTE_MOD_START_PFN))
    suspend_cancel = property(lambda self: self._num(xn.XEN_ELFNOTE_SUSPEND_CANCEL))
    xen_version = property(lambda self: self._str(xn.XEN_ELFNOTE_XEN_VERSION))
    guest_os = property(lambda self: self._str(xn.XEN_ELFNOTE_GUEST_OS))
    guest_version = property(lambda self: self._str(xn.XEN_ELFNOTE_GUEST_VERSION))
    loader = property(lambda self: self._str(xn.XEN_ELFNOTE_LOADER))
    pae_mode = property(lambda self: self._str(xn.XEN_ELFNOTE_PAE_MODE))

    @property
    def phys32_entry(self) -> Optional[int]:
        """PVH entry: the low 32 bits of a 4- or 8-byte PHYS32_ENTRY (libelf stores it in a u32)."""
        value = self._num(xn.XEN_ELFNOTE_PHYS32_ENTRY)
        return None if value is None else value & 0xFFFFFFFF

    @property
    def phys32_reloc(self) -> Optional[tuple[int, int, int]]:
        """(align, min start, max last byte) with elfnote.h defaults for missing values; None if absent."""
        value = self.raw.get(xn.XEN_ELFNOTE_PHYS32_RELOC)
        if not isinstance(value, tuple):
            return None
        defaults = (xn.PHYS32_RELOC_DEFAULT_ALIGN, xn.PHYS32_RELOC_DEFAULT_MIN,
                    xn.PHYS32_RELOC_DEFAULT_MAX)
        return tuple(value[i] if i < len(value) else defaults[i] for i in range(3))  # type: ignore

    @property
    def bsd_symtab(self) -> bool:
        return self._str(xn.XEN_ELFNOTE_BSD_SYMTAB) == "yes"

    @property
    def pae(self) -> str:
        """libelf's reading of PAE_MODE: "no", "yes", "extended-cr3" or "bimodal"."""
        mode = self.pae_mode or ""
        if self.source == SOURCE_XEN_GUEST:
            if mode == "yes[extended-cr3]":
                return "extended-cr3"
            return "yes" if mode.startswith("yes") else "no"
        if "bimodal" in mode:
            return "bimodal"
        return "extended-cr3" if mode == "yes" else "no"

    @property
    def features(self) -> tuple[FeatureFlag, ...]:
        """Every name in the FEATURES string(s), in order; a leading "!" means required."""
        flags = []
        for text in self.feature_strings:
            for item in text.split("|"):
                if not item:
                    continue
                required = item.startswith("!")
                name = item[1:] if required else item
                flags.append(FeatureFlag(name, required, xn.LIBELF_FEATURES.get(name)))
        return tuple(flags)

    @property
    def required_features(self) -> int:
        """Bitmap of the known features marked "!"."""
        return _bitmap(f.bit for f in self.features if f.required and f.bit is not None)

    @property
    def supported_features(self) -> int:
        """Bitmap: SUPPORTED_FEATURES OR-ed with every known name of the FEATURES string."""
        words = self._num(xn.XEN_ELFNOTE_SUPPORTED_FEATURES) or 0
        return words | _bitmap(f.bit for f in self.features if f.bit is not None)

    @property
    def unknown_required(self) -> tuple[str, ...]:
        """Required feature names libelf does not know; libelf refuses such an image."""
        return tuple(f.name for f in self.features if f.required and f.bit is None)

    @property
    def is_pvh(self) -> bool:
        """PHYS32_ENTRY alone is enough for Xen to accept the image as PVH."""
        return xn.XEN_ELFNOTE_PHYS32_ENTRY in self.raw

    @property
    def is_pv(self) -> bool:
        """A PV kernel: legacy string, or any note a PV loader reads (not only PVH/dump notes)."""
        if self.source == SOURCE_XEN_GUEST:
            return True
        ignored = xn.PVH_ONLY_NOTES | xn.DUMP_NOTES | {xn.XEN_ELFNOTE_INFO}
        return any(note not in ignored for note in self.raw)

    @property
    def effective_virt_base(self) -> int:
        """VIRT_BASE, or 0 when unset (libelf elf_xen_addr_calc_check)."""
        return self.virt_base or 0

    @property
    def effective_paddr_offset(self) -> int:
        """PADDR_OFFSET, or its default: 0 with ELF notes, VIRT_BASE with the legacy string."""
        if self.paddr_offset is not None:
            return self.paddr_offset
        return self.effective_virt_base if self.source == SOURCE_XEN_GUEST else 0

    def pv_problems(self) -> list[str]:
        """Why libelf's elf_xen_note_check would refuse this as a PV kernel (empty if it would not)."""
        problems = []
        if not ((self.loader or "").startswith("generic") or (self.guest_os or "").startswith("linux")):
            problems.append(f"LOADER is {self.loader!r} and GUEST_OS is {self.guest_os!r} "
                            "(need LOADER 'generic' or GUEST_OS 'linux')")
        if not (self.xen_version or "").startswith("xen-3.0"):
            problems.append(f"XEN_VERSION is {self.xen_version!r} (need 'xen-3.0')")
        for name in self.unknown_required:
            problems.append(f"FEATURES requires unknown feature {name!r}")
        return problems

    def to_dict(self) -> dict:
        """JSON-able summary: notes by name, features, and the PV/PVH verdicts."""
        notes = {}
        for note, value in self.raw.items():
            if isinstance(value, bytes):
                value = value.hex()
            elif isinstance(value, tuple):
                value = list(value)
            notes[xn.note_name(note)] = value
        return {
            "source": self.source,
            "notes": notes,
            "features": [("!" if f.required else "") + f.name for f in self.features],
            "supported_features": self.supported_features,
            "unknown_required_features": list(self.unknown_required),
            "pv": self.is_pv,
            "pvh": self.is_pvh,
        }


def _bitmap(bits) -> int:
    value = 0
    for bit in bits:
        value |= 1 << bit
    return value


# --- reading notes ---------------------------------------------------------------------------------

def _align4(value: int) -> int:
    return (value + 3) & ~3


def _numeric(desc: bytes) -> int:
    """libelf-tools.c elf_note_numeric: 1/2/4/8-byte little-endian, anything else is 0."""
    return int.from_bytes(desc, "little") if len(desc) in (1, 2, 4, 8) else 0


def _note_value(note: int, desc: bytes, word_size: int) -> NoteValue:
    if note in xn.STRING_NOTES:
        return desc.split(b"\0", 1)[0].decode("ascii", "replace")
    if note in xn.NUMERIC_NOTES:
        return _numeric(desc)
    if note == xn.XEN_ELFNOTE_SUPPORTED_FEATURES:
        # elf_note_numeric_array(note, 4, i) for the XENFEAT_NR_SUBMAPS words; a size that is not a
        # multiple of 4 reads as 0.
        if len(desc) % 4:
            return 0
        words = struct.unpack_from(f"<{min(len(desc) // 4, xn.XENFEAT_NR_SUBMAPS)}I", desc)
        return sum(word << (32 * index) for index, word in enumerate(words))
    if note == xn.XEN_ELFNOTE_PHYS32_RELOC:
        return struct.unpack_from(f"<{min(len(desc) // 4, 3)}I", desc)
    if note == xn.XEN_ELFNOTE_L1_MFN_VALID:
        fmt = "Q" if word_size == 8 else "I"
        return struct.unpack_from(f"<{len(desc) // word_size}{fmt}", desc)
    return bytes(desc)


class _NoteWalk:
    """Walks note containers, sharing libelf's total note count across all of them."""

    def __init__(self, data: bytes, word_size: int, where: str):
        self.data = data
        self.word_size = word_size
        self.where = where
        self.count = 0

    def walk(self, start: int, end: int, what: str, raw: dict, features: list) -> int:
        """Read the Xen notes in data[start:end] into ``raw``; return how many there were."""
        data = self.data
        if end > len(data) or start > end:
            raise ImageError(f"{self.where}: {what} (offset {start:#x}, size {end - start:#x}) "
                             f"runs past the end of the file ({len(data):#x} bytes)")
        found = 0
        pos = start
        while pos < end:
            if self.count >= xn.ELF_MAX_TOTAL_NOTE_COUNT:
                raise ImageError(f"{self.where}: more than {xn.ELF_MAX_TOTAL_NOTE_COUNT} ELF notes "
                                 "(libelf's limit)")
            self.count += 1
            if end - pos < 12:
                raise ImageError(f"{self.where}: {what}: truncated note header at offset {pos:#x}")
            namesz, descsz, note = struct.unpack_from("<III", data, pos)
            desc_start = pos + 12 + _align4(namesz)
            desc_end = desc_start + descsz
            if desc_end > end:
                raise ImageError(f"{self.where}: {what}: note at offset {pos:#x} (namesz {namesz}, "
                                 f"descsz {descsz}) runs past the end of its container at {end:#x}")
            name = data[pos + 12:pos + 12 + namesz]
            pos = desc_start + _align4(descsz)
            if namesz < 4 or name.split(b"\0", 1)[0] != xn.XEN_NOTE_OWNER:
                continue
            value = _note_value(note, data[desc_start:desc_end], self.word_size)
            raw[note] = value
            if note == xn.XEN_ELFNOTE_FEATURES:
                features.append(value)
            found += 1
        return found


def find_xen_notes(data: bytes, *, word_size: int, where: str,
                   note_segments: Sequence[tuple[int, int]],
                   note_sections: Sequence[tuple[int, int]],
                   xen_guest: Optional[bytes]) -> Optional[XenNotes]:
    """Look for Xen notes in the containers of one ELF file; None when it has none.

    ``note_segments`` and ``note_sections`` are (file offset, size) of each PT_NOTE header and each
    SHT_NOTE section, in file order; ``xen_guest`` is the content of a ``__xen_guest`` section.
    """
    walker = _NoteWalk(data, word_size, where)
    for source, containers in ((SOURCE_PT_NOTE, note_segments), (SOURCE_SHT_NOTE, note_sections)):
        raw: dict[int, NoteValue] = {}
        features: list[str] = []
        found = 0
        for index, (offset, size) in enumerate(containers):
            if source == SOURCE_PT_NOTE and offset == 0:
                continue  # libelf: some binutils leave p_offset 0 in note segments
            found += walker.walk(offset, offset + size, f"{source} #{index}", raw, features)
        if found:
            return XenNotes(raw=raw, source=source, feature_strings=tuple(features))
    if xen_guest is not None:
        return parse_xen_guest(xen_guest)
    return None


# --- legacy __xen_guest -----------------------------------------------------------------------------

def strtoull(text: str) -> int:
    """C strtoull(text, NULL, 0): optional sign, 0x hex / 0 octal / decimal, stop at junk, 0 if none."""
    s = text.lstrip(" \t\n\v\f\r")
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        s = s[1:]
    if s[:2].lower() == "0x" and s[2:3] and s[2] in string.hexdigits:
        base, s, allowed = 16, s[2:], string.hexdigits
    elif s[:1] == "0":
        base, allowed = 8, string.octdigits
    else:
        base, allowed = 10, string.digits
    digits = ""
    for char in s:
        if char not in allowed:
            break
        digits += char
    value = int(digits, base) if digits else 0
    if value >= 1 << 64:
        return (1 << 64) - 1  # ERANGE: ULLONG_MAX
    return (-value) % (1 << 64) if negative else value


def parse_xen_guest(section: bytes) -> XenNotes:
    """The legacy ``__xen_guest`` string (libelf-dominfo.c elf_xen_parse_guest_info).

    HYPERCALL_PAGE is a page number added to the VIRT_BASE seen *before* it in the string (0 if
    none yet; libelf would add its "unset" marker instead, a bug no real kernel triggers).
    """
    text = section.split(b"\0", 1)[0].decode("ascii", "replace")
    raw: dict[int, NoteValue] = {}
    features: list[str] = []
    for item in text.split(","):
        if not item:
            continue
        key, _, value = item.partition("=")
        key, value = key[:xn.XEN_GUEST_MAX_KEY], value[:xn.XEN_GUEST_MAX_VALUE]
        note = xn.LEGACY_KEYS.get(key)
        if note is None:
            continue
        if key == "HYPERCALL_PAGE":
            base = raw.get(xn.XEN_ELFNOTE_VIRT_BASE, 0)
            raw[note] = ((strtoull(value) << 12) + base) % (1 << 64)  # type: ignore[operator]
        elif key in xn.LEGACY_NUMERIC_KEYS:
            raw[note] = strtoull(value)
        elif key == "BSD_SYMTAB":
            raw[note] = "yes"
        else:
            raw[note] = value
            if key == "FEATURES":
                features.append(value)
    return XenNotes(raw=raw, source=SOURCE_XEN_GUEST, feature_strings=tuple(features))
