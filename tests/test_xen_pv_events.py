"""xen_pv: events reach a PV guest through the event callback it registered (CALLBACKOP_register),
on Xen's bounce frame, with events masked during delivery; SCHEDOP_block sleeps in guest time until
a VIRQ_TIMER event and the upcall is delivered on the hypercall's return path.

Guests as in test_xen_pv_bad_input.py (64-bit assembly, hypercalls by ``syscall``).  The guest's
handler records the frame, then returns with the iret hypercall keeping events masked (its saved
RFLAGS.IF cleared), as it cannot reach shared_info to clear ``evtchn_upcall_pending``.
"""

from __future__ import annotations

from test_xen_pv_bad_input import DONE, hypercall, result_at, run_pv

from hvsim.abi import xen_pv as pv
from hvsim.xen import evtchn as ev

HANDLER = """
    jmp main
event_callback:                 /* frame: rcx, r11, rip, cs (mask << 32), rflags, rsp, ss */
    mov %rax, results+120(%rip)  /* the interrupted code's RAX, restored by the iret */
    incq results+64(%rip)
    mov 24(%rsp), %rax
    mov %rax, results+72(%rip)
    mov 32(%rsp), %rax
    mov %rax, results+80(%rip)
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, results+88(%rip)
    andq $~0x200, 32(%rsp)      /* stay masked after the return */
    mov (%rsp), %rcx
    mov 8(%rsp), %r11
    add $16, %rsp               /* rip, cs, rflags, rsp, ss remain: complete the iret context */
    pushq $0
    push %rcx
    push %r11
    pushq results+120(%rip)
    mov $23, %eax
    syscall
main:
"""
CALLBACK = (f"movw ${0}, cb(%rip)\n    movw $0, cb+2(%rip)\n    lea event_callback(%rip), %rax\n    mov %rax, cb+8(%rip)\n    "
            + hypercall(30, pv.CALLBACKOP_register, "cb", store=0))
BIND_TIMER = (f"movl ${ev.VIRQ_TIMER}, virq(%rip)\n    movl $0, virq+4(%rip)\n    "
              + hypercall(32, ev.EVTCHNOP_bind_virq, "virq", store=1))
TIMER_IN_1MS = ("rdtsc\n    shl $32, %rdx\n    or %rdx, %rax\n    add $1000000, %rax\n    mov %rax, sshot(%rip)\n"
                "    mov %rax, results+96(%rip)\n    movl $0, sshot+8(%rip)\n    "
                + hypercall(24, 8, 0, "sshot", store=2))
BLOCK = hypercall(29, 1, 0, store=3) + "rdtsc\n    shl $32, %rdx\n    or %rdx, %rax\n    mov %rax, results+104(%rip)\n    "
STRUCTS = "\n    jmp 1f\n    .balign 16\ncb: .skip 16\nvirq: .skip 12\n    .balign 8\nsshot: .skip 16\n1:\n    "


def test_schedop_block_wakes_on_virq_timer_and_the_event_callback_runs():
    result, m, symbols = run_pv(HANDLER + STRUCTS + CALLBACK + BIND_TIMER + TIMER_IN_1MS + BLOCK + DONE)

    assert result.stop.kind == "poweroff", result.stop
    assert [result_at(m, symbols, i) for i in range(4)] == [0, 0, 0, 0]
    assert result_at(m, symbols, 8) == 1                                  # one upcall
    assert result_at(m, symbols, 9) >> 32 == 0                            # saved upcall mask: 0 (unmasked)
    assert result_at(m, symbols, 10) & 0x200                              # saved RFLAGS.IF: events were on
    deadline, taken, woke = (result_at(m, symbols, i) for i in (12, 11, 13))
    assert deadline <= taken < deadline + 20_000 and taken <= woke
    assert result.extra["xen_pv"]["event_upcalls"] == 1


def test_without_an_event_callback_the_timer_event_is_recorded_not_delivered():
    result, m, symbols = run_pv(HANDLER + STRUCTS + BIND_TIMER + TIMER_IN_1MS + BLOCK + DONE)

    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 8) == 0
    assert result.extra["xen_pv"]["event_upcalls"] == 0
    assert any("no upcall is registered" in e.text for e in m.events if e.kind == "Note")
