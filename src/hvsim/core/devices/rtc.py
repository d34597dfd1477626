"""The MC146818-compatible CMOS real-time clock and its 128 bytes of RAM (ports 0x70/0x71).

The time is ``start_time`` (Unix seconds at guest time 0) plus whole seconds of guest time plus an
offset the guest sets by writing the time registers.  The update of the time registers happens at
each whole second of guest time; UIP (register A bit 7) is set during the 244 us before it, so a
reader that polls UIP (Linux's mc146818_avoid_UIP) waits at most that long and finds it clear the
rest of the second.

Modelled: seconds/minutes/hours/day of week/day of month/month/year (0x00-0x09) and century
(0x32), in BCD or binary (B.DM) and 24- or 12-hour format (B.24/12, bit 7 of the hour = PM);
alarm registers with the 0xC0-0xFF "don't care" codes; register A (UIP read-only, divider and
rate select stored); B (SET stops updates and lets the guest write a new time, which takes effect
when SET is cleared; setting SET clears UIE; PIE/AIE/UIE enable the interrupt sources; SQWE and DSE
stored); C (IRQF/PF/AF/UF, cleared by reading, which lowers ``irq8``); D (VRT, battery good).
Periodic (rate from A's RS bits, 32.768 kHz time base), alarm and update-ended interrupts drive
``irq8`` while their flag and enable are both set.  The flags are computed from guest time when
read, so events are scheduled only while an interrupt is enabled.  Index port bit 7 (NMI mask) is
stored.  The rest of the RAM is plain storage.

Not modelled: the divider chain's reset/test settings (A bits 6:4 are stored, the clock runs
whatever they say), daylight-saving adjustment (DSE), the square-wave output pin, the 1984 us
update cycle itself (the update is instantaneous at the second boundary), the extended RAM bank
at 0x72/0x73.  The time registers reflect a format change in B at once (the chip does not convert
them; software rewrites them after such a change).

Sources: Motorola MC146818A datasheet; Dallas DS12887 datasheet (UIE cleared by SET, century
byte); Linux drivers/rtc/rtc-mc146818-lib.c (mc146818_get_time, mc146818_avoid_UIP) and
arch/x86/kernel/rtc.c.
"""

from __future__ import annotations

from .isa_bus import BytePorts

import calendar
import time

from .line import IrqLine

INDEX_PORT, DATA_PORT = 0x70, 0x71
NMI_DISABLE = 0x80
CMOS_SIZE = 128
NS_PER_S = 1_000_000_000

# Register indices (MC146818A; century byte at 0x32 as on IBM PC/AT BIOSes).
REG_SECONDS, REG_SECONDS_ALARM = 0x00, 0x01
REG_MINUTES, REG_MINUTES_ALARM = 0x02, 0x03
REG_HOURS, REG_HOURS_ALARM = 0x04, 0x05
REG_WEEKDAY, REG_DAY, REG_MONTH, REG_YEAR = 0x06, 0x07, 0x08, 0x09
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
REG_CENTURY = 0x32
TIME_REGISTERS = (REG_SECONDS, REG_MINUTES, REG_HOURS, REG_WEEKDAY, REG_DAY, REG_MONTH, REG_YEAR,
                  REG_CENTURY)

A_UIP = 0x80
A_WRITABLE = 0x7F
A_RATE_MASK = 0x0F
A_DEFAULT = 0x26            # 32.768 kHz time base, 1024 Hz periodic rate
B_SET, B_PIE, B_AIE, B_UIE = 0x80, 0x40, 0x20, 0x10
B_DM_BINARY, B_24H = 0x04, 0x02
B_DEFAULT = B_24H           # BCD, 24-hour
C_IRQF, C_PF, C_AF, C_UF = 0x80, 0x40, 0x20, 0x10
D_VRT = 0x80
HOUR_PM = 0x80
ALARM_DONT_CARE = 0xC0      # 0xC0-0xFF in an alarm register match any value

UIP_WINDOW_NS = 244_000     # UIP rises 244 us before the update (32.768 kHz time base)
TIME_BASE_HZ = 32_768       # periodic rates divide this: rate n (3-15) is 2^(n-1) cycles
SECONDS_PER_DAY = 86_400


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _unbcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


