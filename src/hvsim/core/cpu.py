"""CPU-state builders: descriptors, gates, page tables, and entering 32-bit or 64-bit mode.

An environment describes its entry state as an ``EntryState``; the machine loads it in one step
with ``vmrun`` (svm.py).  That sidesteps the ordering pitfalls of writing control registers one by
one from the host (unicorn-notes.md §1: CR4.PAE before CR0.PG; a segment-register write from the host
stores the selector only, not the hidden descriptor; leaving long mode needs CR0.PG cleared first).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import attrs

from .errors import GuestMemoryError

if TYPE_CHECKING:
    from .memory import GuestMemory

CR0_PE = 1 << 0
CR0_ET = 1 << 4
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11
MSR_EFER = 0xC0000080

PTE_PRESENT = 1 << 0
PTE_WRITE = 1 << 1
PTE_LARGE = 1 << 7
PTE_NX = 1 << 63           # execute-disable (SDM vol. 3 §4.6.2); honoured with EFER.NXE, else reserved
PTE_FLAGS_4K = 0xFFF       # the low flag bits a 4 KiB entry shares with a 2 MiB one (less PS; PAT not used here)
RFLAGS_RESERVED = 1 << 1

# Access byte and flag nibble of the usual flat descriptors.
CODE64 = (0x9B, 0xA)   # present, ring 0, code exec/read, accessed; G=1, L=1
CODE32 = (0x9B, 0xC)   # G=1, D=1
DATA32 = (0x93, 0xC)   # present, ring 0, data read/write, accessed; G=1, B=1


def segment_descriptor(base: int, limit: int, access: int, flags: int) -> int:
    """An 8-byte GDT code/data descriptor."""
    return (
        (limit & 0xFFFF)
        | (base & 0xFFFFFF) << 16
        | (access & 0xFF) << 40
        | ((limit >> 16) & 0xF) << 48
        | (flags & 0xF) << 52
        | ((base >> 24) & 0xFF) << 56
    )


def flat_descriptor(kind: tuple[int, int]) -> int:
    return segment_descriptor(0, 0xFFFFF, *kind)


def tss64_descriptor(base: int, limit: int = 0x67) -> bytes:
    """A 16-byte available 64-bit TSS descriptor (system descriptor type 9)."""
    low = segment_descriptor(base, limit, 0x89, 0x0)
    return struct.pack("<QQ", low, base >> 32)


def gdt_bytes(entries: list[int | bytes]) -> bytes:
    return b"".join(e if isinstance(e, bytes) else struct.pack("<Q", e) for e in entries)


def idt_gate64(offset: int, selector: int, gate_type: int = 0xE, dpl: int = 0, ist: int = 0) -> bytes:
    """A 16-byte long-mode IDT gate (type 0xE interrupt, 0xF trap)."""
    attr = 0x80 | (dpl & 3) << 5 | (gate_type & 0xF)
    return struct.pack("<HHBBHII", offset & 0xFFFF, selector, ist & 7, attr,
                       (offset >> 16) & 0xFFFF, (offset >> 32) & 0xFFFF_FFFF, 0)


def idt_gate32(offset: int, selector: int, gate_type: int = 0xE, dpl: int = 0) -> bytes:
    """An 8-byte protected-mode IDT gate (type 0xE 32-bit interrupt, 0xF 32-bit trap)."""
    attr = 0x80 | (dpl & 3) << 5 | (gate_type & 0xF)
    return struct.pack("<HHBBH", offset & 0xFFFF, selector, 0, attr, (offset >> 16) & 0xFFFF)


@attrs.define
class PageTableBuilder:
    """Builds 4-level long-mode page tables in guest memory, allocating table pages from a pool.

    ``map(vaddr, paddr, size)`` maps with 2 MiB pages where alignment allows, 4 KiB pages otherwise
    (Unicorn's CPU model has no 1 GiB pages).  Used for identity maps and for offset maps such as a
    kernel's high-half view of its physical image.
    """

    memory: "GuestMemory"
    pool_start: int
    pool_end: int
    next_free: int = attrs.field(init=False)
    pml4: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.next_free = self.pool_start
        self.pml4 = self._new_table()

    def _new_table(self) -> int:
        if self.next_free + 0x1000 > self.pool_end:
            raise MemoryError(f"page-table pool {self.pool_start:#x}-{self.pool_end:#x} exhausted")
        table = self.next_free
        self.next_free += 0x1000
        self.memory.fill(table, 0x1000)
        return table

    def _child(self, table: int, index: int) -> int:
        slot = table + index * 8
        entry = self.memory.read_u64(slot)
        if entry & PTE_PRESENT:
            return entry & 0x000F_FFFF_FFFF_F000
        child = self._new_table()
        self.memory.write_u64(slot, child | PTE_PRESENT | PTE_WRITE)
        return child

    def map(self, vaddr: int, paddr: int, size: int, flags: int = PTE_PRESENT | PTE_WRITE) -> None:
        end = vaddr + size
        while vaddr < end:
            pdpt = self._child(self.pml4, (vaddr >> 39) & 0x1FF)
            pd = self._child(pdpt, (vaddr >> 30) & 0x1FF)
            if vaddr % (2 << 20) == 0 and paddr % (2 << 20) == 0 and end - vaddr >= (2 << 20):
                self.memory.write_u64(pd + ((vaddr >> 21) & 0x1FF) * 8, paddr | flags | PTE_LARGE)
                step = 2 << 20
            else:
                pt = self._child(pd, (vaddr >> 21) & 0x1FF)
                self.memory.write_u64(pt + ((vaddr >> 12) & 0x1FF) * 8, paddr | flags)
                step = 0x1000
            vaddr += step
            paddr += step

    def identity(self, start: int, size: int) -> None:
        self.map(start, start, size)

    def no_execute(self, start: int, size: int) -> None:
        """Mark the mapped pages of ``[start, start+size)`` execute-disable (``PTE_NX``, page
        granular: a 2 MiB page only partly inside is split into 4 KiB pages first).  Unmapped
        parts are left alone.  The guest must enter with EFER.NXE (``long_mode_entry(nx=True)``)."""
        va, end = start - start % 0x1000, start + size
        while va < end:
            next_2m = (va | ((2 << 20) - 1)) + 1
            pd = self._existing(self.pml4, (39, 30), va)
            if pd is None:
                va = next_2m
                continue
            slot = pd + ((va >> 21) & 0x1FF) * 8
            entry = self.memory.read_u64(slot)
            if not entry & PTE_PRESENT:
                va = next_2m
                continue
            if entry & PTE_LARGE:
                if va % (2 << 20) == 0 and end >= next_2m:
                    self.memory.write_u64(slot, entry | PTE_NX)
                    va = next_2m
                    continue
                pt = self._new_table()
                base, flags = entry & 0x000F_FFFF_FFE0_0000, entry & PTE_FLAGS_4K & ~PTE_LARGE
                self.memory.write(pt, b"".join(
                    (base + i * 0x1000 | flags | entry & PTE_NX).to_bytes(8, "little") for i in range(512)))
                self.memory.write_u64(slot, pt | PTE_PRESENT | PTE_WRITE | entry & 0x4)
                entry = self.memory.read_u64(slot)
            pt = entry & 0x000F_FFFF_FFFF_F000
            while va < min(end, next_2m):
                pte = pt + ((va >> 12) & 0x1FF) * 8
                value = self.memory.read_u64(pte)
                if value & PTE_PRESENT:
                    self.memory.write_u64(pte, value | PTE_NX)
                va += 0x1000
            va = next_2m

    def _existing(self, table: int, shifts, va: int) -> int | None:
        for shift in shifts:
            entry = self.memory.read_u64(table + ((va >> shift) & 0x1FF) * 8)
            if not entry & PTE_PRESENT or entry & PTE_LARGE:
                return None
            table = entry & 0x000F_FFFF_FFFF_F000
        return table


@attrs.frozen
class Segment:
    """A segment register as VMRUN loads it (VMCB attribute format: access byte | flags << 8)."""

    selector: int
    attrib: int
    limit: int
    base: int

    @classmethod
    def from_gdt(cls, memory: "GuestMemory", gdt_base: int, gdt_limit: int, selector: int) -> "Segment":
        if selector & ~3 == 0:
            return cls(selector, 0, 0, 0)
        offset = selector & ~7
        if selector & 4 or offset + 7 > gdt_limit:
            raise ValueError(f"selector {selector:#x} is outside the GDT (limit {gdt_limit:#x})")
        try:
            desc = memory.read_u64(gdt_base + offset)
        except GuestMemoryError as exc:
            raise ValueError(f"the GDT entry of selector {selector:#x} is not in guest RAM: {exc}") from None
        access, flags = (desc >> 40) & 0xFF, (desc >> 52) & 0xF
        limit = (desc & 0xFFFF) | ((desc >> 48) & 0xF) << 16
        if flags & 0x8:                       # G: 4 KiB granularity
            limit = limit << 12 | 0xFFF
        base = ((desc >> 16) & 0xFF_FFFF) | ((desc >> 56) & 0xFF) << 24
        return cls(selector, access | flags << 8, limit, base)

    def pack(self) -> bytes:
        return struct.pack("<HHIQ", self.selector, self.attrib, self.limit, self.base)


@attrs.frozen
class EntryState:
    """The CPU state a guest starts in, as an environment's ABI promises it.

    The machine loads it with one ``vmrun`` (svm.py).  A segment given as a selector gets its
    hidden part from the GDT entry it names, so ``gdt`` must be written to guest memory first; a
    ``Segment`` is loaded as given (an ABI such as PVH fixes the hidden state, not a GDT).  General
    registers other than RSP are set with ``machine.set_reg`` and are kept.  ``tr`` is
    ``(selector, base, limit, flags)`` in the engine's descriptor-cache format, or ``None`` to leave
    the engine's TR alone.
    """

    rip: int
    cr0: int
    cs: "int | Segment"
    ds: "int | Segment"
    gdt: tuple[int, int]                   # (base, limit)
    idt: tuple[int, int] = (0, 0)
    cr3: int = 0
    cr4: int = 0
    efer: int = 0
    ss: "int | Segment | None" = None      # default: ds
    es: "int | Segment | None" = None      # default: ds
    rsp: int = 0
    rflags: int = RFLAGS_RESERVED
    tr: tuple[int, int, int, int] | None = None

    def __attrs_post_init__(self) -> None:
        if self.ss is None:
            object.__setattr__(self, "ss", self.ds)
        if self.es is None:
            object.__setattr__(self, "es", self.ds)

    @property
    def bits(self) -> int:
        return 64 if self.efer & EFER_LMA else 32 if self.cr0 & CR0_PE else 16

    @property
    def mode(self) -> str:
        """The CPU mode in words, as the canonical record shows it (``"long64, paging on"``)."""
        name = {64: "long64", 32: "protected32", 16: "real16"}[self.bits]
        return f"{name}, paging {'on' if self.cr0 & CR0_PG else 'off'}"


def long_mode_entry(rip: int, *, cr3: int, gdt: tuple[int, int], cs: int, ds: int,
                    idt: tuple[int, int] = (0, 0), rsp: int = 0, nx: bool = False) -> EntryState:
    """64-bit long mode with paging on (CR0 = PE|ET|PG, CR4 = PAE, EFER = LME|LMA, and NXE with
    ``nx``: needed when the page tables use ``PTE_NX``); ``cs`` must name a 64-bit code descriptor."""
    return EntryState(rip=rip, cr0=CR0_PE | CR0_ET | CR0_PG, cr3=cr3, cr4=CR4_PAE,
                      efer=EFER_LME | EFER_LMA | (EFER_NXE if nx else 0), cs=cs, ds=ds, gdt=gdt, idt=idt, rsp=rsp)


def protected_mode32_entry(rip: int, *, gdt: tuple[int, int], cs: int, ds: int,
                           idt: tuple[int, int] = (0, 0), rsp: int = 0) -> EntryState:
    """Flat 32-bit protected mode with paging off (CR0 = PE|ET, CR4 = 0, EFER = 0); ``cs`` must name a
    32-bit code descriptor."""
    return EntryState(rip=rip, cr0=CR0_PE | CR0_ET, cs=cs, ds=ds, gdt=gdt, idt=idt, rsp=rsp)
