"""The 8254 PIT and port 0x61 driven through their ports, with guest time from a fake control."""

from hvsim.core.clock import GuestClock
from hvsim.core.devices.line import IrqLine
from hvsim.core.devices.pit import PIT_HZ, Pit8254

from fakeclock import FakeControl


def ns_of_ticks(ticks):
    return -(-ticks * 1_000_000_000 // PIT_HZ)


class Rig:
    def __init__(self):
        self.ctl = FakeControl()
        self.clock = GuestClock(self.ctl)
        self.edges = []                                   # (guest ns, level)
        self.irq0 = IrqLine(lambda level: self.edges.append((self.clock.now(), level)), name="irq0")
        self.pit = Pit8254(self.clock, irq0=self.irq0)

    def advance_to(self, ns):
        """Run guest time forward to ``ns`` block by block boundary, stopping at each deadline
        as the run loop does."""
        target = -(-ns // 10)
        while True:
            deadline = self.clock.next_deadline()
            if deadline is None or -(-deadline // 10) > target:
                break
            self.ctl.blocks = max(self.ctl.blocks, -(-deadline // 10))
            self.clock.run_due()
        self.ctl.blocks = max(self.ctl.blocks, target)
        self.clock.run_due()

    def rising(self):
        return [t for t, level in self.edges if level]


def test_channel0_rate_generator_interrupts_at_programmed_period():
    rig = Rig()
    count = 1193                                          # ~1 ms, as HZ=1000 would program
    rig.pit.write(0x43, 1, 0x34)                          # ch0, LSB/MSB, mode 2, binary
    rig.pit.write(0x40, 1, count & 0xFF)
    rig.pit.write(0x40, 1, count >> 8)
    rig.advance_to(10_500_000)
    assert rig.edges[0] == (0, True)                      # OUT goes high when mode 2 is set
    rising = rig.rising()[1:]
    assert len(rising) == 10
    for k, t in enumerate(rising, start=1):
        exact = ns_of_ticks(k * count)
        assert exact <= t < exact + 10                    # at the first block boundary after
    # Each edge is preceded by the one-clock low phase.
    lows = [t for t, level in rig.edges if not level]
    assert len(lows) == 10 and lows[0] == -(-ns_of_ticks(count - 1) // 10) * 10


def test_square_wave_mode3_half_periods():
    rig = Rig()
    count = 1000
    rig.pit.write(0x43, 1, 0x36)                          # ch0, LSB/MSB, mode 3
    rig.pit.write(0x40, 1, count & 0xFF)
    rig.pit.write(0x40, 1, count >> 8)
    rig.advance_to(ns_of_ticks(3 * count) + 100)
    lows = [t for t, level in rig.edges if not level]
    assert rig.edges[0] == (0, True)
    assert len(rig.rising()) == 1 + 3 and len(lows) == 3
    assert lows[0] >= ns_of_ticks(500) and lows[0] < ns_of_ticks(500) + 10


def test_no_event_scheduled_until_channel0_programmed():
    rig = Rig()
    assert rig.clock.next_deadline() is None
    rig.pit.write(0x43, 1, 0xB0)                          # ch2 mode 0
    rig.pit.write(0x42, 1, 0xFF)
    rig.pit.write(0x42, 1, 0xFF)
    assert rig.clock.next_deadline() is None              # ch2 is computed when read


def test_mode0_one_shot_raises_out_at_terminal_count_once():
    rig = Rig()
    rig.pit.write(0x43, 1, 0x30)                          # ch0 mode 0
    assert not rig.irq0.level
    rig.pit.write(0x40, 1, 0x00)
    rig.pit.write(0x40, 1, 0x10)                          # 0x1000 clocks
    rig.advance_to(ns_of_ticks(0x1000) - 1000)
    assert not rig.irq0.level
    rig.advance_to(ns_of_ticks(0x1000) + 10)
    assert rig.irq0.level
    assert rig.clock.next_deadline() is None              # fired once, nothing more to do
    rig.advance_to(ns_of_ticks(0x30000))
    assert rig.rising() == [rig.rising()[0]]


def test_counter_latch_freezes_value_until_read():
    rig = Rig()
    rig.pit.write(0x43, 1, 0x34)
    rig.pit.write(0x40, 1, 0x00)
    rig.pit.write(0x40, 1, 0x00)                          # 0 = 65536
    rig.advance_to(ns_of_ticks(100))
    rig.pit.write(0x43, 1, 0x00)                          # latch ch0
    rig.advance_to(ns_of_ticks(5000))
    low, high = rig.pit.read(0x40, 1), rig.pit.read(0x40, 1)
    assert (high << 8 | low) == 65536 - 100
    low, high = rig.pit.read(0x40, 1), rig.pit.read(0x40, 1)
    assert (high << 8 | low) == 65536 - 5000              # latch released: live count


def test_read_back_status_and_count():
    rig = Rig()
    rig.pit.write(0x43, 1, 0xB0)                          # ch2, LSB/MSB, mode 0
    rig.pit.write(0x43, 1, 0xE8)                          # read-back: status of ch2 only
    assert rig.pit.read(0x42, 1) == 0x40 | 0x30 | 0x00    # null count, RW=3, mode 0, OUT low
    rig.pit.write(0x61, 1, 0x01)                          # gate on
    rig.pit.write(0x42, 1, 0x34)
    rig.pit.write(0x42, 1, 0x12)
    rig.ctl.blocks = ns_of_ticks(0x10) // 10 + 1
    rig.pit.write(0x43, 1, 0xC8)                          # read-back: status and count of ch2
    assert rig.pit.read(0x42, 1) == 0x30                  # count loaded, OUT still low
    value = rig.pit.read(0x42, 1) | rig.pit.read(0x42, 1) << 8
    assert value == 0x1234 - 0x10


def test_lsb_only_and_msb_only_access():
    rig = Rig()
    rig.pit.write(0x43, 1, 0x90)                          # ch2 LSB only, mode 0
    rig.pit.write(0x61, 1, 0x01)
    rig.pit.write(0x42, 1, 0x80)
    assert rig.pit.read(0x42, 1) == 0x80
    rig.pit.write(0x43, 1, 0xA0)                          # ch2 MSB only
    rig.pit.write(0x42, 1, 0x02)
    rig.ctl.blocks += ns_of_ticks(0x101) // 10 + 1
    assert rig.pit.read(0x42, 1) == 0x00                  # 0x200 - 0x101 = 0x0FF


def test_bcd_counting():
    rig = Rig()
    rig.pit.write(0x43, 1, 0xB1)                          # ch2 LSB/MSB mode 0 BCD
    rig.pit.write(0x61, 1, 0x01)
    rig.pit.write(0x42, 1, 0x00)
    rig.pit.write(0x42, 1, 0x10)                          # 1000 in BCD
    rig.ctl.blocks = ns_of_ticks(1) // 10 + 1
    low, high = rig.pit.read(0x42, 1), rig.pit.read(0x42, 1)
    assert (high << 8 | low) == 0x0999


def test_channel2_gate_and_out2_in_port_61():
    rig = Rig()
    rig.pit.write(0x61, 1, 0x00)                          # gate off
    rig.pit.write(0x43, 1, 0xB0)
    rig.pit.write(0x42, 1, 0xE8)
    rig.pit.write(0x42, 1, 0x03)                          # 1000 clocks
    rig.ctl.blocks = ns_of_ticks(5000) // 10
    assert not rig.pit.read(0x61, 1) & 0x20               # gate low: not counting
    start = rig.clock.now()
    rig.pit.write(0x61, 1, 0x03)                          # gate on, speaker on
    assert rig.pit.read(0x61, 1) & 0x03 == 0x03
    rig.ctl.blocks = (start + ns_of_ticks(999)) // 10
    assert not rig.pit.read(0x61, 1) & 0x20
    rig.ctl.blocks = -(-(start + ns_of_ticks(1000)) // 10)
    assert rig.pit.read(0x61, 1) & 0x20                   # OUT2 high at terminal count


def test_refresh_toggle_follows_guest_time():
    rig = Rig()
    seen = []
    for ns in range(0, 100_000, 5_000):
        rig.ctl.blocks = ns // 10
        seen.append(bool(rig.pit.read(0x61, 1) & 0x10))
    assert seen == [(ns // 15_085) % 2 == 1 for ns in range(0, 100_000, 5_000)]


def test_quick_pit_calibrate_msb_sequence():
    """tsc.c quick_pit_calibrate: ch2 mode 0 from 0xffff, read LSB then MSB in a loop; the MSB
    must step down by one every 256 clocks of guest time."""
    rig = Rig()
    rig.pit.write(0x61, 1, (rig.pit.read(0x61, 1) & ~0x02) | 0x01)
    rig.pit.write(0x43, 1, 0xB0)
    rig.pit.write(0x42, 1, 0xFF)
    rig.pit.write(0x42, 1, 0xFF)
    start = rig.clock.now()
    msbs = []
    while len(msbs) < 40:
        rig.ctl.blocks += 7                               # ~70 ns of guest code per poll
        rig.pit.read(0x42, 1)
        msb = rig.pit.read(0x42, 1)
        ticks = (rig.clock.now() - start) * PIT_HZ // 1_000_000_000
        assert msb == ((0xFFFF - ticks) >> 8) & 0xFF
        if not msbs or msbs[-1] != msb:
            msbs.append(msb)
    assert msbs == list(range(0xFF, 0xFF - 40, -1))


def test_pit_calibrate_tsc_polls_out2():
    """pit_calibrate_tsc: mode 0 with a 10 ms latch, poll 0x61 bit 5."""
    rig = Rig()
    latch = PIT_HZ // 100
    rig.pit.write(0x61, 1, (rig.pit.read(0x61, 1) & ~0x02) | 0x01)
    rig.pit.write(0x43, 1, 0xB0)
    rig.pit.write(0x42, 1, latch & 0xFF)
    rig.pit.write(0x42, 1, latch >> 8)
    start = rig.clock.now()
    while not rig.pit.read(0x61, 1) & 0x20:
        rig.ctl.blocks += 100
    assert abs(rig.clock.now() - start - 10_000_000) < 2_000


def test_gate_low_stops_mode2_and_reload_on_rising_edge():
    rig = Rig()
    rig.pit.write(0x61, 1, 0x01)
    rig.pit.write(0x43, 1, 0xB4)                          # ch2 mode 2
    rig.pit.write(0x42, 1, 0x00)
    rig.pit.write(0x42, 1, 0x01)                          # 256
    rig.ctl.blocks = ns_of_ticks(100) // 10 + 1
    rig.pit.write(0x61, 1, 0x00)
    rig.ctl.blocks += 10_000
    rig.pit.write(0x61, 1, 0x01)                          # reload
    low, high = rig.pit.read(0x42, 1), rig.pit.read(0x42, 1)
    assert (high << 8 | low) == 256


def test_mode1_waits_for_gate_trigger():
    rig = Rig()
    rig.pit.write(0x43, 1, 0xB2)                          # ch2 mode 1
    rig.pit.write(0x42, 1, 100)
    rig.pit.write(0x42, 1, 0)
    rig.ctl.blocks = 100_000
    assert rig.pit.read(0x61, 1) & 0x20                   # OUT high, not triggered
    rig.pit.write(0x61, 1, 0x01)                          # rising gate triggers
    assert not rig.pit.read(0x61, 1) & 0x20
    rig.ctl.blocks += ns_of_ticks(100) // 10 + 1
    assert rig.pit.read(0x61, 1) & 0x20


def test_mode4_strobe_pulses_irq0_once():
    rig = Rig()
    rig.pit.write(0x43, 1, 0x38)                          # ch0 mode 4
    rig.pit.write(0x40, 1, 50)
    rig.pit.write(0x40, 1, 0)
    assert rig.irq0.level
    rig.advance_to(ns_of_ticks(1000))
    assert [level for _, level in rig.edges] == [True, False, True]


def test_unknown_port_and_control_port_read_float_high():
    rig = Rig()
    assert rig.pit.read(0x43, 1) == 0xFF


def test_periodic_irq0_through_the_8259_needs_eoi_per_tick():
    """IRQ0 wired to the PIC's input 0 as on a PC: every period latches a new request."""
    from hvsim.core.devices.pic import Pic8259Pair

    rig = Rig()
    intr = IrqLine(name="intr")
    pic = Pic8259Pair(intr=intr)
    rig.irq0.connect(lambda level: pic.set_irq(0, level))
    for port, value in ((0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0x00)):
        pic.write(port, 1, value)
    rig.pit.write(0x43, 1, 0x34)
    rig.pit.write(0x40, 1, 0x9C)
    rig.pit.write(0x40, 1, 0x2E)                          # LATCH for HZ=100: 11932
    ticks = 0
    for k in range(1, 6):
        if intr.level:                                    # the edge at programming time
            assert pic.acknowledge() == 0x30
            pic.write(0x20, 1, 0x20)
        rig.advance_to(ns_of_ticks(k * 11932) - 100)
        assert not intr.level
        rig.advance_to(ns_of_ticks(k * 11932) + 10)
        assert intr.level
        assert pic.acknowledge() == 0x30
        pic.write(0x20, 1, 0x20)
        ticks += 1
    assert ticks == 5
