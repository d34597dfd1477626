"""The CMOS RTC driven through ports 0x70/0x71 as a BIOS and Linux's rtc-mc146818-lib drive it."""

import calendar

from hvsim.core.clock import GuestClock
from hvsim.core.devices.line import IrqLine
from hvsim.core.devices.rtc import CmosRtc

from fakeclock import FakeControl

START = calendar.timegm((2024, 2, 29, 23, 59, 58))        # a Thursday


class Rig:
    def __init__(self, start=START):
        self.ctl = FakeControl()
        self.clock = GuestClock(self.ctl)
        self.irq8 = IrqLine(name="irq8")
        self.rtc = CmosRtc(self.clock, irq8=self.irq8, start_time=start)

    def at(self, ns):
        self.ctl.blocks = ns // 10
        self.clock.run_due()

    def cmos(self, reg):
        self.rtc.write(0x70, 1, reg)
        return self.rtc.read(0x71, 1)

    def set_cmos(self, reg, value):
        self.rtc.write(0x70, 1, reg)
        self.rtc.write(0x71, 1, value)


def test_bcd_time_and_date_at_start_and_rollover():
    rig = Rig()
    assert [rig.cmos(r) for r in (0, 2, 4, 6, 7, 8, 9, 0x32)] == [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]
    rig.at(2_000_000_000)                                 # leap day rolls into March
    assert [rig.cmos(r) for r in (0, 2, 4, 6, 7, 8, 9)] == [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24]


def test_binary_and_12_hour_modes():
    rig = Rig(calendar.timegm((2024, 7, 4, 15, 30, 9)))
    rig.set_cmos(0x0B, 0x04)                              # binary, 12-hour
    assert rig.cmos(0) == 9 and rig.cmos(2) == 30
    assert rig.cmos(4) == 0x80 | 3                        # 3 PM
    rig.set_cmos(0x0B, 0x00)                              # BCD, 12-hour
    assert rig.cmos(4) == 0x83
    rig.set_cmos(0x0B, 0x06)                              # binary, 24-hour
    assert rig.cmos(4) == 15


def test_uip_only_in_last_244us_of_each_second():
    rig = Rig()
    rig.at(500_000_000)
    assert not rig.cmos(0x0A) & 0x80
    rig.at(1_000_000_000 - 244_000 - 10)
    assert not rig.cmos(0x0A) & 0x80
    rig.at(1_000_000_000 - 200_000)
    assert rig.cmos(0x0A) & 0x80
    assert rig.cmos(0) == 0x58                            # the update has not happened yet
    rig.at(1_000_000_000)
    assert not rig.cmos(0x0A) & 0x80
    assert rig.cmos(0) == 0x59
    assert rig.cmos(0x0A) & 0x7F == 0x26                  # divider and rate as a BIOS leaves them


def test_avoid_uip_style_poll_finds_uip_clear_quickly():
    rig = Rig()
    ns, polls = 999_900_000, 0                            # inside the UIP window
    while rig.cmos(0x0A) & 0x80:
        polls += 1
        ns += 1_000_000 // 10                             # 100 us between polls
        rig.at(ns)
    assert polls <= 3


def test_set_freezes_and_writes_new_time():
    rig = Rig()
    rig.set_cmos(0x0B, 0x82)                              # SET, 24h BCD
    rig.at(5_000_000_000)
    assert rig.cmos(0) == 0x58                            # frozen
    for reg, value in ((0, 0x30), (2, 0x15), (4, 0x10), (7, 0x01), (8, 0x01), (9, 0x25), (0x32, 0x20)):
        rig.set_cmos(reg, value)
    rig.set_cmos(0x0B, 0x02)                              # release SET at guest 5 s
    assert [rig.cmos(r) for r in (0, 2, 4, 7, 8, 9)] == [0x30, 0x15, 0x10, 0x01, 0x01, 0x25]
    rig.at(7_000_000_000)
    assert rig.cmos(0) == 0x32


def test_write_time_register_while_running_moves_the_clock():
    rig = Rig()
    rig.set_cmos(2, 0x10)                                 # minutes 59 -> 10
    assert rig.cmos(2) == 0x10 and rig.cmos(4) == 0x23
    rig.at(3_000_000_000)
    assert rig.cmos(2) == 0x11 and rig.cmos(0) == 0x01


def test_register_c_reports_update_and_read_clears():
    rig = Rig()
    rig.at(1_500_000_000)
    assert rig.cmos(0x0C) == 0x50                         # UF and PF (1024 Hz) without enables: no IRQF
    assert rig.cmos(0x0C) == 0x00
    assert not rig.irq8.level


def test_update_interrupt_each_second():
    rig = Rig()
    rig.set_cmos(0x0A, 0x20)                              # periodic rate off
    rig.set_cmos(0x0B, 0x12)                              # UIE
    assert not rig.irq8.level
    rig.at(1_000_000_000)
    assert rig.irq8.level
    assert rig.cmos(0x0C) == 0x90
    assert not rig.irq8.level
    rig.at(1_999_999_990)
    assert not rig.irq8.level
    rig.at(2_000_000_000)
    assert rig.irq8.level


def test_periodic_interrupt_at_rate():
    rig = Rig()
    rig.set_cmos(0x0A, 0x26)                              # 1024 Hz
    rig.set_cmos(0x0B, 0x42)                              # PIE
    period = 1_000_000_000 / 1024
    count = 0
    for k in range(1, 11):
        rig.at(int(k * period) - 20)
        assert not rig.irq8.level
        rig.at(int(k * period) + 10)
        assert rig.irq8.level
        assert rig.cmos(0x0C) & 0xC0 == 0xC0
        count += 1
    assert count == 10


def test_no_event_scheduled_without_enabled_interrupt():
    rig = Rig()
    assert rig.clock.next_deadline() is None
    rig.set_cmos(0x0B, 0x42)
    assert rig.clock.next_deadline() is not None
    rig.set_cmos(0x0B, 0x02)
    assert rig.clock.next_deadline() is None


def test_alarm_with_dont_care_fields():
    rig = Rig()
    rig.set_cmos(1, 0x05)                                 # seconds 05
    rig.set_cmos(3, 0xC0)                                 # any minute
    rig.set_cmos(5, 0xFF)                                 # any hour
    rig.set_cmos(0x0B, 0x22)                              # AIE
    rig.at(6_000_000_000)                                 # 23:59:58 + 6 s = 00:00:04
    assert not rig.irq8.level
    rig.at(7_000_000_000)                                 # 00:00:05
    assert rig.irq8.level
    assert rig.cmos(0x0C) & 0xA0 == 0xA0


def test_set_clears_uie_and_register_d_reports_valid_ram():
    rig = Rig()
    rig.set_cmos(0x0B, 0x12)
    rig.set_cmos(0x0B, 0x92)
    assert rig.cmos(0x0B) == 0x82
    assert rig.cmos(0x0D) == 0x80
    rig.set_cmos(0x0D, 0x00)
    assert rig.cmos(0x0D) == 0x80


def test_cmos_ram_and_nmi_bit():
    rig = Rig()
    rig.rtc.write(0x70, 1, 0x8F)                          # shutdown status byte, NMI disabled
    rig.rtc.write(0x71, 1, 0x0A)
    assert rig.rtc.nmi_disabled
    assert rig.cmos(0x0F) == 0x0A
    assert not rig.rtc.nmi_disabled
    rig.set_cmos(0x7F, 0x5A)
    assert rig.cmos(0x7F) == 0x5A
    assert rig.rtc.read(0x70, 1) == 0xFF
