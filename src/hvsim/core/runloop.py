"""The run loop: start the engine, resume it across stops, and decide why the guest stopped.

Every stop is synchronous, so RIP is exact when the loop looks at it: hooks stop the engine from
inside (``Machine.stop``), and the wall-clock budget raises the native block hook's stop flag from a
timer thread, which stops at the next block start (the engine's own ``timeout=`` would leave RIP
stale).  One engine limit remains: a stop asked for inside an instruction hook (a device write that
powers off) takes effect at the next block start or memory access, so the instructions up to there
still run; the result's guest state is the one frozen at the instruction that asked
(``Machine.freeze_state``).  The engine runs with its exit list enabled and empty instead of an ``until`` address: an
``until`` the guest's page tables do not map leaves a phantom #PF behind at every stop
(linux-on-unicorn.md O3), and the exit list avoids it; the entry (svm.py's ``vmrun``) stops on the
block hook's deadline, not on an exit, for the same reason.

Guest time and interrupts (clock.py): the native block hook also stops at the block boundary where
the guest clock's next event falls due, and, while an interrupt waits, at the first block entered
with RFLAGS.IF set.  At every such stop the loop runs the due events (devices raise their lines),
then delivers the interrupt the CPU's interrupt input (``Machine.interrupt_source``: the local
APIC) offers, through the guest IDT, unless the STI / MOV SS shadow holds it back for one more
instruction.  Interrupts are therefore taken only at block boundaries, with RIP exact.

When ``emu_start`` returns and no hook asked for the stop, the guest executed ``hlt``: plugins
are offered it through ``hvsim_trap``; unanswered, with interrupts on the guest waits: guest time
skips to the next event until an interrupt is pending (``nanosleep`` costs no wall time), and the
run ends as ``idle`` when nothing can ever wake it; with interrupts off it ends as ``halt``.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import TYPE_CHECKING

from unicorn import UcError
from unicorn.unicorn_const import UC_ERR_EXCEPTION, UC_ERR_FETCH_PROT

from .disasm import disassemble_one
from .errors import GuestMemoryError
from .events import Fault
from .exceptions import DeliveryError, NotModelled, vector_name
from .native import (
    STOPPED_BY_BUDGET_NEAR, STOPPED_BY_DEADLINE, STOPPED_BY_IF_WINDOW, STOPPED_BY_INSN_LIMIT, STOPPED_BY_REQUEST,
    STOPPED_BY_SMC, VTLB_FAULT,
)
from .plugin_types import Trap
from .result import GuestState, RunStats, StopReason

if TYPE_CHECKING:
    from .machine import Machine

RFLAGS_IF = 1 << 9
HLT = 0xF4
# An idle guest whose events never raise an interrupt (a periodic timer whose line is masked) would
# skip time forever; after this much guest time, or this many events, without an interrupt it is
# stopped as idle.
MAX_IDLE_NS = 3600 * 10**9
MAX_IDLE_EVENTS = 100_000


class RunLoop:
    def __init__(self, machine: "Machine"):
        self.m = machine
        self.emu_starts = 0
        self.interrupted = False
        self._deadline_passed = False
        self._native_tlb_at = None      # fill the TLB natively again once `blocks` reaches this

    def interrupt(self) -> None:
        """Stop the run at the next block boundary (signal-handler and thread safe)."""
        self.interrupted = True
        self.m.run_ending = True
        self.m.native.request_stop()

    def _on_deadline(self) -> None:
        self._deadline_passed = True
        self.m.run_ending = True
        self.m.native.request_stop()

    def run(self) -> tuple[StopReason, float]:
        m = self.m
        if m.entry_state is None:
            raise RuntimeError("the environment set no entry state (machine.start)")
        control = m.native.control
        deadline, control.deadline_blocks = control.deadline_blocks, control.blocks + 1
        try:   # the vmrun stub's block runs, and the block hook stops the engine before the guest's first
            m.guest_mode.enter(m.entry_state, m.memory)
        except (UcError, ValueError) as exc:
            m.stop(StopReason("host-error", detail=f"could not load the entry state: {exc}"))
        finally:
            control.deadline_blocks = deadline
        if m.stop_reason is None and m.config.tlb == "native":
            m.native.enable_virtual_tlb()
        rip = m.entry_rip
        m.native.attach(m.code_address, m.vmem.read, lambda: m.code_segment()[1])
        timer = None
        if m.config.timeout is not None:
            timer = threading.Timer(m.config.timeout, self._on_deadline)
            timer.daemon = True
        started = time.monotonic()
        if timer:
            timer.start()
        try:
            while m.stop_reason is None:
                if not (self.interrupted or self._deadline_passed):
                    m.native.rearm()
                if self._native_tlb_at is not None and control.blocks >= self._native_tlb_at:
                    self._native_tlb_at = None
                    m.native.resume_virtual_tlb()
                self.emu_starts += 1
                control.vtlb_event = 0
                try:
                    m.uc.emu_start(rip, 0)
                except UcError as exc:
                    if m.stop_reason is None and exc.errno == UC_ERR_EXCEPTION and control.vtlb_event:
                        rip = m.reg("rip")
                        self._tlb_fill_refused(rip)
                        continue
                    if m.stop_reason is None and exc.errno == UC_ERR_FETCH_PROT:
                        m.stop(StopReason("bad-access", detail=f"instruction fetch at {m.reg('rip'):#x} from "
                                                                "device memory, which hvsim cannot execute"))
                    if m.stop_reason is None:
                        m.stop(StopReason("host-error", detail=f"engine error at rip {m.reg('rip'):#x}: {exc}"))
                except Exception as exc:  # noqa: BLE001 - a hook's exception re-raised by the binding
                    if m.stop_reason is None:
                        m.host_traceback = traceback.format_exc()
                        m.stop(StopReason("host-error", detail=f"{type(exc).__name__}: {exc}"))
                rip = m.reg("rip")
                if m.stop_reason is None and control.stopped_by == STOPPED_BY_BUDGET_NEAR:
                    m.native.count_each_instruction()   # the budget ends inside the next block
                    continue
                if m.stop_reason is None and control.stopped_by == STOPPED_BY_SMC:
                    m.native.smc_restarted(rip)   # a store into its own block: what ran of the block
                    continue
                if m.stop_reason is None:
                    self._classify_stop(rip)
                if m.stop_reason is None:
                    m.clock.run_due(lambda: m.run_ending)   # a Stall of an hour can leave 10^5 due
                    self._deliver_interrupt()
                    rip = m.reg("rip")
        finally:
            if timer:
                timer.cancel()
        if control.stopped_by not in (STOPPED_BY_REQUEST, STOPPED_BY_DEADLINE, STOPPED_BY_IF_WINDOW,
                                      STOPPED_BY_INSN_LIMIT, STOPPED_BY_BUDGET_NEAR, STOPPED_BY_SMC):
            # stopped inside a block (a hook asked for it, or hlt): the budget counts what the engine
            # ran, up to where it stopped (which may be past the instruction that asked)
            m.native.settle_stop(rip)
        m.flush_consoles()
        return m.stop_reason, time.monotonic() - started

    def _tlb_fill_refused(self, rip: int) -> None:
        """The native TLB filler refused a fill (_native.c vtlb_fill) and the engine stopped with RIP
        at the instruction that asked for it, whose accesses the engine's own walker makes when the
        run resumes.  For a fault (VTLB_FAULT) that walker raises it, with the CR2 the filler cannot
        know, and the native filler takes over again after one more block (the handler's first).
        A load or store was refused inside a block already counted, which the engine enters again
        at ``rip``; an instruction fetch, before its block."""
        m = self.m
        control = m.native.control
        if not control.vtlb_fetch:
            m.native.block_entered_again(rip)
        if control.vtlb_event == VTLB_FAULT:
            self._native_tlb_at = control.blocks + 1
            m.clock.stop_after_block()
        else:                            # handed over for good: invlpg needs no exit any more
            m.guest_mode.stop_intercepting_invlpg(m.engine)

    def _classify_stop(self, rip: int) -> None:
        m = self.m
        stopped_by = m.native.control.stopped_by
        if stopped_by == STOPPED_BY_INSN_LIMIT:
            m.stop(StopReason("budget", detail=f"instruction budget of {m.config.max_instructions} reached"))
        elif stopped_by == STOPPED_BY_REQUEST and self.interrupted:
            m.stop(StopReason("interrupted", detail="interrupted by the user"))
        elif stopped_by == STOPPED_BY_REQUEST and self._deadline_passed:
            m.stop(StopReason("timeout", detail=f"wall-clock budget of {m.config.timeout} s reached"))
        elif stopped_by in (STOPPED_BY_REQUEST, STOPPED_BY_DEADLINE, STOPPED_BY_IF_WINDOW):
            return   # a stop for the loop itself (events, interrupt delivery); resume
        elif self._after_hlt(rip):
            trap = Trap(kind="hlt", rip=rip - 1, length=1, code=bytes([HLT]))
            if m.pm.hook.hvsim_trap(machine=m, trap=trap):
                return   # a plugin woke the guest (it may have changed registers); resume
            if m.reg("rflags") & RFLAGS_IF:
                if not self._wait_for_interrupt():
                    why = "no interrupt source" if m.clock.next_deadline() is None else "no interrupt arriving"
                    m.stop(StopReason("idle", detail=f"hlt at {rip - 1:#x} with interrupts on and {why}"))
            else:
                m.stop(StopReason("halt", detail=f"hlt at {rip - 1:#x} with interrupts off"))
        else:
            m.stop(StopReason("host-error", detail=f"the engine stopped at {rip:#x} for no known reason"))

    def _wait_for_interrupt(self) -> bool:
        """``hlt`` with interrupts on: skip guest time from event to event until an interrupt is
        pending (True), or report that none will come (False)."""
        m = self.m
        started = m.clock.now()
        for _ in range(MAX_IDLE_EVENTS):
            m.clock.run_due()
            source = m.interrupt_source
            if source is not None and source.interrupt_pending():
                return True
            if self.interrupted or self._deadline_passed:
                return True     # resume: the native hook stops at once and the stop is classified
            if m.clock.now() - started > MAX_IDLE_NS or not m.clock.skip_to_next():
                return False
        return False

    def _deliver_interrupt(self) -> None:
        """Deliver the interrupt the CPU's interrupt input offers, if the guest can take it now;
        otherwise make the native hook stop when it can."""
        m = self.m
        control = m.native.control
        control.want_if = 0
        source = m.interrupt_source
        if source is None or not source.interrupt_pending():
            return
        nmi = source.nmi_pending()        # not masked by IF (NMI blocking is not modelled)
        if not nmi and not m.reg("rflags") & RFLAGS_IF:
            control.want_if = 1
            return
        if m.engine.interrupt_shadow():
            m.clock.stop_after_block()
            return
        vector = source.acknowledge()
        if vector is None:
            return
        rip = m.reg("rip")
        try:
            delivered = m.delivery.deliver(vector, None, rip, kind="external")
        except NotModelled as exc:
            m.stop(StopReason("unhandled-trap", detail=f"interrupt {vector_name(vector)} at {rip:#x}: {exc}"))
            return
        except DeliveryError as exc:
            m.stop(StopReason("triple-fault", detail=f"interrupt {vector_name(vector)} at {rip:#x}: {exc}"))
            return
        m.interrupts_delivered += 1
        m.interrupt_counts[vector] = m.interrupt_counts.get(vector, 0) + 1
        if delivered.vector != vector:     # the IDT refused the interrupt: the fault it raised went in
            m.faults_delivered += 1
            m.emit(Fault(vector=delivered.vector, name=vector_name(delivered.vector), rip=rip,
                         error_code=delivered.error_code, cr2=None, detail=f"delivering interrupt {vector:#x}"))
        if source.interrupt_pending():
            control.want_if = 1

    def _after_hlt(self, rip: int) -> bool:
        """Whether the instruction before ``rip`` is the ``hlt`` the engine stopped after (read as
        the engine fetched it: ``Machine.read_code``)."""
        try:
            return self.m.read_code(rip - 1, 1)[0] == HLT
        except GuestMemoryError:
            return False


def capture_state(m: "Machine") -> GuestState:
    registers = m.stop_registers or m.registers()
    rip = registers.get("rip", 0)
    try:
        base, bits = m.code_segment()
    except Exception:  # noqa: BLE001 - an engine that cannot answer: describe by EFER/CR0 alone
        base, bits = 0, 64 if registers.get("efer", 0) & (1 << 10) else 32
    if not registers.get("cr0", 0) & 1:
        mode = "real"
    elif registers.get("efer", 0) & (1 << 10):
        mode = "long64" if bits == 64 else f"compat{bits}"
    else:
        mode = f"protected{bits}"
    try:
        code = m.vmem.read(base + rip, 15)
    except GuestMemoryError as exc:
        return GuestState(registers, mode, f"(instruction unreadable: {exc})")
    text, length = disassemble_one(code, rip, bits)
    return GuestState(registers, mode, text, code[: length or 15].hex())


def run_stats(loop: RunLoop, wall: float) -> RunStats:
    m = loop.m
    control = m.native.control
    return RunStats(
        wall_seconds=round(wall, 6),
        emu_starts=loop.emu_starts,
        blocks=control.blocks,
        instructions=control.insns if m.config.max_instructions is not None else None,
        faults_delivered=m.faults_delivered,
        guest_ns=m.clock.now(),
        idle_ns=m.clock.skipped_ns,
        ns_per_block=m.clock.ns_per_block,
        interrupts_delivered=m.interrupts_delivered,
        interrupts={f"{v:#04x}": n for v, n in sorted(m.interrupt_counts.items())},
        tsc_reads=control.tsc_reads,
    )
