"""Segment faults of memory operands: the #GP/#SS the CPU raises where the engine raises another.

The engine (QEMU's TCG in Unicorn 2.1.4) computes a linear address as segment base + offset and
never checks it against the segment: a non-canonical address in 64-bit mode is always #GP(0)
(``mmu_translate``, target/i386/excp_helper.c), and a segment limit is never checked at all.  The
CPU checks the segment first (SDM vol. 3, 5.3 "Limit checking" and 3.3.7.1 "Canonical
addressing"; AMD APM vol. 2, 4.12): a fault through SS is #SS(0), through any other segment #GP(0).
Which segment an operand goes through (SDM vol. 1, 3.7.4): an override prefix, else SS for a base of
RSP/RBP (ESP/EBP) and for the implicit stack of push/pop/call/ret, else DS; in 64-bit mode only the
FS and GS overrides count.

What is modelled, given the engine's fault and the faulting instruction (decoded with capstone):

- 64-bit mode: the engine's #GP(0) on a non-canonical operand becomes #SS(0) when that operand goes
  through SS.  CR2 is not written in either case, as on the CPU.
- 32-bit protected mode: a #PF on an instruction one of whose operands lies beyond its segment's
  limit (expand-up or expand-down data segments; a write through a code segment) becomes #GP(0),
  or #SS(0) through SS.

What is not: a limit violation that lands on a page the guest may access raises nothing (the engine
has no hook where it forms a linear address), and the #PF converted here has already written CR2,
which the CPU would have left alone.  16-bit code, string operations' ranges (only the first
element is checked) and the limits of descriptor-table accesses are outside this model.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable

import attrs
import capstone
from capstone import x86

from .engine_state import R_CS, R_DS, R_ES, R_FS, R_GS, R_SS

if TYPE_CHECKING:
    from .machine import Machine

GENERAL_PROTECTION, STACK_FAULT, PAGE_FAULT = 13, 12, 14
_MODES = {64: capstone.CS_MODE_64, 32: capstone.CS_MODE_32}
_SEGMENTS = {"es": R_ES, "cs": R_CS, "ss": R_SS, "ds": R_DS, "fs": R_FS, "gs": R_GS}
_STACK_BASES = frozenset({"rsp", "rbp", "esp", "ebp"})
# Instructions whose implicit operand is the stack (SDM vol. 1, 6.2): they access SS:[RSP].
_STACK_MNEMONICS = frozenset({
    "push", "pop", "pushf", "pushfd", "pushfq", "popf", "popfd", "popfq", "pushal", "popal", "pusha",
    "popa", "call", "ret", "retf", "enter", "leave", "iret", "iretd", "iretq",
})
# Descriptor flag bits of a segment cache's high dword (SDM vol. 3, 3.4.5).
DESC_CODE, DESC_EXPAND_DOWN, DESC_B = 1 << 11, 1 << 10, 1 << 22
ACCESS_WRITE = capstone.CS_AC_WRITE


@attrs.frozen
class MemoryOperand:
    """One memory access of an instruction: the segment it goes through (``"ss"``, ``"ds"``, ...),
    its offset in that segment (the effective address), its size and whether it writes."""

    segment: str
    offset: int
    size: int
    write: bool


@functools.lru_cache(maxsize=None)
def _decoder(bits: int) -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, _MODES[bits])
    md.detail = True
    return md


def memory_operands(code: bytes, rip: int, bits: int, register: Callable[[str], int]) -> list[MemoryOperand]:
    """The memory operands of the instruction ``code`` at ``rip`` in ``bits``-bit code, with their
    effective addresses from ``register(name)`` (capstone register names, ``rax``, ``r8d``, ...);
    an empty list when the bytes do not decode."""
    if bits not in _MODES:
        return []
    mask = (1 << bits) - 1
    for insn in _decoder(bits).disasm(code, rip, 1):
        found = []
        for op in insn.operands:
            if op.type != x86.X86_OP_MEM:
                continue
            if insn.mnemonic == "lea" or insn.mnemonic.startswith("nop") or insn.mnemonic.startswith("prefetch"):
                continue                              # no access: an address computation or a hint
            base = insn.reg_name(op.mem.base) if op.mem.base else None
            index = insn.reg_name(op.mem.index) if op.mem.index else None
            offset = op.mem.disp
            if base == "rip":
                offset += rip + insn.size
            elif base:
                offset += register(base)
            if index:
                offset += register(index) * op.mem.scale
            offset &= 0xFFFF_FFFF if (base or index or "r").startswith("e") else mask   # 0x67: 32-bit
            override = insn.reg_name(op.mem.segment) if op.mem.segment else None
            found.append(MemoryOperand(_segment(override, base, bits), offset, op.size,
                                       bool(op.access & ACCESS_WRITE)))
        if insn.mnemonic in _STACK_MNEMONICS:
            stack = register("rsp" if bits == 64 else "esp")
            size = 8 if bits == 64 else 4
            pushes = insn.mnemonic.startswith(("push", "call", "enter"))
            found.append(MemoryOperand("ss", (stack - size) & mask if pushes else stack, size, pushes))
        return found
    return []


def _segment(override: str | None, base: str | None, bits: int) -> str:
    if override and (bits != 64 or override in ("fs", "gs")):
        return override
    return "ss" if base in _STACK_BASES else "ds"


def _non_canonical(linear: int) -> bool:
    top = linear >> 47
    return top not in (0, (1 << 17) - 1)


def _beyond_limit(offset: int, size: int, limit: int, flags: int, write: bool) -> bool:
    """Whether ``size`` bytes at ``offset`` fail the segment's limit or type check."""
    if flags & DESC_CODE:
        return write or offset + size - 1 > limit
    if flags & DESC_EXPAND_DOWN:              # valid offsets are limit+1 .. 0xFFFF or 0xFFFFFFFF
        top = 0xFFFF_FFFF if flags & DESC_B else 0xFFFF
        return offset <= limit or offset + size - 1 > top
    return offset + size - 1 > limit


def segment_fault(machine: "Machine", vector: int, error_code: int | None, rip: int,
                  code_at: Callable[[int], bytes]) -> tuple[int, int] | None:
    """The (vector, error code) the CPU raises instead of the engine's ``vector`` on the instruction
    at ``rip`` (its bytes from ``code_at(rip)``, read only when the fault may be one to convert), or
    None when the engine's fault stands."""
    if vector not in (GENERAL_PROTECTION, PAGE_FAULT):
        return None
    _, bits = machine.code_segment()
    if bits == 64:
        if vector != GENERAL_PROTECTION or error_code != 0:
            return None
        code = code_at(rip)
        bases = {"fs": machine.reg("fs_base"), "gs": machine.reg("gs_base")}
        for op in memory_operands(code, rip, 64, machine.reg):
            if _non_canonical((bases.get(op.segment, 0) + op.offset) & 0xFFFF_FFFF_FFFF_FFFF):
                return (STACK_FAULT if op.segment == "ss" else GENERAL_PROTECTION), 0
        return None
    if bits != 32 or vector != PAGE_FAULT:
        return None
    code = code_at(rip)
    for op in memory_operands(code, rip, 32, machine.reg):
        cache = machine.engine.segment(_SEGMENTS[op.segment])
        if _beyond_limit(op.offset, op.size, cache.limit, cache.flags, op.write):
            return (STACK_FAULT if op.segment == "ss" else GENERAL_PROTECTION), 0
    return None
