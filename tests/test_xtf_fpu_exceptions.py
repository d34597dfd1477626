"""Which exception an MMX/SSE instruction raises with CR0.EM/TS and CR4.OSFXSR, as XTF's
fpu-exception-emulation test checks: #UD takes priority over #NM when CR0.EM is set (MMX and SSE)
or CR4.OSFXSR is clear (SSE); x87 instructions raise #NM under EM or TS."""

from __future__ import annotations

import pytest

from guestcode import DATA, run_raw

CR0_EM, CR0_TS, CR4_OSFXSR = 1 << 2, 1 << 3, 1 << 9

HANDLERS = """
ud_handler:
    movq $6, 0x80000
    hlt
nm_handler:
    movq $7, 0x80000
    hlt
"""


@pytest.mark.parametrize("insn,cr0,osfxsr,expected", [
    ("movups %xmm0, %xmm0", CR0_TS, True, 7),
    ("movups %xmm0, %xmm0", CR0_EM | CR0_TS, True, 6),
    ("movups %xmm0, %xmm0", CR0_TS, False, 6),
    ("movq %mm0, %mm0", CR0_EM | CR0_TS, True, 6),
    ("movq %mm0, %mm0", CR0_TS, False, 7),
    ("fnop", CR0_EM | CR0_TS, True, 7),
])
def test_mmx_sse_and_x87_exception_priority(insn, cr0, osfxsr, expected):
    source = f"""
    mov %cr0, %rax
    or ${cr0:#x}, %rax
    mov %rax, %cr0
    mov %cr4, %rax
    {"or" if osfxsr else "and"} ${CR4_OSFXSR if osfxsr else ~CR4_OSFXSR}, %rax
    mov %rax, %cr4
    {insn}
    movq $1, 0x80000
    hlt
""" + HANDLERS
    result, m, _ = run_raw(source, gates={6: "ud_handler", 7: "nm_handler"})
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u64(DATA) == expected
