"""The trap path's fast paths against what they replace: register access without the binding
(``hvsim.core.registers``), guest-memory reads without its copy, the code segment from the engine's
hidden state, instruction lengths decoded once per byte sequence, and mmu_update's request list
read a page at a time."""

from __future__ import annotations

import struct

import pytest
from unicorn import UC_PROT_ALL
from unicorn import x86_const as X

from guestcode import CODE, run_raw
from test_xen_pv_bad_input import DONE, PROLOGUE, assert_finished, calls, hypercall, pv_hc, pv_image, result_at

from hvsim import MachineConfig, hookimpl
from hvsim.abi import xen as x
from hvsim.api import Run
from hvsim.core.cpu import segment_descriptor
from hvsim.core.disasm import disassemble_one, instruction_length
from hvsim.core.engine import new_engine
from hvsim.core.errors import GuestMemoryError
from hvsim.core.memory import GuestMemory
from hvsim.core.registers import RegisterFile

PLAIN = {X.UC_X86_REG_RAX: 0xFFFF_FFFF_FFFF_FFFF, X.UC_X86_REG_RBX: 0x1122_3344_5566_7788,
         X.UC_X86_REG_R15: 0x8000_0000_0000_0001, X.UC_X86_REG_RIP: 0x0000_7FFF_1234_5678,
         X.UC_X86_REG_CR3: 0x0012_3000, X.UC_X86_REG_RFLAGS: 0x246}


def test_register_file_reads_and_writes_what_the_binding_does():
    uc = new_engine()
    regs = RegisterFile(uc)
    for reg, value in PLAIN.items():
        uc.reg_write(reg, value)
    ids = tuple(PLAIN)
    assert tuple(regs.read(r) for r in ids) == tuple(uc.reg_read(r) for r in ids) == tuple(PLAIN.values())
    assert regs.read_many(ids) == tuple(PLAIN.values())
    # Narrow registers: the engine writes 2 or 4 bytes, the rest must not be left from the last read.
    assert regs.read(X.UC_X86_REG_RAX) == 0xFFFF_FFFF_FFFF_FFFF
    assert regs.read(X.UC_X86_REG_CS) == uc.reg_read(X.UC_X86_REG_CS) < 0x10000
    assert regs.read(X.UC_X86_REG_EAX) == 0xFFFF_FFFF
    assert regs.read_many((X.UC_X86_REG_RAX, X.UC_X86_REG_SS, X.UC_X86_REG_AX)) == (
        0xFFFF_FFFF_FFFF_FFFF, uc.reg_read(X.UC_X86_REG_SS), 0xFFFF)
    regs.write(X.UC_X86_REG_R9, -2)
    assert uc.reg_read(X.UC_X86_REG_R9) == 0xFFFF_FFFF_FFFF_FFFE
    uc.msr_write(0xC000_0100, 0x1234_5000)
    assert regs.msr_read(0xC000_0100) == uc.msr_read(0xC000_0100) == 0x1234_5000
    assert regs.msr_read(0xC000_0080) == uc.msr_read(0xC000_0080)
    # Ids that are not one 64-bit value go to the binding unchanged, and a batch refuses them.
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x5000, 0x27, 0))
    assert regs.read(X.UC_X86_REG_GDTR) == uc.reg_read(X.UC_X86_REG_GDTR)
    with pytest.raises(ValueError):
        regs.read_many((X.UC_X86_REG_RAX, X.UC_X86_REG_GDTR))


def test_guest_memory_reads_match_the_engine_at_every_size():
    uc = new_engine()
    uc.mem_map(0, 0x10000, UC_PROT_ALL)
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(0x10000))
    uc.mem_write(0, pattern)
    memory = GuestMemory(uc, [(0, 0x10000)])
    for address, size in ((0, 1), (5, 8), (0xFFF, 2), (0x123, 4095), (0x1000, 4096), (0x10, 4097), (0, 0x10000)):
        assert memory.read(address, size) == bytes(uc.mem_read(address, size)) == pattern[address:address + size]
    with pytest.raises(GuestMemoryError):
        memory.read(0xFFF8, 16)


