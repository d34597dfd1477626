"""The instruction budget counted per translated block equals the per-instruction count.

``--max-instructions N`` charges each block's instruction count in the native block hook and counts
per instruction only inside the block where the budget ends.  The reference is the old mode, a
native ``UC_HOOK_CODE`` counter on every instruction (``NativeHooks.PER_INSTRUCTION``).  For each
guest and budget both runs must stop at the same place: the same stop, instruction count, block
count, registers and guest memory, and a budget stop with exactly N instructions."""

from __future__ import annotations

import pytest

from hvsim import MachineConfig, run
from hvsim.core.native import NativeHooks

from guestcode import DATA, run_raw

LAPIC = 0xFEE00000
EOI, SVR, LVT_TIMER, TIMER_INIT, TIMER_DIV = 0xB0, 0xF0, 0x320, 0x380, 0x3E0

# Mid-block exits of every kind, timer interrupts at block boundaries, rep strings and code that
# rewrites itself into the same bytes' length with another instruction count.
MIXED_GUEST = f"""
    mov ${LAPIC:#x}, %r9
    movl $0x1ff, {SVR:#x}(%r9)
    movl $0xb, {TIMER_DIV:#x}(%r9)
    movl $0x20042, {LVT_TIMER:#x}(%r9)      /* periodic, vector 0x42 */
    movl $3333, {TIMER_INIT:#x}(%r9)        /* every 3.333 us of guest time */
    xor %r12, %r12
    xor %r13, %r13
    mov $0x8000000000000000, %r8             /* non-canonical: loads from it are #GP(0) */
    mov $200, %r14
    sti
loop:
    mov $1, %eax
    inc %r15
    mov (%r8), %rax                           /* #GP in the middle of the block; skipped */
    add $2, %r15
    xor %eax, %eax
    cpuid                                     /* an SVM intercept in the middle of a block */
    add %rax, %r15
    mov $0x1b, %ecx
    rdmsr                                     /* an MSR intercept */
    add %rax, %r15
    mov $0x80400, %rdi
    mov %r14, %rcx
    mov $0x5a, %al
    rep stosb                                 /* one instruction per iteration, as the engine runs it */
    mov $0x80400, %rsi
    mov $0x81400, %rdi
    mov %r14, %rcx
    rep movsb
    xor %ecx, %ecx
    rep stosb                                 /* RCX = 0: runs once, does nothing */
    xorb $0xf6, smc(%rip)                     /* 66 90 (one nop) <-> 90 90 (two) */
    jmp smc                                   /* in another block than the store (see the note) */
smc:
    .byte 0x66, 0x90
    inc %r13
    dec %r14
    jnz loop
    cli
    mov %r12, {DATA:#x}
    mov %r13, {DATA + 8:#x}
    hlt
timer:
    inc %r12
    movl $0, {EOI:#x}(%r9)
    iretq
gp:
    addq $3, 8(%rsp)                          /* past the 3-byte load */
    add $8, %rsp                              /* the error code */
    iretq
"""
GATES = {13: "gp", 0x42: "timer"}


def raw(per_instruction: bool, monkeypatch, budget: int | None):
    monkeypatch.setattr(NativeHooks, "PER_INSTRUCTION", per_instruction)
    result, m, _ = run_raw(MIXED_GUEST, map_bytes=4 << 30, gates=GATES, timeout=None, max_instructions=budget)
    memory = m.memory.read(DATA, 0x2000)
    return result, memory


def observed(result, memory=b""):
    s = result.stats
    return (result.stop.kind, s.instructions, s.blocks, s.interrupts, s.faults_delivered,
            result.state.registers, memory)


@pytest.fixture(scope="module")
def mixed_total():
    """The mixed guest's whole run, counted per instruction (it halts before any budget below)."""
    mp = pytest.MonkeyPatch()
    try:
        result, memory = raw(True, mp, 10**12)
        new, new_memory = raw(False, mp, 10**12)
    finally:
        mp.undo()
    return result, memory, new, new_memory


def test_the_mixed_guest_runs_to_its_end_with_the_same_count(mixed_total):
    old, old_memory, new, new_memory = mixed_total
    assert old.stop.kind == "halt", old.stop
    assert old.stats.interrupts.get("0x42", 0) > 20 and old.stats.faults_delivered >= 200
    assert int.from_bytes(old_memory[8:16], "little") == 200
    assert observed(new, new_memory) == observed(old, old_memory)


