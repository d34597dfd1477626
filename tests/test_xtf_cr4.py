"""CR4 writes as the CPU checks them, as XTF's umip test probes it: with UMIP absent from CPUID,
setting CR4.UMIP is #GP(0) and CR4 keeps its value; bits whose features CPUID offers are taken, from
any register (REX.B included) and in 32-bit code too."""

from __future__ import annotations

import pytest

from guestcode import DATA, run_raw
from hvsim.core.events import Fault

CR4_UMIP, CR4_PGE, CR4_OSFXSR = 1 << 11, 1 << 7, 1 << 9

HANDLER64 = """
gp_handler:                 /* count, record the error code, skip the 4-byte mov %r9, %cr4 */
    incq 0x80100
    popq 0x80108
    addq $4, (%rsp)
    iretq
"""
HANDLER32 = """
gp_handler:
    incl 0x80100
    popl 0x80108
    addl $3, (%esp)
    iret
"""


@pytest.mark.parametrize("bits", [64, 32])
def test_setting_cr4_umip_without_cpuid_umip_is_gp_and_other_bits_are_taken(bits):
    if bits == 64:
        body = f"""
    mov %cr4, %r9
    or ${CR4_UMIP}, %r9
    mov %r9, %cr4              /* UMIP: #GP(0) */
    mov %cr4, %rax
    mov %rax, 0x80000
    or ${CR4_PGE | CR4_OSFXSR}, %rax
    mov %rax, %cr4             /* PGE, OSFXSR: taken */
    mov %cr4, %rax
    mov %rax, 0x80008
    hlt
"""
        handler = HANDLER64
    else:
        body = f"""
    mov $0x80000, %esp
    mov %cr4, %ecx
    or ${CR4_UMIP}, %ecx
    mov %ecx, %cr4
    mov %cr4, %eax
    mov %eax, 0x80000
    or ${CR4_PGE | CR4_OSFXSR}, %eax
    mov %eax, %cr4
    mov %cr4, %eax
    mov %eax, 0x80008
    hlt
"""
        handler = HANDLER32
    result, m, _ = run_raw(body + handler, bits=bits, gates={13: "gp_handler"})
    assert not m.guest_cpuid(7)[2] & 1 << 2, "the CPU model offers UMIP: this test needs one without"
    assert result.stop.kind == "halt", result.stop
    before = m.memory.read_u32(DATA)
    assert not before & CR4_UMIP
    assert m.memory.read_u32(DATA + 0x100) == 1 and m.memory.read_u32(DATA + 0x108) == 0
    assert m.memory.read_u32(DATA + 8) == before | CR4_PGE | CR4_OSFXSR
    gps = [e for e in m.events if isinstance(e, Fault) and e.vector == 13]
    assert len(gps) == 1 and gps[0].error_code == 0
