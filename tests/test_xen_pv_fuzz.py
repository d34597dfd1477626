"""Random hypercalls from a xen_pv guest: whatever the numbers and arguments (wild pointers, huge
counts, pointers into the guest's own page tables and the M2P), the run ends with a known stop
kind and every call is recorded -- never a host error.

One guest run executes a table of (number, five arguments) rows with ``syscall`` and ignores the
results; hypothesis draws the table from numbers Xen defines and arguments that matter to the
handlers (0, small counts, pointers into the image, its page tables, the M2P, unmapped memory).
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_xen_pv_bad_input import DATA, PROLOGUE, pv_image

from hvsim import MachineConfig
from hvsim.api import Run
from hvsim.core.result import EXIT_STATUS

LOOP = """
    lea table(%rip), %rbx
1:  mov (%rbx), %rax
    cmp $-1, %rax
    je 2f
    mov 8(%rbx), %rdi
    mov 16(%rbx), %rsi
    mov 24(%rbx), %rdx
    mov 32(%rbx), %r10
    mov 40(%rbx), %r8
    push %rbx
    syscall
    pop %rbx
    add $48, %rbx
    jmp 1b
2:  hlt
    .balign 4096
scratch: .skip 8192
    .balign 8
table:
"""
SCRATCH = 0x10_0000 + 0x1000          # near the image: the code page and what follows it
ARGUMENTS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 6, 7, 14, 512, 0x7FF0, 0xFFFF_FFFF, 1 << 31, (1 << 64) - 1]),
    st.integers(min_value=0x10_0000, max_value=0x10_4000),               # the image and its scratch pages
    st.sampled_from([0xFFFF_8000_0000_0000, 0xFFFF_8200_0000_0000, 0x0000_7000_DEAD_0000, 0x3000, 0x5000]),
    st.integers(min_value=0, max_value=(1 << 64) - 1),
)
ROW = st.tuples(st.integers(min_value=0, max_value=45), *[ARGUMENTS] * 5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=12), dom0=st.booleans())
def test_random_hypercalls_end_in_a_known_stop_and_are_recorded(rows, dom0):
    table = b"".join(struct.pack("<6Q", *row) for row in rows) + struct.pack("<q", -1)
    source = PROLOGUE + LOOP + ".byte " + ", ".join(str(b) for b in table) + "\n"
    image, _ = pv_image(source.replace(DATA, ""))
    prepared = Run("xen_pv", image, MachineConfig(memory="64M", timeout=5), options={"dom0": dom0})
    result = prepared.execute()
    assert result.stop.kind in EXIT_STATUS and result.stop.kind != "host-error", (
        result.stop, result.extra.get("host_traceback"))
    recorded = [e for e in result.events if e.kind == "Call" and e.interface == "xen-hypercall"]
    assert recorded, result.stop