@pytest.mark.parametrize("fraction", [0.0001, 0.137, 0.5, 0.777, 0.9999])
def test_a_budget_stop_is_exact_and_the_same_as_per_instruction(mixed_total, monkeypatch, fraction):
    total = mixed_total[0].stats.instructions
    budget = max(1, int(total * fraction))
    old, old_memory = raw(True, monkeypatch, budget)
    new, new_memory = raw(False, monkeypatch, budget)
    assert new.stop.kind == "budget" and new.stats.instructions == budget, new.stop
    assert observed(new, new_memory) == observed(old, old_memory)


def test_every_budget_across_a_stretch_stops_where_per_instruction_does(mixed_total, monkeypatch):
    # Consecutive budgets: every instruction of a few blocks (faults, intercepts, rep iterations,
    # the rewritten nops) as the last one.
    start = mixed_total[0].stats.instructions // 3
    for budget in range(start, start + 40):
        old, _ = raw(True, monkeypatch, budget)
        new, _ = raw(False, monkeypatch, budget)
        assert new.stats.instructions == budget
        assert new.state.registers == old.state.registers, budget


def probe(per_instruction: bool, monkeypatch, budget: int, spin: int = 1000):
    monkeypatch.setattr(NativeHooks, "PER_INSTRUCTION", per_instruction)
    return run("bare_metal", None, MachineConfig(max_instructions=budget, cmdline=f"probe.spin={spin}",
                                                 timeout=None))


@pytest.mark.parametrize("budget", [1, 1000, 123_457, 10**12])
def test_the_probe_counts_the_same_per_block_as_per_instruction(monkeypatch, budget):
    old = probe(True, monkeypatch, budget)
    new = probe(False, monkeypatch, budget)
    assert new.stop.kind == ("poweroff" if budget == 10**12 else "budget"), new.stop
    if budget < 10**12:
        assert new.stats.instructions == budget
    assert observed(new) == observed(old)
    assert new.console() == old.console()


def test_the_probe_spin_loop_counts_four_instructions_an_iteration(monkeypatch):
    one = probe(False, monkeypatch, 10**12, spin=20_000)
    two = probe(False, monkeypatch, 10**12, spin=40_000)
    assert two.stats.instructions - one.stats.instructions == 4 * 20_000


# A store into its own translated block: the engine abandons the store, leaves the block and runs the
# store again in a block of its own (QEMU's precise self-modifying code), so the instructions after
# the store in the first block did not run and are not counted.  Both counters count the abandoned
# store as begun (it is run again), like the per-instruction hook that sees it twice.
SMC_GUEST = f"""
    mov $300, %r14
    xor %r13, %r13
    xor %r15, %r15
loop:
    inc %r15
    xorb $0xf6, smc(%rip)                     /* rewrites the next instruction of its own block */
smc:
    .byte 0x66, 0x90                          /* 66 90 (one nop) <-> 90 90 (two) */
    inc %r13
    add %r13, %r15
    dec %r14
    jnz loop
    mov $300, %r14
head:
    xorb $0xf6, smc2(%rip)                    /* the first instruction of its block */
smc2:
    .byte 0x90, 0x90
    inc %r13
    dec %r14
    jnz head
    mov %r13, {DATA:#x}
    mov %r15, {DATA + 8:#x}
    hlt
"""


def smc(per_instruction: bool, monkeypatch, budget: int):
    monkeypatch.setattr(NativeHooks, "PER_INSTRUCTION", per_instruction)
    result, m, _ = run_raw(SMC_GUEST, timeout=None, max_instructions=budget)
    return result, m.memory.read(DATA, 16), m.native


def test_a_store_into_its_own_block_counts_the_same_as_per_instruction(monkeypatch):
    old, old_memory, _ = smc(True, monkeypatch, 10**12)
    new, new_memory, native = smc(False, monkeypatch, 10**12)
    assert old.stop.kind == "halt", old.stop
    assert int.from_bytes(old_memory[:8], "little") == 600
    assert native.control.smc_restarts == 600 and not native._per_instruction   # settled in the hook
    assert observed(new, new_memory) == observed(old, old_memory)
    total = old.stats.instructions
    for budget in [1, 7, total // 5, total // 3 + 1, total // 2, total - 3]:
        old, old_memory, _ = smc(True, monkeypatch, budget)
        new, new_memory, _ = smc(False, monkeypatch, budget)
        assert new.stop.kind == "budget" and new.stats.instructions == budget, (budget, new.stop)
        assert observed(new, new_memory) == observed(old, old_memory), budget
