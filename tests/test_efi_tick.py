"""The efi firmware's 10 ms timer tick (PIT IRQ0 through the 8259s at vector 0x68, as OVMF), driven by
small EFI applications: timer events wake WaitForEvent at the tick, notification functions run
asynchronously while the application computes, TPL_HIGH_LEVEL holds the tick back, an application
that installs a short IDT with interrupts on faults at the first tick, ExitBootServices stops the
tick.  Guest time is read in the guest with RDTSC (the TSC counts guest nanoseconds)."""

from __future__ import annotations

from hvsim import MachineConfig
from hvsim.abi import efi
from hvsim.api import Run

from efi_apps import bs, efi_app_and_symbols

MS = 1_000_000
TICK_NS = 10 * MS
RFLAGS_IF = 1 << 9
TIMER_VECTOR = "0x68"

# rdtsc -> RAX (the full 64-bit TSC); clobbers RDX.
TSC = "rdtsc; shl $32, %rdx; or %rdx, %rax"
# Spin (no service calls) until the TSC passes \\ns nanoseconds after the value in \\base.
SPIN_MACRO = f"""
.macro spin_until base, ns
    mov \\base, %r14
    add $\\ns, %r14
1:  {TSC}
    cmp %r14, %rax
    jb 1b
.endm
"""


def run_app(body: str, config: MachineConfig | None = None):
    app, sym = efi_app_and_symbols(SPIN_MACRO + body)
    prepared = Run("efi", app, config or MachineConfig())
    result = prepared.execute()
    fw = prepared.machine.plugin_state["efi"]
    read = lambda name, index=0: prepared.machine.memory.read_u64(sym[name] + 8 * index)  # noqa: E731
    return result, fw, read


def calls(result) -> list[str]:
    return [e.name for e in result.events if e.kind == "Call"]


def create_event(kind: int, tpl: int = 0, notify: str = "0", context: str = "0") -> str:
    """CreateEvent(kind, tpl, notify, context, &event); ``notify`` and ``context`` are symbols."""
    notify_arg = f"lea {notify}(%rip), %r8" if notify != "0" else "xor %r8d, %r8d"
    context_arg = f"lea {context}(%rip), %r9" if context != "0" else "xor %r9d, %r9d"
    return f"""
        mov ${kind}, %ecx
        mov ${tpl}, %edx
        {notify_arg}
        {context_arg}
        lea event(%rip), %rax
        mov %rax, 0x20(%rsp)
        call *{bs('CreateEvent')}(%r13)
    """


def set_timer(kind: int, hundreds_of_ns: int) -> str:
    return f"""
        mov event(%rip), %rcx
        mov ${kind}, %edx
        mov ${hundreds_of_ns}, %r8
        call *{bs('SetTimer')}(%r13)
    """


# A notification function that records when it ran (TSC), RFLAGS and the TPL it runs at (RaiseTPL's
# answer), and counts its calls in the u64 its context points at.
NOTIFY = f"""
notify:
    push %rbx
    sub $0x20, %rsp
    mov %rdx, %rbx
    mov (%rbx), %rcx
    lea times(%rip), %r8
    {TSC}
    mov %rax, (%r8,%rcx,8)
    pushfq
    pop %rax
    lea flags(%rip), %r8
    mov %rax, (%r8,%rcx,8)
    mov $31, %ecx
    mov bs_table(%rip), %rax
    call *{bs('RaiseTPL')}(%rax)
    mov (%rbx), %rcx
    lea tpls(%rip), %r8
    mov %rax, (%r8,%rcx,8)
    mov %rax, %rcx
    mov bs_table(%rip), %rax
    call *{bs('RestoreTPL')}(%rax)
    incq (%rbx)
    add $0x20, %rsp
    pop %rbx
    ret
"""
DATA = """
.balign 8
bs_table: .quad 0
event: .quad 0
count: .quad 0
index: .quad 0
status: .quad 0
t0: .quad 0
t1: .quad 0
entry_flags: .quad 0
flags_seen: .quad 0
count_seen: .quad 0
times: .skip 64
flags: .skip 64
tpls: .skip 64
"""
START = f"""
    mov ST_BS(%rbx), %r13
    mov %r13, bs_table(%rip)
    pushfq
    pop %rax
    mov %rax, entry_flags(%rip)
"""


