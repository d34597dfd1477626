"""The firmware's memory map: page-granular typed regions, allocation, and GetMemoryMap's view.

Built from the core's ``PhysicalLayout`` (the same RAM every environment sees): E820 RAM becomes
ConventionalMemory (rounded inward to pages), E820 reserved becomes EfiReservedMemoryType (rounded
outward).  Below 1 MiB the map is OVMF's, not the BIOS PC's: all of [0, 0xA0000) is
ConventionalMemory (a UEFI firmware keeps no EBDA) and 0xA0000-0xFFFFF is not described at all (the
VGA window and the BIOS area are no memory a UEFI OS may use or needs told about), as Debian's
ovmf gives it under QEMU (tests/test_firmware_diff.py).  Allocation follows edk2's
policy: top-down from the highest free range that fits (below 4 GiB unless the caller's MaxAddress
says otherwise for AllocateMaxAddress), page-aligned.  Every change bumps the map key, which
ExitBootServices checks.

Memory type bins, as edk2's DXE core keeps them (MdeModulePkg/Core/Dxe/Mem/Page.c, from the
platform's memory type information): at start-up a range is set aside below 4 GiB for each of the
types the OS must keep or may reuse only after reading it (ACPI NVS, ACPI reclaim, reserved,
runtime services code and data).  Allocations of such a type come from its bin first; others come
from below the bins first; when the preferred place is full, from anywhere.  GetMemoryMap reports the
free pages of a bin as the bin's type, so the OS sees the same ranges of these types from boot to
boot (what hibernation needs).  The sizes are OVMF's as measured (Debian's ovmf 2022.11 under QEMU
7.2, GetMemoryMap as Linux's efi=debug prints it); the order is OVMF's too: NVS highest, then
ACPI reclaim, reserved, runtime code and runtime data below one another.
"""

from __future__ import annotations

import struct

import attrs

from hvsim.abi import efi
from hvsim.core.layout import FOUR_GIB, HIGH_MEMORY, LOW_RAM_END, MemoryType

from .calls import EfiError

PAGE = efi.PAGE_SIZE
ATTR_RAM = efi.MEMORY_UC | efi.MEMORY_WC | efi.MEMORY_WT | efi.MEMORY_WB
DESCRIPTOR_SIZE = 48          # edk2 reports 40 + 8 so callers must stride by DescriptorSize
# (memory type, pages), top-down in this order (see the module docstring)
MEMORY_TYPE_BINS = ((efi.ACPI_MEMORY_NVS, 0x80), (efi.ACPI_RECLAIM_MEMORY, 0x12), (efi.RESERVED_MEMORY, 0x80),
                    (efi.RUNTIME_SERVICES_CODE, 0x100), (efi.RUNTIME_SERVICES_DATA, 0x100))


@attrs.define
class Region:
    start: int
    end: int
    type: int
    attribute: int
    by_allocate_pages: bool = False    # AllocatePages gave it out, so FreePages may take it back

    @property
    def pages(self) -> int:
        return (self.end - self.start) // PAGE


def valid_allocation_type(memory_type: int) -> bool:
    """Types AllocatePages/AllocatePool accept (UEFI 2.10 §7.2): the defined types other than
    Conventional, Persistent and Unaccepted, plus the OEM and OS ranges."""
    if memory_type >= efi.OEM_TYPE_START:
        return memory_type <= 0xFFFF_FFFF
    return memory_type < efi.MAX_MEMORY_TYPE and memory_type not in (
        efi.CONVENTIONAL_MEMORY, efi.PERSISTENT_MEMORY, efi.UNACCEPTED_MEMORY)


def _attribute(memory_type: int) -> int:
    if memory_type in (efi.RUNTIME_SERVICES_CODE, efi.RUNTIME_SERVICES_DATA):
        return ATTR_RAM | efi.MEMORY_RUNTIME
    if memory_type == efi.RESERVED_MEMORY:
        return 0
    return ATTR_RAM


