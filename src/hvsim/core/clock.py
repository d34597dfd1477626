"""Guest time and the one event queue every device schedules on.

Guest time is the guest's own: executed translation blocks x ``NS_PER_BLOCK`` (counted by the
native block hook, _native.c), plus the nanoseconds skipped while the guest idled in ``hlt`` with
interrupts on.  It never reads the host clock, so two runs of the same kernel and configuration see
the same time at the same point of their execution.  A block that a stop interrupts is not counted
(it is counted when it runs), so wall-clock stops do not perturb guest time.  The TSC is guest time
in nanoseconds (a 1 GHz TSC).  A ``rep stos``/``rep movs`` runs one element per block in the engine;
when the native hook does a run of elements at once (_native.c, rep_string) it counts one block per
element and stops short of the next deadline, so guest time is the same with the fast path as without.

Devices call ``schedule(at_ns, callback)``; the callback runs at the first block boundary at or
after ``at_ns`` (the native hook stops the engine there synchronously, see ``RunLoop``), or when an
idle ``hlt`` skips time to it.  Callbacks may schedule and cancel further events and raise
interrupt lines; they must not touch the engine.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable

NS_PER_BLOCK = 10
NO_DEADLINE = (1 << 64) - 1
TSC_HZ = 1_000_000_000            # the TSC counts guest nanoseconds
# What the machine's clocks (RTC, EFI GetTime, a hypervisor's wallclock) read at guest time 0:
# 2026-01-01T00:00:00Z, fixed so that runs are repeatable.
WALLCLOCK_EPOCH_S = 1_767_225_600


class Timer:
    """A scheduled callback; ``cancel()`` is idempotent and safe from inside any callback."""

    __slots__ = ("at", "callback", "cancelled", "_seq", "_clock")

    def __init__(self, at: int, seq: int, callback: Callable[[], None], clock: "GuestClock"):
        self.at, self._seq, self.callback, self.cancelled, self._clock = at, seq, callback, False, clock

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._clock._arm()      # the native deadline follows the earliest live event

    def __lt__(self, other: "Timer") -> bool:
        return (self.at, self._seq) < (other.at, other._seq)


class GuestClock:
    """``now()`` in guest nanoseconds and the event queue; ``control`` is the native control block
    (``hvsim.core.native.NativeControl``), whose ``blocks`` counter is the clock's source and whose
    ``deadline_blocks`` the clock keeps equal to its earliest event."""

    def __init__(self, control, ns_per_block: int = NS_PER_BLOCK):
        self._control = control
        self.ns_per_block = ns_per_block
        control.ns_per_block = ns_per_block
        control.skipped_ns = 0
        self._queue: list[Timer] = []
        self._seq = itertools.count()
        self._stop_block = NO_DEADLINE     # a one-off stop asked for by the run loop (stop_after_block)
        self._control.deadline_blocks = NO_DEADLINE

    @property
    def skipped_ns(self) -> int:
        """Guest time spent idle in ``hlt`` (kept in the control block: the native TSC reads it)."""
        return self._control.skipped_ns

    def now(self) -> int:
        return self._control.blocks * self.ns_per_block + self._control.skipped_ns

    def stop_after_block(self) -> None:
        """Stop once more after the next block (the run loop retries an interrupt held back by the
        STI / MOV SS shadow, which the engine confines to a one-instruction block)."""
        self._stop_block = self._control.blocks + 1
        self._arm()

    def schedule(self, at_ns: int, callback: Callable[[], None]) -> Timer:
        timer = Timer(max(int(at_ns), 0), next(self._seq), callback, self)
        heapq.heappush(self._queue, timer)
        self._arm()
        return timer

    def schedule_in(self, delay_ns: int, callback: Callable[[], None]) -> Timer:
        return self.schedule(self.now() + max(int(delay_ns), 0), callback)

    def next_deadline(self) -> int | None:
        """The time of the earliest live event, or ``None``."""
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0].at if self._queue else None

    def run_due(self, give_up: Callable[[], bool] | None = None) -> int:
        """Run every event due now, in deadline order; return how many ran.  ``give_up`` is asked
        every 1024 events: when it answers true (the run is ending) the rest stay due."""
        ran = 0
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > self.now():
                break
            if give_up is not None and ran % 1024 == 1023 and give_up():
                break
            timer = heapq.heappop(self._queue)
            timer.cancelled = True
            timer.callback()
            ran += 1
        self._arm()
        return ran

    def skip_to_next(self) -> bool:
        """Idle: advance guest time to the earliest event (without executing anything).  False
        when there is no event to wait for."""
        deadline = self.next_deadline()
        if deadline is None:
            return False
        if deadline > self.now():
            self._control.skipped_ns += deadline - self.now()
        return True

    def advance(self, ns: int) -> None:
        """Let ``ns`` of guest time pass without executing anything, as an idle ``hlt`` does (a
        firmware's ``Stall`` uses it); events it passes over run at the next block boundary."""
        if ns > 0:
            self._control.skipped_ns += int(ns)
            self._arm()

    def _arm(self) -> None:
        """Make the native hook stop at the block boundary where the earliest event falls due."""
        if self._stop_block <= self._control.blocks:
            self._stop_block = NO_DEADLINE
        deadline = self.next_deadline()
        blocks = NO_DEADLINE
        if deadline is not None:
            ns = max(deadline - self._control.skipped_ns, 0)
            blocks = -(-ns // self.ns_per_block)
        self._control.deadline_blocks = min(blocks, self._stop_block)
