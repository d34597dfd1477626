"""RDTSCP as a small guest (tests/guestcode.py) sees it: guest time in EDX:EAX and IA32_TSC_AUX's
low half in ECX, as the guest last wrote the MSR, whether the native hook reads the engine's field
directly (the address native.py finds) or through uc_reg_read (when it cannot be found)."""

from __future__ import annotations

import pytest
from guestcode import DATA, run_raw

from hvsim.core import native

AUX = 0x1234_5678_9ABC
RDTSCP_AFTER_WRMSR = f"""
    rdtscp
    mov %rcx, {DATA:#x}                 /* TSC_AUX as the engine starts it: 0 */
    mov $0xc0000103, %ecx
    mov ${AUX & 0xFFFF_FFFF:#x}, %eax
    mov ${AUX >> 32:#x}, %edx
    wrmsr
    mov $-1, %rcx
    rdtscp
    mov %rcx, {DATA + 8:#x}
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, {DATA + 16:#x}
    mov $0xc0000103, %ecx
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, {DATA + 24:#x}            /* the whole MSR reads back */
    cli
    hlt
"""


@pytest.mark.parametrize("direct", [True, False], ids=["engine-field", "msr-read"])
def test_rdtscp_returns_the_tsc_aux_the_guest_wrote(direct, monkeypatch):
    if not direct:
        monkeypatch.setattr(native, "tsc_aux_address", lambda uc: None)
    result, m, _ = run_raw(RDTSCP_AFTER_WRMSR)
    assert result.stop.kind == "halt", result.stop
    assert bool(m.native.control.tsc_aux_at) == direct
    values = [m.memory.read_u64(DATA + 8 * i) for i in range(4)]
    assert values[0] == 0
    assert values[1] == AUX & 0xFFFF_FFFF                  # ECX: the low half, zero-extended
    assert 0 < values[2] <= result.stats.guest_ns           # guest time, not the host's clock
    assert values[3] == AUX
    assert result.stats.tsc_reads == 2
