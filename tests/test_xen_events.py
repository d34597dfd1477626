"""Xen event channels and Xen time under ``xen_pvh``, driven by small 32-bit PVH guests the way a
kernel drives them: shared_info placed with XENMEM_add_to_physmap, ports bound with
event_channel_op, the upcall routed by HVM_PARAM_CALLBACK_IRQ (type vector) or
HVMOP_set_evtchn_upcall_vector, timers programmed with vcpu_op / set_timer_op, SCHEDOP_block.

The guests' interrupt handler counts upcalls, stamps the TSC (guest nanoseconds) and clears
``evtchn_upcall_pending``, the selector and the pending bits of ports 0-31 (all the guests use), as
Linux's upcall does; the tests read shared_info and the guest's
records back from guest memory.
"""

from __future__ import annotations

import struct

from guestcode import DATA
from test_xen_pvh_bad_input import hypercall, run_pvh, s32, xen_calls

from hvsim.abi import xen as x
from hvsim.core.clock import WALLCLOCK_EPOCH_S
from hvsim.xen import evtchn as ev

SHINFO = 0x20_0000                      # where the guests place shared_info (gpfn 0x200)
ARG = DATA + 0x100                      # hypercall argument structures
COUNT, STAMP, PORT_A, PORT_B = DATA + 0x40, DATA + 0x48, DATA + 0x50, DATA + 0x54
SEEN_PENDING = DATA + 0x58              # the handler's copy of evtchn_pending[0] (low dword)
CALLBACK_VECTOR, UPCALL_VECTOR = 0xF3, 0xE0
EOI = 0xFEE0_00B0
NR_EVENT_CHANNELOP, NR_HVMOP, NR_VCPUOP, NR_SCHEDOP, NR_MEMOP, NR_SET_TIMER_OP = 32, 34, 24, 29, 12, 15
DONE = "movl $0x600d, 0x80ff0\n    cli\n    hlt\n"
EINVAL, EEXIST, ENOSYS = -x.EINVAL, -ev.EEXIST, -x.ENOSYS


def gate(vector: int, handler: str) -> str:
    """A 32-bit interrupt gate for ``vector`` to ``handler`` in the guest's IDT."""
    at = f"idt + {vector} * 8"
    return (f"mov ${handler}, %eax\n    mov %ax, {at}\n    movw $0x08, {at} + 2\n    movw $0x8e00, {at} + 4\n"
            f"    shr $16, %eax\n    mov %ax, {at} + 6\n    ")


# XENMEM_add_to_physmap {domid SELF, size, space shared_info, idx 0, gpfn} (the 32-bit layout)
PLACE_SHARED_INFO = (f"movw ${x.DOMID_SELF:#x}, {ARG:#x}\n    movw $0, {ARG + 2:#x}\n    movl $0, {ARG + 4:#x}\n"
                     f"    movl $0, {ARG + 8:#x}\n    movl ${SHINFO >> 12:#x}, {ARG + 12:#x}\n    "
                     + hypercall(NR_MEMOP, x.XENMEM_add_to_physmap, ARG))

PRELUDE = f"""
    mov $0x90000, %esp
    lgdt gdt_desc
    ljmp $0x08, $reload_cs
reload_cs:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    {gate(CALLBACK_VECTOR, "upcall")}
    {gate(UPCALL_VECTOR, "upcall_eoi")}
    lidt idt_desc
    jmp main
upcall:                               /* Linux's upcall: count, stamp, clear evtchn_upcall_pending */
    push %eax
    push %edx
    incl {COUNT:#x}
    rdtsc
    mov %eax, {STAMP:#x}
    mov %edx, {STAMP + 4:#x}
    mov {SHINFO + ev.SHARED_INFO_EVTCHN_PENDING:#x}, %eax
    mov %eax, {SEEN_PENDING:#x}
    movb $0, {SHINFO:#x}
    movl $0, {SHINFO + ev.VCPU_INFO_PENDING_SEL:#x}
    movl $0, {SHINFO + ev.SHARED_INFO_EVTCHN_PENDING:#x}
    pop %edx
    pop %eax
    iret
upcall_eoi:
    push %eax
    incl {COUNT:#x}
    movb $0, {SHINFO:#x}
    movl $0, {SHINFO + ev.VCPU_INFO_PENDING_SEL:#x}
    movl $0, {SHINFO + ev.SHARED_INFO_EVTCHN_PENDING:#x}
    movl $0, {EOI:#x}
    pop %eax
    iret
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
gdt_desc:
    .word 3 * 8 - 1
    .long gdt
idt_desc:
    .word 256 * 8 - 1
    .long idt
    .balign 8
idt:
    .fill 256 * 8, 1, 0
main:
    {PLACE_SHARED_INFO}
"""


