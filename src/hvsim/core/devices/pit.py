"""The 8254 programmable interval timer (ports 0x40-0x43) and system control port B (0x61).

Each counter's state is an exact function of guest time: the number of input clocks a running
counter has seen is ``floor(elapsed_ns * 1193182 / 1e9)`` measured from the moment it was last
started, so reading it never accumulates rounding.  Counter 0's OUT drives ``irq0``; its next
output change is scheduled on the guest clock only while counter 0 holds a count (a periodic mode,
or a one-shot that has not fired), so an idle or unprogrammed PIT costs nothing.  Counter 1 (DRAM
refresh on old PCs) has no output connected.  Counter 2's gate is port 0x61 bit 0 and its OUT is
readable as port 0x61 bit 5; nothing is scheduled for it, it is computed when read.

Modelled: modes 0-5 (3 is a square wave with the odd-count asymmetry; 6 and 7 alias 2 and 3;
in mode 0 writing the first byte of a new count stops the count), the gate (pauses modes 0/4,
stops and reloads modes 2/3 and forces OUT high, triggers modes 1/5 on a rising edge), LSB / MSB /
LSB-then-MSB access, the counter latch command, the read-back command (status and/or count,
several counters at once), the status byte (OUT, null count, RW, mode, BCD), count 0 meaning
65536 (10000 in BCD), BCD counting.

Not modelled: a count written in modes 2/3 while counting takes effect immediately (the 8254 waits
for the end of the current period unless the control word was rewritten; Linux always rewrites
it); the one-clock delay between loading and the first decrement; counts of 1 in modes 2 and 3
(illegal per the datasheet): OUT stays high, no edges.

Port 0x61 (IBM PC/AT, Intel PIIX "NMI status and control"): bit 0 counter 2 gate, bit 1 speaker
data enable (stored), bits 2-3 parity/IOCHK check enables (stored), bit 4 refresh toggle
(flips every 15.085 us of guest time), bit 5 counter 2 OUT, bits 6-7 (SERR/IOCHK status) read 0.

Sources: Intel 8254 datasheet (order no. 231164); Linux arch/x86/kernel/tsc.c
(quick_pit_calibrate, pit_calibrate_tsc) and drivers/clocksource/i8253.c for what the kernel uses.
"""

from __future__ import annotations

from .isa_bus import BytePorts

from typing import Callable

from .line import IrqLine

PIT_HZ = 1_193_182                    # input clock (14.31818 MHz / 12), IBM PC
NS_PER_S = 1_000_000_000
COUNTER_PORTS = (0x40, 0x41, 0x42)
CONTROL_PORT = 0x43
PORT_B = 0x61

# Control word (8254 datasheet): SC bits 7:6, RW bits 5:4, M bits 3:1, BCD bit 0.
SC_READ_BACK = 3
RW_LATCH, RW_LSB, RW_MSB, RW_LSB_MSB = 0, 1, 2, 3
READ_BACK_NO_COUNT = 0x20             # read-back bits are active low
READ_BACK_NO_STATUS = 0x10
STATUS_OUT = 0x80
STATUS_NULL_COUNT = 0x40

# Port 0x61 bits.
PORT_B_GATE2 = 0x01
PORT_B_SPEAKER = 0x02
PORT_B_WRITABLE = 0x0F
PORT_B_REFRESH = 0x10
PORT_B_OUT2 = 0x20
REFRESH_HALF_PERIOD_NS = 15_085       # the refresh request toggle's half period


def ticks_between(start_ns: int, now_ns: int) -> int:
    """Input clocks seen in ``[start_ns, now_ns)``."""
    return max(now_ns - start_ns, 0) * PIT_HZ // NS_PER_S