def test_wait_for_event_on_a_relative_timer_wakes_at_the_tick_after_its_trigger_time():
    result, fw, read = run_app(START + create_event(efi.EVT_TIMER) + set_timer(efi.TIMER_RELATIVE, 250_000) + f"""
        {TSC}
        mov %rax, t0(%rip)
        mov $1, %ecx
        lea event(%rip), %rdx
        lea index(%rip), %r8
        call *{bs('WaitForEvent')}(%r13)
        mov %rax, status(%rip)
        {TSC}
        mov %rax, t1(%rip)
        xor %eax, %eax
        jmp done
    """ + DATA)
    assert result.stop.kind == "poweroff", result.stop
    assert read("entry_flags") & RFLAGS_IF                  # images start with interrupts on
    assert read("status") == efi.SUCCESS and read("index") == 0
    # Triggered 25 ms after SetTimer: signalled by the first tick after that, the one at ~30 ms.
    assert 25 * MS <= read("t1") - read("t0") <= 25 * MS + TICK_NS
    # Ticks at 10, 20, 30 ms, and one at entry: programming counter 0 in mode 3 raises its output,
    # an IRQ0 edge the 8259 latches while masked and delivers once the image runs with IF set.
    assert fw.ticks == 4
    assert result.stats.interrupts == {TIMER_VECTOR: 4}
    assert calls(result) == ["BS.CreateEvent", "BS.SetTimer", "BS.WaitForEvent"]   # one call, not a poll


def test_a_periodic_notification_runs_at_the_tick_while_the_app_spins_without_calling_the_firmware():
    result, fw, read = run_app(
        START + create_event(efi.EVT_TIMER | efi.EVT_NOTIFY_SIGNAL, efi.TPL_CALLBACK, "notify", "count")
        + f"""
        {TSC}
        mov %rax, t0(%rip)
    """ + set_timer(efi.TIMER_PERIODIC, 200_000) + """
    spin:
        cmpq $3, count(%rip)
        jb spin
    """ + set_timer(efi.TIMER_CANCEL, 0) + """
        xor %eax, %eax
        jmp done
    """ + NOTIFY + DATA)
    assert result.stop.kind == "poweroff", result.stop
    assert read("count") == 3
    for i in range(3):
        due = read("t0") + 20 * MS * (i + 1)
        assert due <= read("times", i) <= due + TICK_NS, i            # at the tick after each period
        assert read("tpls", i) == efi.TPL_CALLBACK                    # run at the event's TPL
        assert read("flags", i) & RFLAGS_IF                           # with interrupts on
    # Between SetTimer and the cancel the app called nothing: only the notify function's calls.
    between = calls(result)[2:-1]
    assert between == ["BS.RaiseTPL", "BS.RestoreTPL"] * 3
    assert fw.ticks >= 6


def test_raise_tpl_high_level_holds_the_tick_back_until_restore_tpl():
    result, fw, read = run_app(
        START + create_event(efi.EVT_TIMER | efi.EVT_NOTIFY_SIGNAL, efi.TPL_CALLBACK, "notify", "count")
        + f"""
        mov $31, %ecx
        call *{bs('RaiseTPL')}(%r13)
        mov %rax, %r15
        pushfq
        pop %rax
        mov %rax, flags_seen(%rip)
    """ + set_timer(efi.TIMER_RELATIVE, 0) + f"""
        {TSC}
        mov %rax, t0(%rip)
        spin_until t0(%rip), {50 * MS}
        mov count(%rip), %rax
        mov %rax, count_seen(%rip)
        {TSC}
        mov %rax, t0(%rip)
        mov %r15, %rcx
        call *{bs('RestoreTPL')}(%r13)
        {TSC}
        mov %rax, t1(%rip)
    wait:
        cmpq $0, count(%rip)
        je wait
        xor %eax, %eax
        jmp done
    """ + NOTIFY + DATA)
    assert result.stop.kind == "poweroff", result.stop
    assert not read("flags_seen") & RFLAGS_IF        # TPL_HIGH_LEVEL: interrupts off
    assert read("count_seen") == 0                   # 50 ms at TPL_HIGH_LEVEL: no tick, no notification
    # RestoreTPL turned interrupts on: the IRQ0 held back since the first 10 ms is taken at once,
    # before the call has returned, and the tick signals the timer and runs its notification.
    assert read("t0") <= read("times", 0) <= read("t1")
    assert read("count") == 1 and read("tpls", 0) == efi.TPL_CALLBACK


def test_raise_tpl_notify_lets_the_tick_signal_but_defers_the_callback_notification_to_restore_tpl():
    result, fw, read = run_app(
        START + create_event(efi.EVT_TIMER | efi.EVT_NOTIFY_SIGNAL, efi.TPL_CALLBACK, "notify", "count")
        + f"""
        mov ${efi.TPL_NOTIFY}, %ecx
        call *{bs('RaiseTPL')}(%r13)
        mov %rax, %r15
    """ + set_timer(efi.TIMER_RELATIVE, 0) + f"""
        {TSC}
        mov %rax, t0(%rip)
        spin_until t0(%rip), {50 * MS}
        mov count(%rip), %rax
        mov %rax, count_seen(%rip)
        mov %r15, %rcx
        call *{bs('RestoreTPL')}(%r13)
        mov count(%rip), %rax
        mov %rax, status(%rip)
        xor %eax, %eax
        jmp done
    """ + NOTIFY + DATA)
    assert result.stop.kind == "poweroff", result.stop
    assert fw.ticks >= 5                            # TPL_NOTIFY keeps interrupts on: the tick ran
    assert read("count_seen") == 0                  # but a TPL_CALLBACK notification waits ...
    assert read("status") == 1                      # ... until RestoreTPL, before it returns
    assert read("times", 0) > read("t0") + 50 * MS


