"""Guest memory as plugins see it: one bounds-checked accessor, and reads through live page tables."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4

from hvsim import MachineConfig
from hvsim.core.cpu import CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, MSR_EFER, PageTableBuilder
from hvsim.core.errors import GuestMemoryError
from hvsim.core.layout import FOUR_GIB, PCI_HOLE_START, MemoryType, PhysicalLayout
from hvsim.core.memory import GuestMemory, VirtualMemory


@pytest.fixture
def memory():
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 16 << 20)
    return uc, GuestMemory(uc, [(0, 16 << 20)])


def test_accesses_outside_ram_are_refused_before_anything_is_written(memory):
    uc, mem = memory
    mem.write_u64(0x1000, 0x1122334455667788)
    assert mem.read_u32(0x1004) == 0x11223344
    with pytest.raises(GuestMemoryError, match="at 0xfffffc"):
        mem.write((16 << 20) - 4, b"12345678")          # straddles the end of RAM
    assert mem.read((16 << 20) - 4, 4) == b"\0" * 4     # nothing was written
    for bad in (-1, 16 << 20, 1 << 63):
        with pytest.raises(GuestMemoryError):
            mem.read(bad, 1)


def test_cstring_stops_at_nul_or_limit(memory):
    _, mem = memory
    mem.write(0x2000, b"console=ttyS0\0junk")
    assert mem.read_cstring(0x2000) == b"console=ttyS0"
    assert mem.read_cstring(0x2000, limit=7) == b"console"


def test_virtual_reads_follow_the_page_tables_including_an_offset_map(memory):
    uc, mem = memory
    tables = PageTableBuilder(mem, 0x100000, 0x140000)
    tables.identity(0, 4 << 20)
    tables.map(0xFFFFFFFF80000000, 0x200000, 0x200000)       # a kernel's high-half view, 2 MiB page
    tables.map(0xFFFF888000003000, 0x5000, 0x1000)           # a 4 KiB page
    uc.reg_write(UC_X86_REG_CR3, tables.pml4)      # the order the engine needs: PAE before PG
    uc.reg_write(UC_X86_REG_CR4, CR4_PAE)
    uc.msr_write(MSR_EFER, EFER_LME | EFER_LMA)
    uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)
    vmem = VirtualMemory(uc, mem)
    mem.write(0x200010, b"high half")
    mem.write(0x5008, b"direct map")
    assert vmem.read(0xFFFFFFFF80000010, 9) == b"high half"
    assert vmem.read(0xFFFF888000003008, 10) == b"direct map"
    with pytest.raises(GuestMemoryError, match="not mapped"):
        vmem.read(0xFFFF888000004000, 1)


def test_layout_splits_ram_around_the_pci_hole():
    small = PhysicalLayout.for_config(MachineConfig(memory="512M"))
    assert small.ram()[-1].end == 512 << 20 and small.top_of_ram() == 512 << 20
    big = PhysicalLayout.for_config(MachineConfig(memory="6G"))
    low, high = big.ram()[-2:]
    assert (low.end, high.start, high.size) == (PCI_HOLE_START, FOUR_GIB, (6 << 30) - PCI_HOLE_START)
    assert all(r.type == MemoryType.RESERVED for r in big.memory_map if r.start in (0x9FC00, 0xE0000))
    assert not big.is_ram(0xFEE00000)


def test_the_native_walk_answers_as_the_python_walk_and_reads_only_the_accessors_memory(memory):
    uc, mem = memory
    tables = PageTableBuilder(mem, 0x100000, 0x140000)
    tables.identity(0, 4 << 20)
    tables.map(0xFFFFFFFF80000000, 0x200000, 0x200000)       # 2 MiB page
    tables.map(0xFFFF888000003000, 0x5000, 0x1000)           # 4 KiB page
    pdpt = 0x141000                                          # a 1 GiB page at 512 GiB, by hand
    mem.write_u64(tables.pml4 + 8, pdpt | 3)
    mem.write_u64(pdpt + 8, 0x4000_0000 | 0x83)
    uc.reg_write(UC_X86_REG_CR3, tables.pml4)
    uc.reg_write(UC_X86_REG_CR4, CR4_PAE)
    uc.msr_write(MSR_EFER, EFER_LME | EFER_LMA)
    uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)
    vmem = VirtualMemory(uc, mem)
    cases = {0x1234: 0x1234, 0xFFFFFFFF80012345: 0x212345, 0xFFFF888000003ABC: 0x5ABC,
             (1 << 39) + (1 << 30) + 0x12345678: 0x5234_5678}
    for va, pa in cases.items():
        assert mem.walker.translate(uc._uch.value, va) == pa          # the native walk itself
        assert vmem._walk4(va, tables.pml4) == pa == vmem.translate(va)
    for va in (0xFFFF888000004000, 0x0000_8000_0000_0000):           # not present; not canonical
        assert mem.walker.translate(uc._uch.value, va) is None
        with pytest.raises(GuestMemoryError):
            vmem.translate(va)
    # the page directory mapping 0 leaves the accessor (a device takes its range): the engine still
    # maps it, but the walk must not read it, natively or not
    directory = mem.read_u64(mem.read_u64(tables.pml4) & ~0xFFF) & 0x000F_FFFF_FFFF_F000
    mem.remove_region(directory, 0x1000)
    assert mem.walker.translate(uc._uch.value, 0x1234) is None
    with pytest.raises(GuestMemoryError, match="outside guest RAM"):
        vmem.translate(0x1234)
