"""Guest time, the event queue and interrupt delivery, as small guests observe them: the TSC is
guest time, timers fire at the programmed guest time, idle ``hlt`` skips to the next event, the STI
shadow holds an interrupt back for one instruction, and a storm is stopped by the budget with its
trace kept.  Guests are assembly (tests/guestcode.py) with a local APIC at 0xfee00000."""

from __future__ import annotations

from hvsim.core.clock import GuestClock

from guestcode import DATA, run_raw

LAPIC = 0xFEE00000
# xAPIC registers (Intel SDM vol. 3, table 11-1)
EOI, SVR, LVT_TIMER, TIMER_INIT, TIMER_DIV = 0xB0, 0xF0, 0x320, 0x380, 0x3E0


def u64(machine, address):
    return machine.memory.read_u64(address)


class FakeControl:
    blocks = 0
    deadline_blocks = 0
    skipped_ns = 0
    ns_per_block = 0


def test_clock_orders_events_cancels_and_sets_the_native_deadline():
    control = FakeControl()
    clock = GuestClock(control)
    fired = []
    clock.schedule(500, lambda: fired.append("b"))
    doomed = clock.schedule(100, lambda: fired.append("x"))
    clock.schedule(200, lambda: fired.append("a"))
    doomed.cancel()
    assert control.deadline_blocks == 20          # 200 ns at 10 ns per block
    control.blocks = 25
    assert clock.run_due() == 1 and fired == ["a"]
    assert control.deadline_blocks == 50
    assert clock.skip_to_next() and clock.now() == 500 and clock.skipped_ns == 250
    clock.run_due()
    assert fired == ["a", "b"] and clock.next_deadline() is None and not clock.skip_to_next()


def test_clock_advance_passes_idle_time_and_due_events_run_at_the_next_boundary():
    control = FakeControl()
    clock = GuestClock(control)
    fired = []
    clock.schedule(1_000, lambda: fired.append(clock.now()))
    clock.advance(5_000)                              # a firmware Stall: no block executed
    assert clock.now() == 5_000 and clock.skipped_ns == 5_000 and fired == []
    assert control.deadline_blocks == 0               # due already: stop at the very next block
    clock.run_due()
    assert fired == [5_000] and control.deadline_blocks == (1 << 64) - 1


RDTSC_LOOP = """
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r8
    mov $1000, %ecx
1:  dec %ecx
    jnz 1b
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    sub %r8, %rax
    mov %rax, 0x80000
    mov %r8, 0x80008
    cli
    hlt
"""


def test_tsc_is_guest_time_and_two_runs_agree():
    result, m, _ = run_raw(RDTSC_LOOP)
    assert result.stop.kind == "halt", result.stop
    # the loop body is one translation block: 1000 iterations, 10 ns each (plus the block after it)
    assert 10_000 <= u64(m, DATA) <= 10_030
    assert result.stats.tsc_reads == 2 and result.stats.guest_ns == result.stats.blocks * 10
    again, m2, _ = run_raw(RDTSC_LOOP)
    assert (u64(m2, DATA), u64(m2, DATA + 8), again.stats.blocks) == (u64(m, DATA), u64(m, DATA + 8), result.stats.blocks)


LAPIC_SETUP = f"""
    mov ${LAPIC:#x}, %rbx               /* the local APIC's registers, through %rbx */
    movl $0x1ff, {SVR:#x}(%rbx)         /* software enable, spurious vector 0xff */
    movl $0xb, {TIMER_DIV:#x}(%rbx)     /* divide by 1: one count per ns */
"""

TIMER_HANDLER = f"""
timer:
    push %rax
    push %rdx
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, 0x80100(,%r12,8)        /* guest time of each tick */
    mov 16(%rsp), %rax
    mov %rax, 0x80200(,%r12,8)        /* the interrupted RIP */
    inc %r12
    movl $0, {EOI:#x}(%rbx)
    pop %rdx
    pop %rax
    iretq
"""


def test_lapic_one_shot_timer_fires_at_the_programmed_guest_time_while_idle():
    source = LAPIC_SETUP + f"""
    xor %r12, %r12
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, 0x80000
    movl $0x40, {LVT_TIMER:#x}(%rbx)     /* one-shot, vector 0x40 */
    movl $1000000, {TIMER_INIT:#x}(%rbx) /* 1 ms */
    sti
    hlt
after_hlt:
    cli
    hlt
""" + TIMER_HANDLER
    result, m, symbols = run_raw(source, map_bytes=4 << 30, gates={0x40: "timer"})
    assert result.stop.kind == "halt", result.stop
    assert u64(m, DATA + 0x100 + 0 * 8) - u64(m, DATA) in range(1_000_000, 1_000_100)
    assert u64(m, DATA + 0x200) == symbols["after_hlt"]       # taken in hlt, returns after it
    assert result.stats.interrupts_delivered == 1 and result.stats.interrupts == {"0x40": 1}
    assert result.stats.idle_ns >= 990_000                   # the wait cost no executed blocks


