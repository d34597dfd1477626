"""CPU-state builders: descriptors, gates, page tables, and entering 32-bit or 64-bit mode.

Unicorn is always opened in UC_MODE_64 (its register API follows the open mode, so a 32-bit engine
could not read a guest that enters long mode).  The pitfalls this module encodes, measured on
unicorn 2.1.4 (shared/design/ref/unicorn-notes.md §1):
- set CR4.PAE before CR0.PG, or translation is wrong;
- in UC_MODE_64 a segment-register write stores the selector only; the hidden descriptor is loaded
  from the GDT only by guest instructions (far jump, mov to a segment register), so the 32-bit
  entry runs a short trampoline that loads them;
- leaving long mode from the host needs CR0.PG 1->0 before EFER can drop LME.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import attrs
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_CS,
    UC_X86_REG_DS,
    UC_X86_REG_EAX,
    UC_X86_REG_ES,
    UC_X86_REG_FS,
    UC_X86_REG_GDTR,
    UC_X86_REG_GS,
    UC_X86_REG_IDTR,
    UC_X86_REG_RFLAGS,
    UC_X86_REG_SS,
)

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


def enter_long_mode(uc, *, cr3: int, gdt_base: int, gdt_limit: int, cs: int, ds: int,
                    idt_base: int = 0, idt_limit: int = 0) -> None:
    """Put the CPU in 64-bit long mode with paging on, in the order the engine needs."""
    uc.reg_write(UC_X86_REG_GDTR, (0, gdt_base, gdt_limit, 0))
    uc.reg_write(UC_X86_REG_IDTR, (0, idt_base, idt_limit, 0))
    uc.reg_write(UC_X86_REG_CR3, cr3)
    uc.reg_write(UC_X86_REG_CR4, CR4_PAE)
    uc.msr_write(MSR_EFER, EFER_LME | EFER_LMA)
    uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)
    uc.reg_write(UC_X86_REG_CS, cs)
    for reg in (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_SS):
        uc.reg_write(reg, ds)
    for reg in (UC_X86_REG_FS, UC_X86_REG_GS):
        uc.reg_write(reg, 0)
    uc.reg_write(UC_X86_REG_RFLAGS, RFLAGS_RESERVED)


def protected_mode_trampoline(at: int, *, cs: int, ds: int, entry: int, eax: int = 0) -> bytes:
    """32-bit code placed at ``at`` that loads CS/DS/ES/SS from the GDT and jumps to ``entry``.

    The engine cannot load hidden segment descriptors from the host in UC_MODE_64, so a 32-bit
    entry starts here: ``ljmp cs:next; mov ds,%ax; mov %ax,%ds/%es/%ss; xor %eax,%eax;
    mov %ax,%fs/%gs; mov $eax,%eax; ljmp cs:entry``.  Only EAX is clobbered, and then set.
    """
    nxt = at + 7
    code = b"\xEA" + struct.pack("<IH", nxt, cs)
    code += b"\x66\xB8" + struct.pack("<H", ds) + b"\x8E\xD8\x8E\xC0\x8E\xD0"
    code += b"\x31\xC0\x8E\xE0\x8E\xE8"
    code += b"\xB8" + struct.pack("<I", eax & 0xFFFF_FFFF)
    code += b"\xEA" + struct.pack("<IH", entry, cs)
    return code


def enter_protected_mode32(uc, *, scratch_pml4: int, gdt_base: int, gdt_limit: int,
                           idt_base: int = 0, idt_limit: int = 0) -> None:
    """Put the CPU in flat 32-bit protected mode with paging off (CR0 = PE|ET, CR4 = 0, EFER = 0).

    ``scratch_pml4`` is any page-aligned guest-physical address whose page is zero: long mode is
    entered and left again (unicorn-notes.md §1c, method 3), which is the only way to clear LMA.
    Segment registers must then be loaded by ``protected_mode_trampoline``.
    """
    uc.reg_write(UC_X86_REG_GDTR, (0, gdt_base, gdt_limit, 0))
    uc.reg_write(UC_X86_REG_IDTR, (0, idt_base, idt_limit, 0))
    uc.reg_write(UC_X86_REG_CR3, scratch_pml4)
    uc.reg_write(UC_X86_REG_CR4, CR4_PAE)
    uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)
    uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET)
    uc.msr_write(MSR_EFER, 0)
    uc.reg_write(UC_X86_REG_CR4, 0)
    uc.reg_write(UC_X86_REG_CR3, 0)
    uc.reg_write(UC_X86_REG_EAX, 0)
    uc.reg_write(UC_X86_REG_RFLAGS, RFLAGS_RESERVED)
