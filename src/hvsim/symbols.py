"""Code symbols of a kernel, to name the blocks a run executed: from a ``System.map``, the ELF's
``.symtab``, or (Debian's vmlinux has no ``.symtab``) the image's own kallsyms tables
(``hvsim.kallsyms``).

A symbol covers ``[address, next code symbol's address)``.  Block addresses come as the guest executed
them: virtual (Linux after it switched to its own page tables) or physical (entry code that runs
before paging, such as Linux's PVH entry ``pvh_start_xen`` at 0x1000850).  ``resolve`` maps a
physical address inside a PT_LOAD segment to that segment's virtual address first, so both name
the same function.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

from .core.errors import UsageError

PF_X = 1
# nm's letters for code: text (t/T) and weak symbols (w/W, in a System.map they are functions).
_CODE_TYPES = frozenset("tTwW")
# Symbols whose addresses tell one Linux build from another (arch/x86/kernel/head_64.S, init/main.c,
# init/version.c); linux_banner starts with this (init/version.c).
_ANCHORS = ("_text", "startup_64", "start_kernel", "linux_banner")
LINUX_BANNER_PREFIX = b"Linux version "
_MAP_LINE = re.compile(r"^([0-9a-fA-F]+) (\S) (\S+)")


class SymbolTable:
    def __init__(self, symbols: list[tuple[int, str]], source: str,
                 segments: list[tuple[int, int, int]] = ()):
        """``symbols``: (address, name) of code symbols; ``segments``: (paddr, memsz, vaddr)."""
        ordered = sorted(set(symbols))
        self.source = source
        self._starts = [a for a, _ in ordered]
        self._names = [n for _, n in ordered]
        self._segments = [s for s in segments if s[0] != s[2]]
        self.mismatch: str | None = None   # why a System.map seems to be another build's (from_system_map)

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def names(self) -> set[str]:
        return set(self._names)

    def resolve(self, address: int) -> str | None:
        """The name of the symbol holding ``address`` (virtual or, inside a PT_LOAD, physical)."""
        name = self._lookup(address)
        if name is not None:
            return name
        for paddr, size, vaddr in self._segments:
            if paddr <= address < paddr + size:
                return self._lookup(vaddr + address - paddr)
        return None

    def _lookup(self, address: int) -> str | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        return self._names[i]

    @classmethod
    def from_system_map(cls, path: str | Path, elf=None) -> "SymbolTable":
        """The code symbols of a ``System.map`` (``nm -n`` output); ``elf`` adds the physical
        aliases of its PT_LOAD segments."""
        try:
            text = Path(path).read_text(errors="replace")
        except OSError as exc:
            raise UsageError(f"--system-map {path}: {exc.strerror or exc}") from None
        symbols = []
        anchors: dict[str, int] = {}
        for line in text.splitlines():
            match = _MAP_LINE.match(line)
            if match and match.group(2) in _CODE_TYPES:
                symbols.append((int(match.group(1), 16), match.group(3)))
            if match and match.group(3) in _ANCHORS:
                anchors.setdefault(match.group(3), int(match.group(1), 16))
        if not symbols:
            raise UsageError(f"--system-map {path}: no code symbols (lines 'ADDRESS t|T NAME'); "
                             "is it a placeholder?")
        table = cls(symbols, f"System.map {path}", _segments(elf))
        table.mismatch = None if elf is None else map_mismatch(anchors, elf)
        return table

    @classmethod
    def from_elf(cls, elf, name: str) -> "SymbolTable | None":
        """The ``.symtab`` symbols inside executable PT_LOADs, or ``None`` when the ELF has none."""
        code = [(s.vaddr, s.vaddr + s.memsz) for s in elf.segments if s.flags & PF_X]
        code += [(s.paddr, s.paddr + s.memsz) for s in elf.segments if s.flags & PF_X]
        symbols = [(value, sym) for sym, value in elf.symbols.items()
                   if any(start <= value < end for start, end in code)]
        if not symbols:
            return None
        return cls(symbols, f"{name} .symtab", _segments(elf))

    @classmethod
    def from_kallsyms(cls, elf, name: str) -> "SymbolTable | None":
        """The code symbols of the image's kallsyms tables, or ``None`` when it has none."""
        from .kallsyms import read_kallsyms

        found = read_kallsyms(elf.segments)
        symbols = [(address, sym) for address, kind, sym in found or () if kind in _CODE_TYPES]
        if not symbols:
            return None
        return cls(symbols, f"{name} kallsyms", _segments(elf))

    @classmethod
    def from_image_elf(cls, elf, name: str) -> "SymbolTable | None":
        """The ELF's ``.symtab``, else its kallsyms tables, else ``None``."""
        return cls.from_elf(elf, name) or cls.from_kallsyms(elf, name)


def map_mismatch(anchors: dict[str, int], elf) -> str | None:
    """Why a System.map's ``anchors`` (name -> address of _ANCHORS it has) are not ``elf``'s build,
    or None: ``linux_banner`` must hold "Linux version " in the image, and the anchors must have
    the addresses the image's own symbols (.symtab, else kallsyms) give them; without those, the
    ELF's entry must be ``startup_64``'s (virtual or physical) address."""
    reasons = []
    banner = anchors.get("linux_banner")
    if banner is not None:
        found = _read(elf, banner, len(LINUX_BANNER_PREFIX))
        if found != LINUX_BANNER_PREFIX:
            reasons.append(f"its linux_banner {banner:#x} holds {found!r} in the image, "
                           f"not {LINUX_BANNER_PREFIX.decode()!r}")
    own = SymbolTable.from_image_elf(elf, "image")
    if own is not None:
        where = {}
        for start, name in zip(own._starts, own._names):
            where.setdefault(name, start)
        for name in _ANCHORS:
            if name in anchors and name in where and anchors[name] != where[name]:
                reasons.append(f"{name} is {anchors[name]:#x} in the map, {where[name]:#x} in the "
                               f"image's {own.source.split()[-1]}")
    elif "startup_64" in anchors:
        entry = elf.entry
        virtual = {entry} | {s.vaddr + entry - s.paddr for s in elf.segments
                             if s.paddr <= entry < s.paddr + s.memsz}
        if anchors["startup_64"] not in virtual:
            reasons.append(f"startup_64 is {anchors['startup_64']:#x} in the map; the image's entry "
                           f"is {entry:#x}")
    return "; ".join(reasons) or None


def _read(elf, address: int, size: int) -> bytes:
    """``size`` bytes of ``elf``'s file data at virtual ``address`` (fewer outside it)."""
    for s in elf.segments:
        if s.vaddr <= address < s.vaddr + len(s.data):
            return bytes(s.data[address - s.vaddr:address - s.vaddr + size])
    return b""


def _segments(elf) -> list[tuple[int, int, int]]:
    return [] if elf is None else [(s.paddr, s.memsz, s.vaddr) for s in elf.segments]


def image_elf(image):
    """The ELF whose addresses the kernel runs at: the image's, or a bzImage payload's (or None)."""
    if image.elf is not None:
        return image.elf
    if image.bzimage is not None and image.payload_error is None:
        return image.payload_elf()
    return None
