"""Guest-physical layout of a PC-like machine derived from a ``MachineConfig``.

RAM below 640 KiB (less a 1 KiB EBDA), the legacy VGA/BIOS hole, RAM from 1 MiB up to the 32-bit PCI
hole (which starts at 3 GiB when RAM does not fit below it), and the rest of RAM above 4 GiB, as
QEMU's ``pc`` machine lays it out.  The BIOS area 0xE0000-0xFFFFF holds the ACPI tables.

Memory types are the E820 numbers (arch/x86/include/asm/e820/types.h), the neutral vocabulary every
environment's map is normalised to.
"""

from __future__ import annotations

import enum

import attrs

from .config import MachineConfig

EBDA_START = 0x9FC00
LOW_RAM_END = 0xA0000          # end of conventional memory
BIOS_AREA = 0xE0000            # 0xE0000-0xFFFFF: firmware tables (RSDP scan range)
HIGH_MEMORY = 0x100000         # 1 MiB
PCI_HOLE_START = 0xC0000000    # 3 GiB: start of the 32-bit MMIO hole when RAM would reach it
FOUR_GIB = 1 << 32


class MemoryType(enum.IntEnum):
    """E820 memory types (asm/e820/types.h)."""

    RAM = 1
    RESERVED = 2
    ACPI = 3
    NVS = 4
    UNUSABLE = 5
    PMEM = 7


@attrs.frozen
class MemoryRange:
    start: int
    size: int
    type: MemoryType

    @property
    def end(self) -> int:
        return self.start + self.size

    def to_tuple(self) -> tuple[int, int, int]:
        return (self.start, self.size, int(self.type))


@attrs.frozen
class PhysicalLayout:
    """What exists at which guest-physical address."""

    memory_map: tuple[MemoryRange, ...]
    backed: tuple[tuple[int, int], ...]   # (start, size) ranges that are host-backed RAM in the engine

    @classmethod
    def for_config(cls, config: MachineConfig) -> "PhysicalLayout":
        total = config.memory
        low = min(total, PCI_HOLE_START)
        high = total - low
        ranges = [
            MemoryRange(0, EBDA_START, MemoryType.RAM),
            MemoryRange(EBDA_START, LOW_RAM_END - EBDA_START, MemoryType.RESERVED),
            MemoryRange(BIOS_AREA, HIGH_MEMORY - BIOS_AREA, MemoryType.RESERVED),
            MemoryRange(HIGH_MEMORY, low - HIGH_MEMORY, MemoryType.RAM),
        ]
        backed = [(0, low)]
        if high:
            ranges.append(MemoryRange(FOUR_GIB, high, MemoryType.RAM))
            backed.append((FOUR_GIB, high))
        return cls(tuple(ranges), tuple(backed))

    def ram(self) -> tuple[MemoryRange, ...]:
        return tuple(r for r in self.memory_map if r.type == MemoryType.RAM)

    def is_ram(self, address: int, size: int = 1) -> bool:
        """True when [address, address+size) lies inside one usable RAM range."""
        return any(r.start <= address and address + size <= r.end for r in self.ram())

    def top_of_ram(self) -> int:
        return max(r.end for r in self.ram())