class MemoryMap:
    def __init__(self, regions: list[Region]):
        self.regions = sorted(regions, key=lambda r: r.start)
        self.key = 1
        self.bins: dict[int, tuple[int, int]] = {}     # memory type -> [start, end) set aside for it

    def set_aside_bins(self, bins=MEMORY_TYPE_BINS) -> None:
        """Set aside each type's bin, top-down below 4 GiB, before any allocation; a bin that
        does not fit is left out (its type then allocates as any other)."""
        for memory_type, pages in bins:
            start = self.find_free(pages, min(self.bins_floor(), FOUR_GIB) - 1)
            if start is not None:
                self.bins[memory_type] = (start, start + pages * PAGE)

    def bins_floor(self) -> int:
        """The lowest address of any bin: where the other types' preferred memory ends."""
        return min((start for start, _ in self.bins.values()), default=FOUR_GIB)

    @classmethod
    def from_layout(cls, layout) -> "MemoryMap":
        regions = [Region(0, LOW_RAM_END, efi.CONVENTIONAL_MEMORY, ATTR_RAM)]     # below 1 MiB: OVMF's
        for r in layout.memory_map:
            if r.start < HIGH_MEMORY:
                continue
            if r.type == MemoryType.RAM:
                start, end = -(-r.start // PAGE) * PAGE, r.end // PAGE * PAGE
                kind = efi.CONVENTIONAL_MEMORY
            else:
                start, end = r.start // PAGE * PAGE, -(-r.end // PAGE) * PAGE
                kind = {MemoryType.ACPI: efi.ACPI_RECLAIM_MEMORY, MemoryType.NVS: efi.ACPI_MEMORY_NVS,
                        MemoryType.UNUSABLE: efi.UNUSABLE_MEMORY}.get(r.type, efi.RESERVED_MEMORY)
            if end > start:
                regions.append(Region(start, end, kind, _attribute(kind)))
        merged: list[Region] = []
        for region in sorted(regions, key=lambda r: r.start):
            if merged and merged[-1].end > region.start:   # rounding met: the reserved range wins
                merged[-1].end = region.start
            merged.append(region)
        return cls([r for r in merged if r.end > r.start])

    # -- queries ------------------------------------------------------------------------------------
    def type_at(self, address: int) -> int | None:
        for r in self.regions:
            if r.start <= address < r.end:
                return r.type
        return None

    def is_type(self, start: int, end: int, memory_type: int) -> bool:
        cursor = start
        for r in self.regions:
            if r.end <= cursor or r.start > cursor:
                continue
            if r.type != memory_type:
                return False
            cursor = r.end
            if cursor >= end:
                return True
        return cursor >= end

    def _reported(self) -> list[Region]:
        """The regions with the free pages inside a bin given the bin's type."""
        out = []
        for r in self.regions:
            if r.type != efi.CONVENTIONAL_MEMORY:
                out.append(r)
                continue
            cursor = r.start
            for memory_type, (start, end) in sorted(self.bins.items(), key=lambda b: b[1]):
                lo, hi = max(start, cursor), min(end, r.end)
                if lo >= hi:
                    continue
                if lo > cursor:
                    out.append(Region(cursor, lo, r.type, r.attribute))
                out.append(Region(lo, hi, memory_type, _attribute(memory_type)))
                cursor = hi
            if cursor < r.end:
                out.append(Region(cursor, r.end, r.type, r.attribute))
        return out

    def descriptors(self) -> list[Region]:
        """The map as GetMemoryMap reports it: sorted, adjacent regions of one type merged, the
        free pages of a bin shown as the bin's type."""
        out: list[Region] = []
        for r in self._reported():
            if out and out[-1].end == r.start and out[-1].type == r.type and out[-1].attribute == r.attribute:
                out[-1] = Region(out[-1].start, r.end, r.type, r.attribute)
            else:
                out.append(Region(r.start, r.end, r.type, r.attribute))
        return out

    def pack(self, descriptor_size: int = DESCRIPTOR_SIZE) -> bytes:
        out = bytearray()
        for r in self.descriptors():
            out += struct.pack(efi.MEMORY_DESCRIPTOR_FORMAT, r.type, r.start, 0, r.pages, r.attribute)
            out += bytes(descriptor_size - efi.MEMORY_DESCRIPTOR_SIZE)
        return bytes(out)

    def size_needed(self) -> int:
        return len(self.descriptors()) * DESCRIPTOR_SIZE

    # -- changes --------------------------------------------------------------------------------------
    def convert(self, start: int, end: int, new_type: int, by_allocate_pages: bool = False) -> None:
        """Retype [start, end) (which the caller checked) by splitting the regions it touches."""
        out = []
        for r in self.regions:
            if r.end <= start or r.start >= end:
                out.append(r)
                continue
            if r.start < start:
                out.append(Region(r.start, start, r.type, r.attribute, r.by_allocate_pages))
            out.append(Region(max(r.start, start), min(r.end, end), new_type, _attribute(new_type),
                              by_allocate_pages))
            if r.end > end:
                out.append(Region(end, r.end, r.type, r.attribute, r.by_allocate_pages))
        self.regions = out
        self.key += 1

    def find_free(self, pages: int, max_address: int, align: int = PAGE, min_address: int = 0) -> int | None:
        """Top-down: the highest ``align``-ed start of ``pages`` free pages at or above
        ``min_address`` ending at or below ``max_address`` + 1."""
        size = pages * PAGE
        for r in sorted(self.regions, key=lambda r: r.start, reverse=True):
            if r.type != efi.CONVENTIONAL_MEMORY:
                continue
            top = min(r.end, max_address + 1)
            start = (top - size) // align * align
            if start >= max(r.start, min_address) and start + size <= top:
                return start
        return None

    def find_for(self, memory_type: int, pages: int, max_address: int) -> int | None:
        """edk2's order: the type's own bin, then below every bin, then anywhere up to ``max_address``."""
        if memory_type in self.bins:
            start, end = self.bins[memory_type]
            if end - 1 <= max_address:
                found = self.find_free(pages, end - 1, min_address=start)
                if found is not None:
                    return found
        floor = self.bins_floor()
        if floor - 1 <= max_address:
            found = self.find_free(pages, floor - 1)
            if found is not None:
                return found
        return self.find_free(pages, max_address)

    def allocate(self, alloc_type: int, memory_type: int, pages: int, address: int = 0,
                 by_allocate_pages: bool = True) -> int:
        """AllocatePages semantics; returns the address or raises ``EfiError``."""
        if alloc_type not in (efi.ALLOCATE_ANY_PAGES, efi.ALLOCATE_MAX_ADDRESS, efi.ALLOCATE_ADDRESS):
            raise EfiError(efi.INVALID_PARAMETER, f"allocate type {alloc_type}")
        if not valid_allocation_type(memory_type):
            raise EfiError(efi.INVALID_PARAMETER, f"memory type {memory_type:#x}")
        if pages <= 0 or pages > (1 << 52):
            raise EfiError(efi.OUT_OF_RESOURCES if pages else efi.INVALID_PARAMETER, f"{pages} pages")
        size = pages * PAGE
        if alloc_type == efi.ALLOCATE_ADDRESS:
            if address % PAGE or not self.is_type(address, address + size, efi.CONVENTIONAL_MEMORY):
                raise EfiError(efi.NOT_FOUND, f"{address:#x}+{size:#x} is not free memory")
            start = address
        else:
            limit = FOUR_GIB - 1 if alloc_type == efi.ALLOCATE_ANY_PAGES else address
            found = self.find_for(memory_type, pages, limit)
            if found is None:
                raise EfiError(efi.OUT_OF_RESOURCES if alloc_type == efi.ALLOCATE_ANY_PAGES else efi.NOT_FOUND,
                               f"no {pages} free pages below {limit + 1:#x}")
            start = found
        self.convert(start, start + size, memory_type, by_allocate_pages)
        return start

    def free(self, address: int, pages: int) -> int:
        """FreePages semantics: every page must have come from AllocatePages; returns its type."""
        if address % PAGE or pages <= 0:
            raise EfiError(efi.INVALID_PARAMETER, f"{address:#x}, {pages} pages")
        end = address + pages * PAGE
        covered, kind = address, None
        for r in self.regions:
            if r.end <= address or r.start >= end:
                continue
            if r.start > covered or not r.by_allocate_pages:
                break
            kind, covered = r.type, r.end
        if covered < end:
            raise EfiError(efi.NOT_FOUND, f"{address:#x}+{pages * PAGE:#x} was not allocated with AllocatePages")
        self.convert(address, end, efi.CONVENTIONAL_MEMORY)
        return kind


class Pool:
    """AllocatePool/FreePool: 8-byte-aligned blocks carved from pages of the pool's memory type
    (so a pool of ACPIReclaim memory shows as ACPIReclaim in the map); blocks of a page or more get
    pages of their own.  A chunk goes back to the map when its last block is freed."""

    CHUNK_PAGES = 4

    def __init__(self, memory_map: MemoryMap):
        self.map = memory_map
        self.chunks: dict[int, list[list[int]]] = {}       # type -> [[start, end, cursor, live]]
        self.blocks: dict[int, tuple[int, int, list[int] | None]] = {}   # address -> (size, type, chunk)

    def allocate(self, memory_type: int, size: int) -> int:
        if not valid_allocation_type(memory_type):
            raise EfiError(efi.INVALID_PARAMETER, f"memory type {memory_type:#x}")
        rounded = max(8, -(-size // 8) * 8)
        if rounded >= PAGE:
            pages = -(-rounded // PAGE)
            address = self.map.allocate(efi.ALLOCATE_ANY_PAGES, memory_type, pages, by_allocate_pages=False)
            self.blocks[address] = (size, memory_type, None)
            return address
        for chunk in self.chunks.get(memory_type, []):
            if chunk[2] + rounded <= chunk[1]:
                break
        else:
            start = self.map.allocate(efi.ALLOCATE_ANY_PAGES, memory_type, self.CHUNK_PAGES,
                                      by_allocate_pages=False)
            chunk = [start, start + self.CHUNK_PAGES * PAGE, start, 0]
            self.chunks.setdefault(memory_type, []).append(chunk)
        address = chunk[2]
        chunk[2] += rounded
        chunk[3] += 1
        self.blocks[address] = (size, memory_type, chunk)
        self.map.key += 1
        return address

    def free(self, address: int) -> None:
        if address not in self.blocks:
            raise EfiError(efi.INVALID_PARAMETER, f"{address:#x} is not a block AllocatePool returned")
        size, memory_type, chunk = self.blocks.pop(address)
        if chunk is None:
            self.map.convert(address, address + -(-size // PAGE) * PAGE, efi.CONVENTIONAL_MEMORY)
            return
        chunk[3] -= 1
        self.map.key += 1
        if chunk[3] == 0:
            self.chunks[memory_type].remove(chunk)
            self.map.convert(chunk[0], chunk[1], efi.CONVENTIONAL_MEMORY)