class CmosRtc(BytePorts):
    """The RTC and CMOS RAM; see the module docstring."""

    def __init__(self, clock, *, irq8: IrqLine, start_time: int):
        self.clock = clock
        self.irq8 = irq8
        self.start_time = int(start_time)
        self.ram = bytearray(CMOS_SIZE)
        self.ram[REG_A], self.ram[REG_B], self.ram[REG_D] = A_DEFAULT, B_DEFAULT, D_VRT
        self.index = 0
        self.nmi_disabled = False
        self.offset = 0                  # seconds the guest moved the clock by
        self.weekday_offset = 0          # days the guest moved the weekday register by
        self.flags = 0                   # register C's PF/AF/UF
        self.accounted_ns = 0            # flags are up to date for events up to this time
        self.ports = (INDEX_PORT, DATA_PORT)
        self._timer = None

    # --- time ------------------------------------------------------------------------------
    def _running(self) -> bool:
        return not self.ram[REG_B] & B_SET

    def seconds_at(self, ns: int) -> int:
        """Unix seconds the clock shows at guest time ``ns`` (while running)."""
        return self.start_time + self.offset + ns // NS_PER_S

    def _encode(self, value: int) -> int:
        return value if self.ram[REG_B] & B_DM_BINARY else _bcd(value)

    def _decode(self, value: int) -> int:
        return value if self.ram[REG_B] & B_DM_BINARY else _unbcd(value)

    def _encode_hour(self, hour: int) -> int:
        if self.ram[REG_B] & B_24H:
            return self._encode(hour)
        return self._encode(hour % 12 or 12) | (HOUR_PM if hour >= 12 else 0)

    def _decode_hour(self, value: int) -> int:
        if self.ram[REG_B] & B_24H:
            return self._decode(value)
        hour = self._decode(value & ~HOUR_PM) % 12
        return hour + 12 if value & HOUR_PM else hour

    def _registers_for(self, seconds: int) -> dict[int, int]:
        tm = time.gmtime(seconds)
        weekday = ((tm.tm_wday + 1) % 7 + self.weekday_offset) % 7 + 1   # 1 = Sunday
        return {REG_SECONDS: self._encode(tm.tm_sec), REG_MINUTES: self._encode(tm.tm_min),
                REG_HOURS: self._encode_hour(tm.tm_hour), REG_WEEKDAY: self._encode(weekday),
                REG_DAY: self._encode(tm.tm_mday), REG_MONTH: self._encode(tm.tm_mon),
                REG_YEAR: self._encode(tm.tm_year % 100), REG_CENTURY: self._encode(tm.tm_year // 100)}

    def _seconds_from(self, regs: dict[int, int]) -> int:
        """The Unix time the registers spell; out-of-range fields roll over as arithmetic does."""
        year = self._decode(regs[REG_CENTURY]) * 100 + self._decode(regs[REG_YEAR]) % 100
        month = min(max(self._decode(regs[REG_MONTH]), 1), 12)
        year = min(max(year, 1), 9999)
        days = calendar.timegm((year, month, 1, 0, 0, 0)) // SECONDS_PER_DAY + self._decode(regs[REG_DAY]) - 1
        return (days * SECONDS_PER_DAY + self._decode_hour(regs[REG_HOURS]) * 3600 +
                self._decode(regs[REG_MINUTES]) * 60 + self._decode(regs[REG_SECONDS]))

    def _set_time(self, regs: dict[int, int], now: int) -> None:
        seconds = self._seconds_from(regs)
        self.offset = seconds - (self.start_time + now // NS_PER_S)
        computed = self._registers_for(seconds)[REG_WEEKDAY]
        self.weekday_offset = (self.weekday_offset + self._decode(regs[REG_WEEKDAY]) -
                               self._decode(computed)) % 7

    def _current_registers(self, now: int) -> dict[int, int]:
        if not self._running():
            return {reg: self.ram[reg] for reg in TIME_REGISTERS}
        return self._registers_for(self.seconds_at(now))

    # --- flags and interrupts -------------------------------------------------------------------
    def _periodic_cycles(self) -> int | None:
        """The periodic interrupt's period in cycles of the 32.768 kHz time base (the period in
        ns is not a whole number); None when RS is 0 (periodic interrupt off)."""
        rate = self.ram[REG_A] & A_RATE_MASK
        if rate == 0:
            return None
        if rate < 3:
            rate += 7                    # rates 1 and 2 repeat 8 and 9 (256 and 128 Hz)
        return 1 << (rate - 1)

    def _periodic_count(self, ns: int, cycles: int) -> int:
        """Periodic edges in (0, ns] of guest time."""
        return ns * TIME_BASE_HZ // (cycles * NS_PER_S)

    def _alarm_matches(self, seconds: int) -> bool:
        regs = self._registers_for(seconds)
        for alarm, value in ((REG_SECONDS_ALARM, REG_SECONDS), (REG_MINUTES_ALARM, REG_MINUTES),
                             (REG_HOURS_ALARM, REG_HOURS)):
            wanted = self.ram[alarm]
            if wanted & ALARM_DONT_CARE != ALARM_DONT_CARE and wanted != regs[value]:
                return False
        return True

    def _account(self, now: int) -> None:
        """Bring PF/AF/UF up to date with the events in (accounted_ns, now]."""
        last, self.accounted_ns = self.accounted_ns, max(now, self.accounted_ns)
        if now <= last:
            return
        cycles = self._periodic_cycles()
        if cycles is not None and self._periodic_count(now, cycles) > self._periodic_count(last, cycles):
            self.flags |= C_PF
        if self._running():
            first, latest = last // NS_PER_S + 1, now // NS_PER_S        # update boundaries crossed
            if latest >= first:
                self.flags |= C_UF
                base = self.start_time + self.offset
                for k in range(max(first, latest - SECONDS_PER_DAY + 1), latest + 1):
                    if self._alarm_matches(base + k):
                        self.flags |= C_AF
                        break
        self._update_irq()

    def _register_c(self) -> int:
        enables = self.ram[REG_B] & (B_PIE | B_AIE | B_UIE)
        irqf = C_IRQF if self.flags & enables else 0      # PF/AF/UF line up with PIE/AIE/UIE
        return irqf | self.flags

    def _update_irq(self) -> None:
        self.irq8.set(bool(self._register_c() & C_IRQF))

    def _reschedule(self) -> None:
        """Schedule the next event that could raise IRQF, only while an interrupt is enabled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now, enables, candidates = self.clock.now(), self.ram[REG_B], []
        cycles = self._periodic_cycles()
        if enables & B_PIE and cycles is not None:
            k = self._periodic_count(now, cycles) + 1
            candidates.append(-(-k * cycles * NS_PER_S // TIME_BASE_HZ))
        if enables & (B_AIE | B_UIE) and self._running():
            candidates.append((now // NS_PER_S + 1) * NS_PER_S)
        if candidates:
            self._timer = self.clock.schedule(min(candidates), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._account(self.clock.now())
        self._reschedule()

    # --- ports -------------------------------------------------------------------------------
    def _read_byte(self, port: int) -> int:
        if port != DATA_PORT:
            return 0xFF                  # the index port is write-only
        now = self.clock.now()
        self._account(now)
        reg = self.index
        if reg in TIME_REGISTERS:
            return self._current_registers(now)[reg]
        if reg == REG_A:
            uip = A_UIP if self._running() and now % NS_PER_S >= NS_PER_S - UIP_WINDOW_NS else 0
            return uip | (self.ram[REG_A] & A_WRITABLE)
        if reg == REG_C:
            value = self._register_c()
            self.flags = 0
            self._update_irq()
            return value
        if reg == REG_D:
            return D_VRT
        return self.ram[reg]

    def _write_byte(self, port: int, value: int) -> None:
        if port == INDEX_PORT:
            self.index = value & 0x7F
            self.nmi_disabled = bool(value & NMI_DISABLE)
            return
        if port != DATA_PORT:
            return
        now = self.clock.now()
        self._account(now)
        reg = self.index
        if reg in TIME_REGISTERS:
            if self._running():
                regs = self._current_registers(now)
                regs[reg] = value
                self._set_time(regs, now)
            else:
                self.ram[reg] = value
        elif reg == REG_A:
            self.ram[REG_A] = value & A_WRITABLE
        elif reg == REG_B:
            self._write_b(value, now)
        elif reg in (REG_C, REG_D):
            return                       # read-only
        else:
            self.ram[reg] = value
        self._update_irq()
        self._reschedule()

    def _write_b(self, value: int, now: int) -> None:
        was_set = not self._running()
        if value & B_SET and not was_set:
            for reg, byte in self._current_registers(now).items():   # freeze what the guest sees
                self.ram[reg] = byte
            value &= ~B_UIE              # SET going high clears UIE (DS12887)
        self.ram[REG_B] = value
        if was_set and not value & B_SET:
            self._set_time({reg: self.ram[reg] for reg in TIME_REGISTERS}, now)
