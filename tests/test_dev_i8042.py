"""The i8042 and its PS/2 keyboard driven through ports 0x60/0x64, keys typed in guest time."""

import pytest

from hvsim.core.clock import GuestClock
from hvsim.core.devices.i8042 import I8042
from hvsim.core.devices.keyboard import Key, ScriptedTyping, parse_keys
from hvsim.core.devices.line import IrqLine

from fakeclock import FakeControl


class Rig:
    def __init__(self):
        self.ctl = FakeControl()
        self.clock = GuestClock(self.ctl)
        self.irq1_edges, self.resets, self.notes = [], [], []
        self.irq1 = IrqLine(lambda level: self.irq1_edges.append(level) if level else None, name="IRQ1")
        self.kbc = I8042(irq1=self.irq1, reset=self.resets.append, note=self.notes.append)
        self.typing = ScriptedTyping(self.clock, self.kbc.keyboard, self.notes.append)

    def status(self):
        return self.kbc.read(0x64, 1)

    def command(self, value):
        self.kbc.write(0x64, 1, value)

    def data(self, value):
        self.kbc.write(0x60, 1, value)

    def drain(self):
        out = []
        while self.status() & 0x01:
            out.append(self.kbc.read(0x60, 1))
        return out

    def run_for(self, ns):
        target = self.clock.now() + ns
        while (deadline := self.clock.next_deadline()) is not None and deadline <= target:
            self.ctl.blocks = max(self.ctl.blocks, -(-deadline // 10))
            self.clock.run_due()
        self.ctl.blocks = max(self.ctl.blocks, -(-target // 10))


def test_self_test_interface_test_and_the_command_byte():
    rig = Rig()
    assert rig.status() & 0x01 == 0 and rig.status() & 0x04       # empty, system flag set
    rig.command(0xAA)
    assert rig.drain() == [0x55]
    rig.command(0xAB)
    assert rig.drain() == [0x00]
    rig.command(0x20)
    assert rig.drain() == [0x65]                                    # INT, SYS, aux disabled, XLATE
    rig.command(0x60)
    assert rig.status() & 0x08                                      # the last write was a command
    rig.data(0x20)                                                  # no XLATE, no INT, no SYS
    rig.command(0x20)
    assert rig.drain() == [0x20] and not rig.status() & 0x04


def test_keyboard_reset_identify_echo_and_leds():
    rig = Rig()
    rig.data(0xFF)
    assert rig.drain() == [0xFA, 0xAA]
    rig.data(0xF2)
    assert rig.drain() == [0xFA, 0xAB, 0x41]                        # 0x83 translated, as Linux expects
    rig.command(0x60)
    rig.data(0x25)                                                  # translation off
    rig.data(0xF2)
    assert rig.drain() == [0xFA, 0xAB, 0x83]
    rig.data(0xEE)
    assert rig.drain() == [0xEE]
    rig.data(0xED)
    rig.data(0x07)
    assert rig.drain() == [0xFA, 0xFA] and rig.kbc.keyboard.leds == 7
    rig.data(0xF0)
    rig.data(0x00)
    assert rig.drain() == [0xFA, 0xFA, 0x02]
    rig.data(0xF3)
    rig.data(0x00)
    assert rig.drain() == [0xFA, 0xFA] and rig.kbc.keyboard.typematic == 0
    rig.data(0x99)
    assert rig.drain() == [0xFE]                                    # not a command: resend


def test_keys_are_typed_in_guest_time_as_set_1_with_irq1():
    rig = Rig()
    rig.typing.start(parse_keys("aB{up}"))
    assert rig.drain() == []                                        # nothing before the first key is due
    rig.run_for(1_000_000)
    assert rig.irq1_edges == [True]
    assert rig.drain() == [0x1E, 0x9E]                              # 'a' make and break
    rig.run_for(100_000)
    assert rig.drain() == [0x2A, 0x30, 0xB0, 0xAA]                  # Shift, 'b', with breaks
    rig.run_for(100_000)
    assert rig.drain() == [0xE0, 0x48, 0xE0, 0xC8]                  # up arrow
    assert len(rig.irq1_edges) == 10                                # one edge per byte
    rig.run_for(10_000_000)
    assert rig.drain() == [] and rig.clock.next_deadline() is None


def test_set_2_when_translation_is_off_and_a_disabled_keyboard_holds_its_keys():
    rig = Rig()
    rig.command(0x60)
    rig.data(0x24)                                                  # no XLATE, keyboard IRQ off
    rig.command(0xAD)                                               # keyboard port disabled
    rig.typing.start([Key(char="a")])
    rig.run_for(5_000_000)
    assert rig.drain() == [] and rig.irq1_edges == []
    rig.command(0xAE)
    assert rig.drain() == [0x1C, 0xF0, 0x1C]


def test_scanning_disabled_waits_for_enable():
    rig = Rig()
    rig.data(0xF5)
    assert rig.drain() == [0xFA]
    rig.typing.start([Key(char="z")])
    rig.run_for(5_000_000)
    assert rig.drain() == []
    rig.data(0xF4)
    assert rig.drain() == [0xFA]
    rig.run_for(100_000)
    assert rig.drain() == [0x2C, 0xAC]


@pytest.mark.parametrize("write", [lambda rig: rig.command(0xFE),
                                   lambda rig: (rig.command(0xD1), rig.data(0x02))])
def test_reset_by_pulse_or_output_port(write):
    rig = Rig()
    write(rig)
    assert len(rig.resets) == 1


def test_output_port_a20_and_the_absent_mouse():
    rig = Rig()
    rig.command(0xD0)
    assert rig.drain()[0] & 0x03 == 0x03                            # not in reset, A20 on
    rig.command(0xDD)
    assert rig.notes and "A20" in rig.notes[0]
    rig.command(0xD4)
    rig.data(0xFF)                                                  # reset the mouse: no one answers
    status = rig.status()
    assert status & 0x21 == 0x21 and status & 0x40                  # aux byte, timeout
    assert rig.kbc.read(0x60, 1) == 0xFE
    rig.command(0xD2)
    rig.data(0x5A)
    assert rig.drain() == [0x5A]
    rig.command(0xC8)                                               # not modelled: ignored, noted
    assert any("0xc8" in note for note in rig.notes) and rig.drain() == []


def test_an_unknown_key_name_is_refused():
    with pytest.raises(ValueError, match="unknown key"):
        parse_keys("{nosuchkey}")
