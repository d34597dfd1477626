"""Disassembly of guest code for fault reports, stop states and trapping instructions (capstone)."""

from __future__ import annotations

import functools

import capstone

_MODES = {64: capstone.CS_MODE_64, 32: capstone.CS_MODE_32, 16: capstone.CS_MODE_16}
# Distinct (bytes, mode) pairs whose length is remembered; past this the memo starts afresh, so a
# guest (or a fuzzer) trapping on ever-new bytes cannot grow it without bound.
MAX_REMEMBERED = 4096
_lengths: dict[tuple[bytes, int], int] = {}


@functools.lru_cache(maxsize=None)
def _disassembler(bits: int) -> capstone.Cs:
    # One per mode: creating a Cs costs ~70 us (capstone retries its optional C extension import),
    # which was half of every trapped hypercall.
    return capstone.Cs(capstone.CS_ARCH_X86, _MODES[bits])


def disassemble_one(code: bytes, address: int, bits: int = 64) -> tuple[str, int]:
    """The first instruction in ``code`` as ``"mnemonic operands"`` and its length (0 if invalid)."""
    md = _disassembler(bits)
    for insn in md.disasm(code, address, 1):
        return f"{insn.mnemonic} {insn.op_str}".strip(), insn.size
    return f"(undecodable bytes {code[:8].hex()})", 0


def instruction_length(code: bytes, bits: int = 64) -> int:
    """The length of the first instruction in ``code`` (0 if invalid), decoded once per distinct
    byte sequence and mode.  The memo is keyed on the bytes themselves, so code the guest (or the
    host) rewrites is decoded afresh: there is nothing to invalidate.  The length of an x86
    instruction does not depend on its address."""
    key = (code, bits)
    length = _lengths.get(key)
    if length is None:
        if len(_lengths) >= MAX_REMEMBERED:
            _lengths.clear()
        length = _lengths[key] = disassemble_one(code, 0, bits)[1]
    return length