def test_lapic_periodic_timer_ticks_at_its_period_and_a_long_sleep_costs_no_wall_time():
    source = LAPIC_SETUP + f"""
    xor %r12, %r12
    movl $0x20041, {LVT_TIMER:#x}(%rbx)  /* periodic, vector 0x41 */
    movl $10000000, {TIMER_INIT:#x}(%rbx) /* 10 ms */
    sti
1:  hlt
    cmp $100, %r12                    /* one guest second */
    jb 1b
    cli
    hlt
""" + TIMER_HANDLER.replace("0x80100(,%r12,8)", "0x80100(,%r12,8)").replace("timer:", "tick:")
    result, m, _ = run_raw(source, map_bytes=4 << 30, gates={0x41: "tick"}, timeout=20)
    assert result.stop.kind == "halt", result.stop
    ticks = [u64(m, DATA + 0x100 + 8 * i) for i in range(5)]
    assert all(b - a == 10_000_000 for a, b in zip(ticks, ticks[1:])), ticks
    assert result.stats.guest_ns >= 1_000_000_000 and result.stats.interrupts == {"0x41": 100}
    assert result.stats.wall_seconds < 5


def test_sti_shadow_holds_a_pending_interrupt_until_after_the_next_instruction():
    # The timer expires while interrupts are off; `sti; nop` must run the nop before the interrupt.
    source = LAPIC_SETUP + f"""
    xor %r12, %r12
    movl $0x42, {LVT_TIMER:#x}(%rbx)
    movl $100, {TIMER_INIT:#x}(%rbx)
    mov $2000, %ecx
1:  dec %ecx
    jnz 1b                            /* 20 us with IF=0: the interrupt waits */
    sti
in_shadow:
    nop
after_shadow:
    nop
    cli
    hlt
""" + TIMER_HANDLER
    result, m, symbols = run_raw(source, map_bytes=4 << 30, gates={0x42: "timer"})
    assert result.stop.kind == "halt", result.stop
    assert result.stats.interrupts == {"0x42": 1}
    assert u64(m, DATA + 0x200) == symbols["after_shadow"]


def test_a_level_interrupt_storm_is_stopped_by_the_budget_and_keeps_its_trace():
    # The handler acknowledges the local APIC but the timer fires again at once (periodic, count 1):
    # the guest never leaves the handler loop; the instruction budget ends the run.
    source = LAPIC_SETUP + f"""
    xor %r12, %r12
    movl $0x20043, {LVT_TIMER:#x}(%rbx)
    movl $1, {TIMER_INIT:#x}(%rbx)
    sti
1:  jmp 1b
storm:
    inc %r12
    movl $0, {EOI:#x}(%rbx)
    iretq
"""
    result, m, _ = run_raw(source, map_bytes=4 << 30, gates={0x43: "storm"}, max_instructions=20_000)
    assert result.stop.kind == "budget", result.stop
    assert result.stats.interrupts_delivered > 1000 and m.reg("r12") == result.stats.interrupts_delivered
    assert result.state is not None and result.state.registers["rip"]


def test_hlt_with_interrupts_on_and_nothing_scheduled_is_idle():
    result, _, _ = run_raw(LAPIC_SETUP + "sti\nhlt\n", map_bytes=4 << 30)
    assert result.stop.kind == "idle" and "no interrupt source" in result.stop.detail


PIT_TICK_HANDLER = """
tick:
    push %rax
    push %rdx
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, 0x80100(,%r12,8)
    inc %r12
    EOI_HERE
    pop %rdx
    pop %rax
    iretq
"""
PIC_INIT = """
    mov $0x11, %al; out %al, $0x20      /* ICW1: edge, cascade, ICW4 follows */
    mov $0x20, %al; out %al, $0x21      /* ICW2: IRQ0-7 at vectors 0x20-0x27 */
    mov $0x04, %al; out %al, $0x21      /* ICW3: slave on IR2 */
    mov $0x01, %al; out %al, $0x21      /* ICW4: 8086 mode */
    mov $0x11, %al; out %al, $0xa0
    mov $0x28, %al; out %al, $0xa1
    mov $0x02, %al; out %al, $0xa1
    mov $0x01, %al; out %al, $0xa1
    mov $0xff, %al; out %al, $0xa1      /* slave: all masked */
"""
PIT_1MS_PERIODIC = """
    mov $0x34, %al; out %al, $0x43      /* counter 0, LSB then MSB, mode 2 */
    mov $1193, %ax                      /* 1193 / 1.193182 MHz = 999.847 us */
    out %al, $0x40
    mov %ah, %al
    out %al, $0x40
    sti
1:  hlt
    cmp $10, %r12
    jb 1b
    cli
    hlt
"""
PIT_PERIOD_NS = 1193 * 10**9 / 1_193_182


def assert_pit_ticks(m, count=10):
    ticks = [u64(m, DATA + 0x100 + 8 * i) for i in range(count)]
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert all(abs(gap - PIT_PERIOD_NS) <= 20 for gap in gaps[1:]), gaps