def callback_vector(vector: int = CALLBACK_VECTOR) -> str:
    """HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ, type vector)."""
    value = 2 << 56 | vector
    return (f"movw ${x.DOMID_SELF:#x}, {ARG:#x}\n    movl $0, {ARG + 4:#x}\n    movl ${value & 0xFFFFFFFF:#x}, {ARG + 8:#x}\n"
            f"    movl ${value >> 32:#x}, {ARG + 12:#x}\n    " + hypercall(NR_HVMOP, x.HVMOP_set_param, ARG))


def bind_ipi(store: int) -> str:
    return (f"movl $0, {ARG:#x}\n    " + hypercall(NR_EVENT_CHANNELOP, ev.EVTCHNOP_bind_ipi, ARG)
            + f"mov {ARG + 4:#x}, %eax\n    mov %eax, {store:#x}\n    ")


def bind_virq(virq: int, store: int, result: int | None = None) -> str:
    return (f"movl ${virq}, {ARG:#x}\n    movl $0, {ARG + 4:#x}\n    movl $0, {ARG + 8:#x}\n    "
            + hypercall(NR_EVENT_CHANNELOP, ev.EVTCHNOP_bind_virq, ARG, store=result)
            + f"mov {ARG + 8:#x}, %eax\n    mov %eax, {store:#x}\n    ")


def port_op(cmd: int, port_at: int | None = None, port: int | None = None, store: int | None = None) -> str:
    load = f"mov {port_at:#x}, %eax\n    mov %eax, {ARG + 0x40:#x}\n    " if port_at else f"movl ${port}, {ARG + 0x40:#x}\n    "
    return load + hypercall(NR_EVENT_CHANNELOP, cmd, ARG + 0x40, store=store)


def singleshot_in(ns: int, deadline_at: int) -> str:
    """rdtsc + ``ns`` as the absolute timeout of VCPUOP_set_singleshot_timer on vCPU 0 (flags 0);
    the deadline is also kept at ``deadline_at``."""
    return (f"rdtsc\n    add ${ns}, %eax\n    adc $0, %edx\n    mov %eax, {ARG + 0x80:#x}\n    mov %edx, {ARG + 0x84:#x}\n"
            f"    mov %eax, {deadline_at:#x}\n    mov %edx, {deadline_at + 4:#x}\n    movl $0, {ARG + 0x88:#x}\n    "
            + hypercall(NR_VCPUOP, 8, 0, ARG + 0x80))


def wait_for_upcall(count: int = 1) -> str:
    """``sti; hlt`` (the STI shadow makes the pair atomic) until the handler has run ``count`` times."""
    return f"1:\n    cli\n    cmpl ${count}, {COUNT:#x}\n    jae 2f\n    sti\n    hlt\n    jmp 1b\n2:\n    "


