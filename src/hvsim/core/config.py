"""The machine a run simulates, independent of any boot ABI.

One ``MachineConfig`` is expressed by every environment in its own boot-info format (E820 in
``boot_params``, ``hvm_memmap_table_entry``, EFI memory descriptors, ``XENMEM_memory_map``); that is
what makes cross-environment comparison meaningful.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import attrs

from .errors import UsageError

MiB = 1 << 20
GiB = 1 << 30

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": MiB, "k": 1 << 10, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """Parse a memory size: ``512M``, ``4G``, ``6GiB``, ``1048576k``; a bare number means MiB (like QEMU's -m)."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise UsageError(f"memory size {text!r}: expected a number with an optional K/M/G/T suffix")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def format_size(value: int) -> str:
    """``value`` bytes in the largest unit that divides it: ``1 TiB``, ``6 GiB``, ``516 KiB``,
    ``4097 bytes`` (hex alongside when not a whole KiB)."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes ({value:#x})"


def _check_memory(instance, attribute, value: int) -> None:
    if value < 16 * MiB:
        raise UsageError(f"memory {format_size(value)}: at least 16 MiB is needed")
    if value > 64 * GiB:
        raise UsageError(f"memory {format_size(value)}: at most 64 GiB is supported")
    if value % (1 << 12):
        raise UsageError(f"memory {format_size(value)}: must be a multiple of 4 KiB")


def _check_smp(instance, attribute, value: int) -> None:
    if not 1 <= value <= 255:
        raise UsageError(f"smp {value}: between 1 and 255 vCPUs are supported")


def _check_cmdline(instance, attribute, value: str) -> None:
    if "\0" in value:
        raise UsageError("command line contains a NUL character")
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise UsageError(f"command line: character {value[exc.start]!r} cannot be encoded as bytes") from None


def _check_timeout(instance, attribute, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise UsageError(f"timeout {value!r}: must be a positive number of seconds (or none)")


def _check_budget(instance, attribute, value: int | None) -> None:
    if value is not None and not 1 <= value < (1 << 64):
        raise UsageError(f"max-instructions {value}: must be between 1 and 2**64-1")


def _check_keys(instance, attribute, value: str) -> None:
    from .devices.keyboard import parse_keys

    try:
        parse_keys(value)
    except ValueError as exc:
        raise UsageError(f"--keys: {exc}") from None


TLB_FILLERS = ("native", "engine")


@attrs.frozen
class MachineConfig:
    """RAM, command line, modules, vCPUs and budgets of one simulated machine.

    ``initrd`` is a path; its bytes are read when a run starts (``initrd_bytes``).
    ``timeout`` is wall-clock seconds for the guest's execution; ``max_instructions`` counts guest
    instructions exactly, at about half the speed (counted per translated block, and per instruction
    only in the block where the budget ends).
    ``keys`` are typed on the machine's keyboard (``--keys`` syntax, ``devices.keyboard.parse_keys``;
    a firmware may take them first, as EFI's ConIn does); ``vga_png`` is where the VGA text screen
    is saved as a PNG when the run ends.
    ``tlb`` says who fills the engine's TLB: ``native``, hvsim's walker, which keeps stores to
    identity-mapped code pages fast and hands over to the engine's walker where it cannot decide
    (user mode, for one); or ``engine``, Unicorn's own walker throughout.  The guest sees the same
    either way (the same console, faults and guest time); only the speed differs.
    """

    memory: int = attrs.field(default=512 * MiB, converter=parse_size, validator=_check_memory)
    cmdline: str = attrs.field(default="", validator=_check_cmdline)
    initrd: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    smp: int = attrs.field(default=1, validator=_check_smp)
    acpi: bool = True
    timeout: float | None = attrs.field(default=60.0, validator=_check_timeout)
    max_instructions: int | None = attrs.field(default=None, validator=_check_budget)
    keys: str = attrs.field(default="", validator=_check_keys)
    vga_png: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    tlb: str = attrs.field(default="native", validator=attrs.validators.in_(TLB_FILLERS))

    def cmdline_bytes(self) -> bytes:
        """The command line as the guest gets it: UTF-8, with bytes that came undecodable from the
        OS (``surrogateescape``, as Python decodes argv) restored as they were."""
        return self.cmdline.encode("utf-8", "surrogateescape")

    def initrd_bytes(self) -> bytes | None:
        if self.initrd is None:
            return None
        try:
            return self.initrd.read_bytes()
        except OSError as exc:
            raise UsageError(f"initrd {self.initrd}: {exc.strerror or exc}") from None

    def to_dict(self) -> dict:
        return {
            "memory": self.memory,
            "cmdline": self.cmdline,
            "initrd": str(self.initrd) if self.initrd else None,
            "smp": self.smp,
            "acpi": self.acpi,
            "timeout": self.timeout,
            "max_instructions": self.max_instructions,
            "keys": self.keys,
            "vga_png": str(self.vga_png) if self.vga_png else None,
            "tlb": self.tlb,
        }
