"""Disassembly of guest code for fault reports and stop states (capstone)."""

from __future__ import annotations

import functools

import capstone

_MODES = {64: capstone.CS_MODE_64, 32: capstone.CS_MODE_32, 16: capstone.CS_MODE_16}


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