def ns_for_ticks(ticks: int) -> int:
    """The least elapsed time after which ``ticks`` input clocks have been seen."""
    return -(-ticks * NS_PER_S // PIT_HZ)


def from_bcd(value: int) -> int:
    return sum(((value >> (4 * i)) & 0xF) * 10 ** i for i in range(4))


def to_bcd(value: int) -> int:
    return sum(((value // 10 ** i) % 10) << (4 * i) for i in range(4))


class PitCounter:
    """One counter: its programming, latches and the clocks it has counted."""

    def __init__(self, gate: bool, on_change: Callable[[], None] | None = None):
        self.on_change = on_change      # called when the output waveform is (re)defined
        self.gate = gate
        self.mode = 0
        self.rw = RW_LSB_MSB
        self.bcd = False
        self.initial = 0                # count register as written (0 = maximum)
        self.loaded = False             # a count has been loaded since the control word
        self.null_count = True
        self.running = False            # counting (armed for modes 1/5)
        self.triggered = False          # modes 1/5: a gate edge has started the count
        self.base_ticks = 0             # clocks counted before the current run started
        self.run_start = 0              # guest ns the current run started
        self.write_low = None           # LSB written, MSB awaited (LSB-then-MSB)
        self.read_high = False          # next unlatched read returns the MSB (LSB-then-MSB)
        self.latched: list[int] = []    # bytes the latch or read-back holds, first out first
        self.status_latched: int | None = None

    # --- time ------------------------------------------------------------------------------
    @property
    def period(self) -> int:
        if self.bcd:
            return from_bcd(self.initial) or 10_000
        return self.initial or 0x10000

    @property
    def modulus(self) -> int:
        return 10_000 if self.bcd else 0x10000

    def elapsed(self, now: int) -> int:
        """Clocks counted since the count was loaded (or the gate triggered it)."""
        if not self.running:
            return self.base_ticks
        # ticks_between inline (guest time never runs backwards): Linux reads the counter ~40k
        # times in a boot, to calibrate the TSC and in its delays
        return self.base_ticks + (now - self.run_start) * PIT_HZ // NS_PER_S

    def _start(self, now: int) -> None:
        self.base_ticks, self.run_start, self.running = 0, now, True

    def _pause(self, now: int) -> None:
        self.base_ticks, self.running = self.elapsed(now), False

    def _resume(self, now: int) -> None:
        self.run_start, self.running = now, True

    def count_at(self, now: int) -> int:
        """The counting element's value (binary), as a read would see it."""
        if not self.loaded or (self.mode in (1, 5) and not self.triggered):
            return self.period % self.modulus
        d, n = self.elapsed(now), self.period
        if self.mode == 2:
            return n - d % n
        if self.mode == 3:
            return n - (2 * d) % n if n > 1 else n
        return (n - d) % self.modulus

    def out_at(self, now: int) -> bool:
        if not self.loaded:
            return self.mode != 0
        if self.mode in (1, 5) and not self.triggered:
            return True
        d, n = self.elapsed(now), self.period
        if self.mode in (0, 1):
            return d >= n
        if self.mode == 2:
            return n < 2 or d % n != n - 1
        if self.mode == 3:
            return n < 2 or d % n < (n + 1) // 2
        return d != n                   # modes 4, 5: one clock low at terminal count

    def next_change(self, d: int) -> tuple[int, bool] | None:
        """(clock count, new OUT level) of the first output change after ``d`` clocks; None if
        OUT will not change without new programming or a gate edge."""
        if not self.loaded or not self.running or (self.mode in (1, 5) and not self.triggered):
            return None
        n = self.period
        if self.mode in (0, 1):
            return (n, True) if d < n else None
        if self.mode in (4, 5):
            if d < n:
                return n, False
            if d == n:
                return n + 1, True
            return None
        if n < 2:
            return None
        phase, start = d % n, d - d % n
        low_from = n - 1 if self.mode == 2 else (n + 1) // 2
        if phase < low_from:
            return start + low_from, False
        return start + n, True

    def time_of(self, ticks: int) -> int:
        """Guest ns at which the counter has counted ``ticks`` clocks (it must be running)."""
        return self.run_start + ns_for_ticks(ticks - self.base_ticks)

    # --- programming ---------------------------------------------------------------------
    def control(self, rw: int, mode: int, bcd: bool) -> None:
        self.rw, self.mode, self.bcd = rw, mode, bcd
        self.loaded, self.null_count, self.running, self.triggered = False, True, False, False
        self.base_ticks = 0
        self.write_low, self.read_high = None, False
        self._changed()

    def write_count(self, value: int, now: int) -> None:
        if self.rw == RW_LSB:
            self._load(value, now)
        elif self.rw == RW_MSB:
            self._load(value << 8, now)
        elif self.write_low is None:
            self.write_low = value
            if self.mode == 0 and self.loaded:        # first byte stops a mode-0 count
                self._pause(now)
                self.loaded = False
                self._changed()
        else:
            low, self.write_low = self.write_low, None
            self._load(low | value << 8, now)

    def _load(self, count: int, now: int) -> None:
        self.initial, self.loaded, self.null_count = count, True, False
        if self.mode in (1, 5):
            self.triggered, self.running, self.base_ticks = False, False, 0
        else:
            self._start(now)
            if not self.gate:
                self._pause(now)
        self._changed()

    def set_gate(self, level: bool, now: int) -> None:
        if level == self.gate:
            return
        self.gate = level
        if not self.loaded:
            return
        if self.mode in (0, 4):
            self._resume(now) if level else self._pause(now)
        elif self.mode in (2, 3):
            self._start(now) if level else self._pause(now)
            if not level:
                self.base_ticks = 0   # stopped: OUT high, reloads on the next rising edge
        elif level:                   # modes 1, 5: a rising edge (re)triggers
            self.triggered = True
            self._start(now)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # --- reading -------------------------------------------------------------------------
    def latch_count(self, now: int) -> None:
        if self.latched:
            return                    # a second latch before reading is ignored
        count = self.count_at(now)
        value = to_bcd(count) if self.bcd else count & 0xFFFF
        if self.rw == RW_LSB:
            self.latched = [value & 0xFF]
        elif self.rw == RW_MSB:
            self.latched = [value >> 8 & 0xFF]
        else:
            self.latched = [value & 0xFF, value >> 8 & 0xFF]

    def latch_status(self, now: int) -> None:
        if self.status_latched is not None:
            return
        self.status_latched = ((STATUS_OUT if self.out_at(now) else 0) |
                               (STATUS_NULL_COUNT if self.null_count else 0) |
                               self.rw << 4 | self.mode << 1 | int(self.bcd))

    def read(self, now: int) -> int:
        if self.status_latched is not None:
            value, self.status_latched = self.status_latched, None
            return value
        if self.latched:
            return self.latched.pop(0)
        count = self.count_at(now)
        value = to_bcd(count) if self.bcd else count & 0xFFFF
        rw = self.rw
        if rw == RW_LSB_MSB:
            high = self.read_high
            self.read_high = not high
            return value >> 8 & 0xFF if high else value & 0xFF
        return value & 0xFF if rw == RW_LSB else value >> 8 & 0xFF


class Pit8254(BytePorts):
    """The PIT and port 0x61; see the module docstring."""

    def __init__(self, clock, *, irq0: IrqLine):
        self.clock = clock
        self.irq0 = irq0
        self.counters = [PitCounter(True, self._reschedule_irq0),   # gates 0 and 1 are tied high
                         PitCounter(True),
                         PitCounter(False)]                          # gate 2 is port 0x61 bit 0
        self.port_b = 0
        self.ports = (*COUNTER_PORTS, CONTROL_PORT, PORT_B)
        self._timer = None

    # --- counter 0 output --------------------------------------------------------------------
    def _reschedule_irq0(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counter, now = self.counters[0], self.clock.now()
        self.irq0.set(counter.out_at(now))
        self._schedule_after(counter.elapsed(now))

    def _schedule_after(self, ticks: int) -> None:
        counter = self.counters[0]
        change = counter.next_change(ticks)
        if change is not None:
            at, level = change
            self._timer = self.clock.schedule(counter.time_of(at), lambda: self._irq0_edge(at, level))

    def _irq0_edge(self, ticks: int, level: bool) -> None:
        """The scheduled output change at ``ticks`` clocks: drive the level it stands for and
        schedule the change after it (counted from the event, not from now, so a late callback
        never loses an edge)."""
        self._timer = None
        self.irq0.set(level)
        self._schedule_after(ticks)

    # --- ports ---------------------------------------------------------------------------------
    def _read_byte(self, port: int) -> int:
        now = self.clock.now()
        if port in COUNTER_PORTS:
            return self.counters[port - COUNTER_PORTS[0]].read(now)
        if port == PORT_B:
            refresh = PORT_B_REFRESH if (now // REFRESH_HALF_PERIOD_NS) & 1 else 0
            out2 = PORT_B_OUT2 if self.counters[2].out_at(now) else 0
            return self.port_b | refresh | out2
        return 0xFF                   # 0x43 is write-only; other ports are not ours

    def _write_byte(self, port: int, value: int) -> None:
        now = self.clock.now()
        if port in COUNTER_PORTS:
            self.counters[port - COUNTER_PORTS[0]].write_count(value, now)
        elif port == CONTROL_PORT:
            self._control(value, now)
        elif port == PORT_B:
            self.port_b = value & PORT_B_WRITABLE
            self.counters[2].set_gate(bool(value & PORT_B_GATE2), now)

    def _control(self, value: int, now: int) -> None:
        select = value >> 6
        if select == SC_READ_BACK:
            for index in range(3):
                if value & (2 << index):
                    if not value & READ_BACK_NO_STATUS:
                        self.counters[index].latch_status(now)
                    if not value & READ_BACK_NO_COUNT:
                        self.counters[index].latch_count(now)
            return
        counter = self.counters[select]
        rw = (value >> 4) & 3
        if rw == RW_LATCH:
            counter.latch_count(now)
            return
        mode = (value >> 1) & 7
        if mode > 5:
            mode -= 4                 # 6 and 7 are 2 and 3
        counter.control(rw, mode, bool(value & 1))