def bit(m, base: int, port: int) -> int:
    return m.memory.read(SHINFO + base + port // 8, 1)[0] >> (port % 8) & 1


def assert_done(result, m):
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u32(DATA + 0xFF0) == 0x600D


def u64(m, address: int) -> int:
    return m.memory.read_u32(address) | m.memory.read_u32(address + 4) << 32


# -- binding and the port operations ------------------------------------------------------------
def test_binding_gives_distinct_ports_and_bad_ports_are_refused():
    result, m, _ = run_pvh(PRELUDE
                           + bind_virq(ev.VIRQ_TIMER, PORT_A)
                           + bind_virq(ev.VIRQ_TIMER, DATA + 0x60, result=DATA)         # twice: -EEXIST
                           + bind_ipi(PORT_B)
                           + bind_virq(99, DATA + 0x64, result=DATA + 4)                # no such VIRQ
                           + port_op(ev.EVTCHNOP_send, port=5000, store=DATA + 8)     # out of range
                           + port_op(ev.EVTCHNOP_close, port=40, store=DATA + 12)     # never bound
                           + port_op(ev.EVTCHNOP_send, port_at=PORT_A, store=DATA + 16)  # a VIRQ port
                           + port_op(ev.EVTCHNOP_close, port_at=PORT_B, store=DATA + 20)
                           + port_op(ev.EVTCHNOP_send, port_at=PORT_B, store=DATA + 24)  # closed now
                           + hypercall(NR_EVENT_CHANNELOP, ev.EVTCHNOP_init_control, ARG, store=DATA + 28)
                           + DONE)

    assert_done(result, m)
    timer_port, ipi_port = m.memory.read_u32(PORT_A), m.memory.read_u32(PORT_B)
    # the toolstack's xenstore and console channels hold ports 1 and 2
    assert timer_port not in (0, 1, 2) and ipi_port not in (0, 1, 2, timer_port)
    assert [s32(m, DATA + i) for i in range(0, 32, 4)] == [EEXIST, EINVAL, EINVAL, EINVAL, EINVAL, 0, EINVAL, ENOSYS]
    names = [c.name for c in xen_calls(m)]
    assert "event_channel_op.init_control" in names and "event_channel_op.bind_ipi" in names


def test_status_names_what_a_port_is_bound_to():
    def status(port_at: int, out: int) -> str:
        return (f"movw ${x.DOMID_SELF:#x}, {ARG + 0x20:#x}\n    mov {port_at:#x}, %eax\n    mov %eax, {ARG + 0x24:#x}\n    "
                + hypercall(NR_EVENT_CHANNELOP, ev.EVTCHNOP_status, ARG + 0x20)
                + "".join(f"mov {ARG + 0x28 + i:#x}, %eax\n    mov %eax, {out + i:#x}\n    " for i in (0, 4, 8)))

    result, m, _ = run_pvh(PRELUDE + bind_virq(ev.VIRQ_DEBUG, PORT_A) + "movl $2, 0x80058\n    "
                           + status(PORT_A, DATA) + status(0x80058, DATA + 0x10) + DONE)

    assert_done(result, m)
    assert [m.memory.read_u32(DATA + i) for i in (0, 4, 8)] == [ev.EVTCHNSTAT_virq, 0, ev.VIRQ_DEBUG]
    # port 2 is the console: interdomain, to the toolstack's domain 0
    assert m.memory.read_u32(DATA + 0x10) == ev.EVTCHNSTAT_interdomain
    assert m.memory.read_u32(DATA + 0x18) & 0xFFFF == 0


# -- delivery through the callback vector -------------------------------------------------------
def test_an_ipi_to_self_arrives_through_the_callback_vector():
    result, m, _ = run_pvh(PRELUDE + callback_vector() + bind_ipi(PORT_A)
                           + port_op(ev.EVTCHNOP_send, port_at=PORT_A, store=DATA)
                           + wait_for_upcall() + DONE)

    assert_done(result, m)
    port = m.memory.read_u32(PORT_A)
    assert s32(m, DATA) == 0 and m.memory.read_u32(COUNT) == 1
    assert m.memory.read_u32(SEEN_PENDING) == 1 << port                        # the handler saw it pending
    assert result.stats.interrupts == {f"{CALLBACK_VECTOR:#04x}": 1}
    assert m.chipset.lapic.isr == 0                                            # no EOI owed


def test_without_a_callback_the_event_stays_pending_and_is_recorded():
    result, m, _ = run_pvh(PRELUDE + bind_ipi(PORT_A) + port_op(ev.EVTCHNOP_send, port_at=PORT_A)
                           + "sti\n    nop\n    nop\n    cli\n    " + DONE)

    assert_done(result, m)
    port = m.memory.read_u32(PORT_A)
    assert m.memory.read_u32(COUNT) == 0
    assert bit(m, ev.SHARED_INFO_EVTCHN_PENDING, port) == 1
    assert m.memory.read_u8(SHINFO + ev.VCPU_INFO_UPCALL_PENDING) == 1
    assert u64(m, SHINFO + ev.VCPU_INFO_PENDING_SEL) == 1                      # word 0 selected
    assert any("no upcall is registered" in e.text for e in m.events if e.kind == "Note")


def test_a_masked_event_waits_for_unmask():
    mask = SHINFO + ev.SHARED_INFO_EVTCHN_MASK
    result, m, _ = run_pvh(PRELUDE + callback_vector() + bind_ipi(PORT_A)
                           + f"mov {PORT_A:#x}, %eax\n    bts %eax, {mask:#x}\n    "     # mask it, as Linux does
                           + port_op(ev.EVTCHNOP_send, port_at=PORT_A)
                           + "sti\n    nop\n    nop\n    nop\n    cli\n    "
                           + f"mov {COUNT:#x}, %eax\n    mov %eax, {DATA:#x}\n    "
                           + f"movzbl {SHINFO:#x}, %eax\n    mov %eax, {DATA + 4:#x}\n    "
                           + port_op(ev.EVTCHNOP_unmask, port_at=PORT_A, store=DATA + 8)
                           + wait_for_upcall() + DONE)

    assert_done(result, m)
    port = m.memory.read_u32(PORT_A)
    assert m.memory.read_u32(DATA) == 0 and m.memory.read_u32(DATA + 4) == 0   # masked: no upcall
    assert s32(m, DATA + 8) == 0 and m.memory.read_u32(COUNT) == 1              # unmask delivered it
    assert bit(m, ev.SHARED_INFO_EVTCHN_MASK, port) == 0


def test_the_per_vcpu_upcall_vector_goes_through_the_local_apic():
    vector = (f"movl $0, {ARG + 0x30:#x}\n    movb ${UPCALL_VECTOR:#x}, {ARG + 0x34:#x}\n    "
              + hypercall(NR_HVMOP, x.HVMOP_set_evtchn_upcall_vector, ARG + 0x30))
    result, m, _ = run_pvh(PRELUDE + vector + bind_ipi(PORT_A) + port_op(ev.EVTCHNOP_send, port_at=PORT_A)
                           + wait_for_upcall() + port_op(ev.EVTCHNOP_send, port_at=PORT_A)
                           + wait_for_upcall(2) + DONE)

    assert_done(result, m)
    assert m.memory.read_u32(COUNT) == 2
    assert result.stats.interrupts == {f"{UPCALL_VECTOR:#04x}": 2}
    assert m.chipset.lapic.isr == 0                                            # both EOIed


# -- Xen time --------------------------------------------------------------------------------------
def test_shared_info_carries_a_pvclock_and_the_wallclock():
    result, m, _ = run_pvh(PRELUDE + DONE)

    assert_done(result, m)
    version, _, tsc, system_time, mul, shift, flags = struct.unpack(
        "<IIQQIbB2x", m.memory.read(SHINFO + 32, 32))
    assert version % 2 == 0 and version > 0
    assert tsc == system_time                                                  # the TSC counts guest ns
    assert (mul, shift) == (1 << 31, 1)                                        # ns = (tsc << 1) * 2^31 >> 32
    wc_version, wc_sec, wc_nsec, wc_sec_hi = struct.unpack("<IIII", m.memory.read(SHINFO + 3072, 16))
    assert wc_version % 2 == 0 and (wc_sec_hi << 32 | wc_sec, wc_nsec) == (WALLCLOCK_EPOCH_S, 0)


def test_virq_timer_fires_at_the_programmed_time_through_the_callback_vector():
    deadline = DATA + 0x70
    result, m, _ = run_pvh(PRELUDE + callback_vector() + bind_virq(ev.VIRQ_TIMER, PORT_A)
                           + singleshot_in(2_000_000, deadline) + wait_for_upcall() + DONE)

    assert_done(result, m)
    due, taken = u64(m, deadline), u64(m, STAMP)
    assert due <= taken < due + 20_000                                         # within 20 us of guest time
    assert m.memory.read_u32(SEEN_PENDING) == 1 << m.memory.read_u32(PORT_A)
    assert result.stats.idle_ns > 1_000_000                                    # hlt skipped the wait
    calls = [c for c in xen_calls(m) if c.name == "vcpu_op.set_singleshot_timer"]
    assert calls and calls[0].result == 0 and calls[0].args["timeout"] == due


def test_set_timer_op_and_stop():
    deadline = DATA + 0x70
    stop = hypercall(NR_VCPUOP, 9, 0, ARG)
    # program, stop, then set_timer_op(now + 1 ms) in two registers (32-bit caller)
    timer_op = (f"rdtsc\n    add $1000000, %eax\n    adc $0, %edx\n    mov %eax, {deadline:#x}\n    mov %edx, {deadline + 4:#x}\n"
                f"    mov %eax, %ebx\n    mov %edx, %ecx\n    mov ${NR_SET_TIMER_OP}, %eax\n    vmcall\n    ")
    result, m, _ = run_pvh(PRELUDE + callback_vector() + bind_virq(ev.VIRQ_TIMER, PORT_A)
                           + singleshot_in(500_000, DATA + 0x78) + stop + timer_op
                           + wait_for_upcall() + DONE)

    assert_done(result, m)
    assert m.memory.read_u32(COUNT) == 1
    assert u64(m, deadline) <= u64(m, STAMP) < u64(m, deadline) + 20_000


def test_periodic_timer_ticks_and_a_short_period_is_refused():
    result, m, _ = run_pvh(PRELUDE + callback_vector() + bind_virq(ev.VIRQ_TIMER, PORT_A)
                           + f"movl $2000000, {ARG + 0x90:#x}\n    movl $0, {ARG + 0x94:#x}\n    "
                           + hypercall(NR_VCPUOP, 6, 0, ARG + 0x90, store=DATA)
                           + wait_for_upcall(3) + hypercall(NR_VCPUOP, 7, 0, 0)
                           + f"movl $1000, {ARG + 0x90:#x}\n    " + hypercall(NR_VCPUOP, 6, 0, ARG + 0x90, store=DATA + 4)
                           + DONE)

    assert_done(result, m)
    assert s32(m, DATA) == 0 and s32(m, DATA + 4) == EINVAL
    assert m.memory.read_u32(COUNT) == 3
    assert 6_000_000 <= u64(m, STAMP) < 6_000_000 + 2_000_000


def test_schedop_block_sleeps_until_the_timer_and_wakes_with_the_event_pending():
    deadline = DATA + 0x70
    result, m, _ = run_pvh(PRELUDE + callback_vector() + bind_virq(ev.VIRQ_TIMER, PORT_A)
                           + "cli\n    " + singleshot_in(3_000_000, deadline)
                           + hypercall(NR_SCHEDOP, x.SCHEDOP_BLOCK, 0, store=DATA)
                           + f"rdtsc\n    mov %eax, {DATA + 8:#x}\n    mov %edx, {DATA + 12:#x}\n    "
                           + f"mov {COUNT:#x}, %eax\n    mov %eax, {DATA + 16:#x}\n    "
                           + wait_for_upcall() + DONE)

    assert_done(result, m)
    assert s32(m, DATA) == 0
    woke = u64(m, DATA + 8)
    assert u64(m, deadline) <= woke < u64(m, deadline) + 20_000
    assert m.memory.read_u32(DATA + 16) == 0                 # IF was off: blocked, woken, not yet taken
    assert m.memory.read_u32(COUNT) == 1                     # taken at sti
    [block] = [c for c in xen_calls(m) if c.name == "sched_op.block"]
    assert block.args["blocked_ns"] >= 2_900_000


def test_schedop_block_with_nothing_to_wait_for_ends_the_run_idle():
    result, m, _ = run_pvh(PRELUDE + hypercall(NR_SCHEDOP, x.SCHEDOP_BLOCK, 0) + DONE)

    assert result.stop.kind == "idle" and "SCHEDOP_block" in result.stop.detail
