"""The run loop: start the engine, resume it across stops, and decide why the guest stopped.

Every stop is synchronous, so RIP is exact when the loop looks at it: hooks stop the engine from
inside (``Machine.stop``), and the wall-clock budget raises the native block hook's stop flag from a
timer thread, which stops at the next block start (the engine's own ``timeout=`` would leave RIP
stale).  One engine limit remains: a stop asked for inside an instruction hook (a device write that
powers off) takes effect at the next block start or memory access, so the instructions up to there
still run; the result's guest state is the one frozen at the instruction that asked
(``Machine.freeze_state``).  The engine runs with its exit list enabled and empty instead of an ``until`` address: an
``until`` the guest's page tables do not map leaves a phantom #PF behind at every stop
(linux-on-unicorn.md O3), and the exit list avoids it.

When ``emu_start`` returns and no hook asked for the stop, the guest executed ``hlt``: plugins
are offered it through ``hvsim_trap``; unanswered, with interrupts off it ends the run (``halt``),
with interrupts on and no interrupt source modelled it ends as ``idle``.  The loop is where interrupt injection will sit: a timer deadline raises the same
stop flag, and the loop delivers at the block boundary.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import TYPE_CHECKING

from unicorn import UcError

from .disasm import disassemble_one
from .errors import GuestMemoryError
from .native import STOPPED_BY_INSN_LIMIT, STOPPED_BY_REQUEST
from .plugin_types import Trap
from .result import GuestState, RunStats, StopReason

if TYPE_CHECKING:
    from .machine import Machine

RFLAGS_IF = 1 << 9
HLT = 0xF4


class RunLoop:
    def __init__(self, machine: "Machine"):
        self.m = machine
        self.emu_starts = 0
        self.interrupted = False
        self._deadline_passed = False

    def interrupt(self) -> None:
        """Stop the run at the next block boundary (signal-handler and thread safe)."""
        self.interrupted = True
        self.m.native.request_stop()

    def _on_deadline(self) -> None:
        self._deadline_passed = True
        self.m.native.request_stop()

    def run(self) -> tuple[StopReason, float]:
        m = self.m
        if m.entry_state is None:
            raise RuntimeError("the environment set no entry state (machine.start)")
        try:
            m.guest_mode.enter(m.entry_state, m.memory)
        except (UcError, ValueError) as exc:
            m.stop(StopReason("host-error", detail=f"could not load the entry state: {exc}"))
        rip = m.entry_rip
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
                self.emu_starts += 1
                try:
                    m.uc.emu_start(rip, 0)
                except UcError as exc:
                    if m.stop_reason is None:
                        m.stop(StopReason("host-error", detail=f"engine error at rip {m.reg('rip'):#x}: {exc}"))
                except Exception as exc:  # noqa: BLE001 - a hook's exception re-raised by the binding
                    if m.stop_reason is None:
                        m.host_traceback = traceback.format_exc()
                        m.stop(StopReason("host-error", detail=f"{type(exc).__name__}: {exc}"))
                rip = m.reg("rip")
                if m.stop_reason is None:
                    self._classify_stop(rip)
        finally:
            if timer:
                timer.cancel()
        m.flush_consoles()
        return m.stop_reason, time.monotonic() - started

    def _classify_stop(self, rip: int) -> None:
        m = self.m
        stopped_by = m.native.control.stopped_by
        if stopped_by == STOPPED_BY_INSN_LIMIT:
            m.stop(StopReason("budget", detail=f"instruction budget of {m.config.max_instructions} reached"))
        elif stopped_by == STOPPED_BY_REQUEST and self.interrupted:
            m.stop(StopReason("interrupted", detail="interrupted by the user"))
        elif stopped_by == STOPPED_BY_REQUEST and self._deadline_passed:
            m.stop(StopReason("timeout", detail=f"wall-clock budget of {m.config.timeout} s reached"))
        elif stopped_by == STOPPED_BY_REQUEST:
            return   # a stop for the loop itself (event delivery); resume
        elif self._after_hlt(rip):
            trap = Trap(kind="hlt", rip=rip - 1, length=1, code=bytes([HLT]))
            if m.pm.hook.hvsim_trap(machine=m, trap=trap):
                return   # a plugin woke the guest (it may have changed registers); resume
            if m.reg("rflags") & RFLAGS_IF:
                m.stop(StopReason("idle", detail=f"hlt at {rip - 1:#x} with interrupts on and no interrupt source"))
            else:
                m.stop(StopReason("halt", detail=f"hlt at {rip - 1:#x} with interrupts off"))
        else:
            m.stop(StopReason("host-error", detail=f"the engine stopped at {rip:#x} for no known reason"))

    def _after_hlt(self, rip: int) -> bool:
        try:
            return self.m.vmem.read(self.m.code_address(rip - 1), 1)[0] == HLT
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
    )
