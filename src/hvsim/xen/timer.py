"""Xen's per-vCPU timers (xen/common/sched/core.c, vcpu.h): the single-shot timer that
VCPUOP_set_singleshot_timer and set_timer_op program and the periodic timer of
VCPUOP_set_periodic_timer, both in guest nanoseconds (system time = ``GuestClock.now()``), both
firing ``fire(vcpu)`` (the hypervisor raises VIRQ_TIMER on that vCPU).

The periodic timer starts off (Linux stops it before using the single-shot one anyway); a
periodic timer's n-th event falls at start + n * period, so runs stay deterministic.
"""

from __future__ import annotations

from typing import Callable

# vcpu.h: struct vcpu_set_singleshot_timer.flags; sched.c: the shortest period accepted
VCPU_SSHOTTMR_future = 1 << 0
MIN_PERIOD_NS = 1_000_000              # VCPUOP_set_periodic_timer: period_ns < MILLISECS(1) is -EINVAL


class VcpuTimers:
    def __init__(self, clock, vcpus: int, fire: Callable[[int], None]):
        self.clock = clock
        self.fire = fire
        self.singleshot = [None] * vcpus
        self.periodic = [None] * vcpus
        self.period = [0] * vcpus
        self.fired = 0

    def set_singleshot(self, vcpu: int, at_ns: int) -> None:
        """Arm the single-shot timer at ``at_ns`` (in the past: it fires at the next boundary)."""
        self.stop_singleshot(vcpu)
        self.singleshot[vcpu] = self.clock.schedule(at_ns, lambda: self._singleshot(vcpu))

    def stop_singleshot(self, vcpu: int) -> None:
        if self.singleshot[vcpu] is not None:
            self.singleshot[vcpu].cancel()
            self.singleshot[vcpu] = None

    def set_periodic(self, vcpu: int, period_ns: int) -> None:
        self.stop_periodic(vcpu)
        self.period[vcpu] = period_ns
        self._arm_periodic(vcpu, self.clock.now() + period_ns)

    def stop_periodic(self, vcpu: int) -> None:
        if self.periodic[vcpu] is not None:
            self.periodic[vcpu].cancel()
            self.periodic[vcpu] = None
        self.period[vcpu] = 0

    def _singleshot(self, vcpu: int) -> None:
        self.singleshot[vcpu] = None
        self.fired += 1
        self.fire(vcpu)

    def _arm_periodic(self, vcpu: int, at: int) -> None:
        def tick():
            self._arm_periodic(vcpu, at + self.period[vcpu])
            self.fired += 1
            self.fire(vcpu)

        self.periodic[vcpu] = self.clock.schedule(at, tick)