@pytest.mark.parametrize("code, bits", [
    (b"\x0f\x01\xc1", 64), (b"\x0f\x0b", 32), (b"\x66\x0f\x0b", 16), (b"\xb8\x01\x00\x00\x00", 64),
    (b"\xb8\x01\x00\x00\x00", 16), (b"\x48\xb8" + bytes(8), 64), (b"\xff\xff", 64)])
def test_instruction_length_is_the_disassembler_s(code, bits):
    padded = code + b"\x90" * (15 - len(code))
    assert instruction_length(padded, bits) == disassemble_one(padded, 0x1000, bits)[1]
    assert instruction_length(padded, bits) == instruction_length(padded, bits)     # memoized: same answer


class TrapRecorder:
    """Answers invalid-opcode traps by stepping over them, recording what the trap path gave."""

    def __init__(self, resume_after: int | None = None, resume_at: int = 0):
        self.seen = []
        self.resume_after, self.resume_at = resume_after, resume_at

    @hookimpl
    def hvsim_trap(self, machine, trap):
        if trap.kind != "invalid-opcode":
            return None
        self.seen.append((trap.rip, trap.length, trap.code[:trap.length], machine.code_segment()))
        if self.resume_after is not None and len(self.seen) >= self.resume_after:
            machine.set_rip(self.resume_at)
        else:
            machine.set_rip(trap.rip + trap.length)
        return True


def test_a_rewritten_trap_site_is_decoded_afresh():
    # ud2 at `site`; the guest then rewrites it into vmcall (one byte longer) and traps there again.
    source = ("site: .byte 0x0f, 0x0b, 0x90\n    movb $0x01, site+1\n    movb $0xc1, site+2\n    jmp site\n"
              "done: hlt\n")
    from guestcode import assemble
    _, symbols = assemble(source)
    recorder = TrapRecorder(resume_after=2, resume_at=symbols["done"])
    result, m, symbols = run_raw(source, plugins=[recorder])
    assert result.stop.kind == "halt", result.stop
    site = symbols["site"]
    assert recorder.seen == [(site, 2, b"\x0f\x0b", (0, 64)), (site, 3, b"\x0f\x01\xc1", (0, 64))]


def test_the_code_segment_is_the_one_the_cpu_loaded_16_and_32_bit():
    # A flat 32-bit guest traps, then far-jumps into a 16-bit code segment based at CODE and traps
    # there: the trap's bytes are read at base + IP, and the segment is the loaded one.
    desc16 = segment_descriptor(CODE, 0xFFFF, 0x9B, 0x0)
    source = (f"ud2\n    lgdt gdtdesc\n    ljmp $0x18, $(sixteen - {CODE:#x})\n"
              ".code16\nsixteen: ud2\n    hlt\n.code32\n    .balign 8\n"
              f"gdt: .quad 0, 0x00cf9b000000ffff, 0x00cf93000000ffff, {desc16:#x}\n"
              "gdtdesc: .word 31\n    .long gdt\n")
    recorder = TrapRecorder()
    result, m, symbols = run_raw(source, bits=32, plugins=[recorder])
    assert result.stop.kind == "halt", result.stop
    assert recorder.seen == [(CODE, 2, b"\x0f\x0b", (0, 32)),
                             (symbols["sixteen"] - CODE, 2, b"\x0f\x0b", (CODE, 16))]


def _l1_entry(machine, l4: int, va: int) -> int:
    table = l4
    for shift in (39, 30, 21):
        table = machine.memory.read_u64(table + ((va >> shift) & 0x1FF) * 8) & 0x000F_FFFF_FFFF_F000
    return table + ((va >> 12) & 0x1FF) * 8