def test_pit_channel0_ticks_through_the_8259_and_the_apic_virtual_wire():
    # What the BIOS leaves: LINT0 passes the 8259's INTR to the CPU as ExtINT.
    source = "xor %r12, %r12\n" + PIC_INIT + """
    mov $0xfe, %al; out %al, $0x21      /* master: only IRQ0 */
""" + PIT_1MS_PERIODIC + PIT_TICK_HANDLER.replace("EOI_HERE", "mov $0x20, %al\n    out %al, $0x20")
    result, m, _ = run_raw(source, gates={0x20: "tick"})
    assert result.stop.kind == "halt", result.stop
    assert result.stats.interrupts.get("0x20", 0) >= 10
    assert_pit_ticks(m)


def test_pit_channel0_ticks_through_the_io_apic_on_gsi2():
    # The MADT's interrupt source override: ISA IRQ0 arrives on I/O APIC pin 2.
    source = "xor %r12, %r12\n" + PIC_INIT + f"""
    mov $0xff, %al; out %al, $0x21      /* master: all masked, the I/O APIC routes the PIT */
    mov $0xfec00000, %rcx
    movl $0x14, (%rcx)                  /* IOREGSEL: redirection entry 2, low dword */
    movl $0x30, 0x10(%rcx)              /* IOWIN: vector 0x30, fixed, edge, unmasked */
    movl $0x15, (%rcx)
    movl $0, 0x10(%rcx)                 /* destination APIC 0 */
    mov ${LAPIC:#x}, %rbx
""" + PIT_1MS_PERIODIC + PIT_TICK_HANDLER.replace("EOI_HERE", f"movl $0, {EOI:#x}(%rbx)")
    result, m, _ = run_raw(source, map_bytes=4 << 30, gates={0x30: "tick"})
    assert result.stop.kind == "halt", result.stop
    assert result.stats.interrupts.get("0x30", 0) >= 10 and "0x20" not in result.stats.interrupts
    assert_pit_ticks(m)


def test_pit_channel2_out2_in_port_0x61_rises_after_the_programmed_count():
    # The way Linux's pit_calibrate_tsc waits: counter 2 in mode 0, gate from port 0x61, poll OUT2.
    source = """
    mov $0x01, %al; out %al, $0x61      /* gate 2 on, speaker off */
    mov $0xb0, %al; out %al, $0x43      /* counter 2, LSB then MSB, mode 0 */
    mov $11932, %ax                     /* 10.000 ms */
    out %al, $0x42
    mov %ah, %al
    out %al, $0x42
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r8
1:  in $0x61, %al
    test $0x20, %al
    jz 1b
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    sub %r8, %rax
    mov %rax, 0x80000
    cli
    hlt
"""
    result, m, _ = run_raw(source)
    assert result.stop.kind == "halt", result.stop
    assert abs(u64(m, DATA) - 11932 * 10**9 / 1_193_182) <= 100


def test_a_guest_that_disables_its_local_apic_reads_nothing_there_and_takes_8259_interrupts_directly():
    # IA32_APIC_BASE bit 11 clear: the APIC's window is empty (all ones) and the 8259's INTR is the
    # CPU's interrupt pin (SDM vol. 3, 11.4.3).
    source = f"""
    xor %r12, %r12
    mov $0x1b, %ecx
    rdmsr
    mov %eax, 0x80010                   /* the APIC base as the BIOS left it */
    and $~0x800, %eax
    wrmsr
    mov ${LAPIC:#x}, %rbx
    mov 0x30(%rbx), %eax                /* the version register: nothing answers */
    mov %eax, 0x80018
""" + PIC_INIT + """
    mov $0xfe, %al; out %al, $0x21
""" + PIT_1MS_PERIODIC + PIT_TICK_HANDLER.replace("EOI_HERE", "mov $0x20, %al\n    out %al, $0x20")
    result, m, _ = run_raw(source, map_bytes=4 << 30, gates={0x20: "tick"})
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u32(DATA + 0x10) == 0xFEE00900            # enabled, BSP, at 0xfee00000
    assert m.memory.read_u32(DATA + 0x18) == 0xFFFFFFFF
    assert result.stats.interrupts.get("0x20", 0) >= 10
    assert_pit_ticks(m)


def test_hlt_waiting_on_a_masked_periodic_timer_ends_as_idle_without_spinning_forever():
    # The timer keeps counting while its LVT entry is masked, but it can never wake the guest.
    source = LAPIC_SETUP + f"""
    movl $0x30044, {LVT_TIMER:#x}(%rbx)   /* periodic, masked, vector 0x44 */
    movl $1000, {TIMER_INIT:#x}(%rbx)     /* every microsecond */
    sti
    hlt
"""
    result, _, _ = run_raw(source, map_bytes=4 << 30, timeout=60)
    assert result.stop.kind == "idle" and "no interrupt arriving" in result.stop.detail, result.stop
    assert result.stats.wall_seconds < 30 and result.stats.interrupts_delivered == 0