def _idt_app(gates: int) -> str:
    handlers = "\n".join(f"h{v}: movq ${v}, vector(%rip)\n    jmp fault" for v in range(gates))
    table = ", ".join(f"h{v}" for v in range(gates))
    return START + f"""
        lea idt(%rip), %rdi
        lea handlers(%rip), %rsi
        xor %ecx, %ecx
    1:  mov (%rsi,%rcx,8), %rax
        mov %ax, (%rdi)
        mov %cs, %dx
        mov %dx, 2(%rdi)
        movw $0x8E00, 4(%rdi)
        shr $16, %rax
        mov %ax, 6(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        movl $0, 12(%rdi)
        add $16, %rdi
        inc %ecx
        cmp ${gates}, %ecx
        jb 1b
        {TSC}
        mov %rax, t0(%rip)
        lidt idtr(%rip)
        spin_until t0(%rip), {50 * MS}
        xor %eax, %eax
        jmp done
    fault:
        mov (%rsp), %rax
        mov %rax, error_code(%rip)
        {TSC}
        mov %rax, t1(%rip)
        cli
        hlt
    {handlers}
    .balign 8
    handlers: .quad {table}
    vector: .quad -1
    error_code: .quad -1
    idtr: .word {gates * 16 - 1}
          .quad idt
    .balign 16
    idt: .skip {gates * 16}
    """ + DATA


def test_an_app_that_loads_a_32_vector_idt_with_interrupts_on_faults_at_the_first_tick():
    """The bug our probe had under OVMF: its EFI entry loaded a 32-vector IDT while interrupts
    were on, and the firmware's timer interrupt (vector 0x68) is beyond its limit."""
    result, fw, read = run_app(_idt_app(32))
    assert result.stop.kind == "halt", result.stop                  # the app's own fault handler stopped it
    # Beyond the IDT limit: #GP (error code: IDT vector 0x68, EXT) on hardware; the core delivers #DF.
    assert read("vector") in (8, 13)
    if read("vector") == 13:
        assert read("error_code") >> 3 == 0x68
    assert read("t1") - read("t0") <= TICK_NS                       # at the first tick
    assert fw.ticks == 1                # only the tick taken at entry, before the app's lidt


def test_the_same_app_with_a_full_idt_takes_the_tick_on_its_own_gate():
    result, fw, read = run_app(_idt_app(0x69))
    assert result.stop.kind == "halt", result.stop
    assert read("vector") == 0x68


def test_exit_boot_services_stops_the_tick_and_leaves_interrupts_off():
    result, fw, read = run_app(START + f"""
        mov $25000, %ecx
        call *{bs('Stall')}(%r13)
        movq $0x4000, size(%rip)
        lea size(%rip), %rcx
        lea map(%rip), %rdx
        lea key(%rip), %r8
        lea dsize(%rip), %r9
        lea dversion(%rip), %rax
        mov %rax, 0x20(%rsp)
        call *{bs('GetMemoryMap')}(%r13)
        mov %r12, %rcx
        mov key(%rip), %rdx
        call *{bs('ExitBootServices')}(%r13)
        mov %rax, status(%rip)
        pushfq
        pop %rax
        mov %rax, flags_seen(%rip)
        in $0x21, %al
        movzbl %al, %eax
        mov %rax, count_seen(%rip)
        {TSC}
        mov %rax, t0(%rip)
        sti
        spin_until t0(%rip), {50 * MS}
        cli
        xor %eax, %eax
        jmp done
    .balign 8
    size: .quad 0
    key: .quad 0
    dsize: .quad 0
    dversion: .quad 0
    map: .skip 0x4000
    """ + DATA)
    assert result.stop.kind == "poweroff", result.stop
    assert read("status") == efi.SUCCESS
    assert fw.ticks >= 1                                  # the tick ran during boot services
    assert not read("flags_seen") & RFLAGS_IF             # ExitBootServices returns with interrupts off
    assert read("count_seen") & 1                         # IRQ0 masked at the master 8259
    assert result.stats.interrupts == {TIMER_VECTOR: fw.ticks}   # 50 ms with IF on and no interrupt after
