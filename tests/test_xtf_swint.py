"""Software interrupts with prefixes and ICEBP, as XTF's swint-emulation test drives them: the CPU
ignores legacy prefixes on ``int3``/``int n`` (they only lengthen the instruction), ICEBP (``f1``)
is #DB as a trap without the gate DPL check, and a gate fault while delivering it is #NP with EXT
set, reported at the ICEBP itself."""

from __future__ import annotations

import struct

import pytest

from guestcode import DATA, IDT, run_raw

HANDLERS = """
    hlt
bp_handler:                     /* frame: rip cs rflags rsp ss */
    mov (%rsp), %rax
    mov %rax, 0x80000
    iretq
db_handler:
    mov (%rsp), %rax
    mov %rax, 0x80008
    iretq
np_handler:                     /* frame: error rip cs rflags rsp ss */
    mov (%rsp), %rax
    mov %rax, 0x80010
    mov 8(%rsp), %rax
    mov %rax, 0x80018
    hlt
"""


def u64(m, address):
    return struct.unpack("<Q", m.memory.read(address, 8))[0]


@pytest.mark.parametrize("prefix", ["67", "f3", "2e 66", "66 67 48"])
def test_prefixed_int3_is_a_breakpoint_returning_after_the_whole_instruction(prefix):
    source = f"""
    .byte {", ".join("0x" + b for b in prefix.split())}, 0xcc
after_int3:
    mov 0x80000, %rbx
    .byte 0x67, 0xcd, 0x03
after_int_3:
    hlt
""" + HANDLERS
    result, m, sym = run_raw(source, gates={3: "bp_handler"})
    assert result.stop.kind == "halt", result.stop
    assert m.reg("rbx") == sym["after_int3"]           # the first breakpoint's return address
    assert u64(m, DATA) == sym["after_int_3"]            # then `int $3` behind an address-size prefix


def test_icebp_is_a_debug_trap_and_a_missing_gate_is_np_with_ext_at_the_icebp():
    source = f"""
    .byte 0x67, 0xf1
after_icebp:
    andb $0x7f, {IDT + 1 * 16 + 5:#x}        /* gate 1 not present */
icebp_np:
    .byte 0xf1
    hlt
""" + HANDLERS
    result, m, sym = run_raw(source, gates={1: "db_handler", 3: "bp_handler", 11: "np_handler"})
    assert result.stop.kind == "halt", result.stop
    assert u64(m, DATA + 8) == sym["after_icebp"]        # #DB as a trap: after the prefixed ICEBP
    assert u64(m, DATA + 0x10) == 1 * 8 + 2 + 1          # #NP(IDT[1], EXT)
    assert u64(m, DATA + 0x18) == sym["icebp_np"]        # a fault: at the ICEBP