def test_mmu_update_reads_each_request_after_the_ones_before_took_effect():
    # Three requests in page A: an M2P update, a remap of A's own virtual page onto page B, and an
    # M2P update that Xen reads from page B (it copies each request when it comes to it).
    source = (hypercall(pv_hc("mmu_update"), "page_a", 3, "results+8", x.DOMID_SELF, store=0) + DONE
              + "    .balign 4096\npage_a: .skip 4096\npage_b: .skip 4096\n")
    image, symbols = pv_image(PROLOGUE + source)
    prepared = Run("xen_pv", image, MachineConfig(memory="64M", timeout=10))
    m = prepared.machine
    domain = m.plugin_state["xen_pv"]
    l4 = domain.layout.l4
    entry_a = _l1_entry(m, l4, symbols["page_a"])
    pte_a = m.memory.read_u64(entry_a)
    frame_a = pte_a & 0x000F_FFFF_FFFF_F000
    frame_b = m.memory.read_u64(_l1_entry(m, l4, symbols["page_b"])) & 0x000F_FFFF_FFFF_F000
    mfn = frame_a >> 12
    m.memory.write(frame_a, struct.pack("<6Q", frame_a | 1, 0x111, entry_a, frame_b | (pte_a & 0xFFF),
                                        frame_a | 1, 0x222))
    m.memory.write(frame_b + 32, struct.pack("<2Q", frame_a | 1, 0x333))
    result = prepared.execute()
    assert_finished(result, m, symbols)
    assert (result_at(m, symbols, 0), result_at(m, symbols, 1)) == (0, 3)
    assert m.memory.read_u64(domain.dom.m2p_base + mfn * 8) == 0x333
    assert calls(m, "mmu_update")[0].args["done"] == 3


def test_mmu_update_faults_at_the_first_request_it_cannot_read():
    # 300 M2P updates from 64 bytes before the end of a page whose successor is unmapped: 4 are
    # read, the 5th lies on the unmapped page.
    source = (hypercall(pv_hc("mmu_update"), "tail", 300, "results+8", x.DOMID_SELF, store=0) + DONE
              + "    .balign 4096\n    .skip 4096 - 64\ntail:\n    .rept 4\n    .quad 0x100001, 0x100\n    .endr\n"
              + "hole: .skip 4096\n")
    result, m, symbols = run_pv_unmapped(source, "hole")
    assert_finished(result, m, symbols)
    assert (result_at(m, symbols, 0), result_at(m, symbols, 1)) == (-x.EFAULT, 4)
    [event] = calls(m, "mmu_update")
    assert event.args["done"] == 4 and "fault" in event.args


def run_pv_unmapped(source: str, symbol: str):
    """Run a PV guest after unmapping the page at ``symbol`` (its L1 entry cleared)."""
    image, symbols = pv_image(PROLOGUE + source)
    prepared = Run("xen_pv", image, MachineConfig(memory="64M", timeout=10))
    m = prepared.machine
    entry = _l1_entry(m, m.plugin_state["xen_pv"].layout.l4, symbols[symbol])
    m.memory.write_u64(entry, 0)
    return prepared.execute(), m, symbols


def test_guest_memory_word_reads_match_the_engine():
    uc = new_engine()
    uc.mem_map(0, 0x2000, UC_PROT_ALL)
    memory = GuestMemory(uc, [(0, 0x2000)])
    uc.mem_write(0xFF8, struct.pack("<QQ", 0x8000_0000_DEAD_BEEF, 0x0123_4567_89AB_CDEF))
    assert [memory.read_u64(a) for a in (0xFF8, 0x1000, 0xFFC)] == [
        struct.unpack("<Q", bytes(uc.mem_read(a, 8)))[0] for a in (0xFF8, 0x1000, 0xFFC)]
    with pytest.raises(GuestMemoryError):
        memory.read_u64(0x1FF9)


def test_a_trap_whose_bytes_reach_an_unmapped_page_has_no_code():
    # ud2 8 bytes before the end of the identity map: the fifteen bytes cannot all be read, so the
    # trap has no code and no length (as a read through the guest's page tables always gave).
    source = "jmp site\ndone: hlt\n    .skip 0x100000 - 8 - (. - _start)\nsite: ud2\n"
    from guestcode import assemble
    _, symbols = assemble(source)
    assert symbols["site"] == 0x200000 - 8
    recorder = TrapRecorder(resume_after=1, resume_at=symbols["done"])
    result, m, symbols = run_raw(source, plugins=[recorder], map_bytes=0x200000)
    assert result.stop.kind == "halt", result.stop
    assert recorder.seen == [(symbols["site"], 0, b"", (0, 64))]
