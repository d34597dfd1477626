"""The I/O APIC driven as a guest drives it (IOREGSEL/IOWIN, the EOI register) and as the chipset
drives it (pin levels, broadcast EOIs); deliveries recorded by fake receivers, and once wired to a
real LocalApic."""

from __future__ import annotations

import pytest

from hvsim.core.clock import GuestClock
from hvsim.core.devices.ioapic import IoApic
from hvsim.core.devices.lapic import LocalApic

from fakeclock import FakeControl

IOREGSEL, IOWIN, EOI_REG = 0x00, 0x10, 0x40
MASKED, LEVEL, ACTIVE_LOW, REMOTE_IRR, LOGICAL = 1 << 16, 1 << 15, 1 << 13, 1 << 14, 1 << 11
NMI_MODE, EXTINT_MODE, INIT_MODE = 4 << 8, 7 << 8, 5 << 8


class Rig:
    def __init__(self, **kwargs):
        self.fixed: list[tuple[int, bool]] = []
        self.extint: list[bool] = []
        self.nmis = 0
        self.io = IoApic(deliver=lambda v, lvl: self.fixed.append((v, lvl)),
                         deliver_extint=self.extint.append, deliver_nmi=self._nmi, **kwargs)

    def _nmi(self):
        self.nmis += 1

    def reg(self, index):
        self.io.write(IOREGSEL, 4, index)
        return self.io.read(IOWIN, 4)

    def set_reg(self, index, value):
        self.io.write(IOREGSEL, 4, index)
        self.io.write(IOWIN, 4, value)

    def route(self, pin, low, dest=0):
        self.set_reg(0x10 + 2 * pin + 1, dest << 24)
        self.set_reg(0x10 + 2 * pin, low)

    def rte(self, pin):
        return self.reg(0x10 + 2 * pin) | self.reg(0x11 + 2 * pin) << 32


@pytest.fixture
def rig():
    return Rig()


def test_power_on_registers():
    r = Rig(ioapic_id=1)
    assert r.reg(0x00) == 1 << 24
    assert r.reg(0x01) == 0x00170020             # 24 entries (max index 23), version 0x20
    assert r.reg(0x02) == 1 << 24
    for pin in range(24):
        assert r.rte(pin) == 0x10000
    assert r.reg(0x40) == 0 and r.reg(0xFF) == 0  # past the table


def test_ioregsel_reads_back_and_id_writable_bits(rig):
    rig.io.write(IOREGSEL, 4, 0x1234)
    assert rig.io.read(IOREGSEL, 4) == 0x34
    rig.set_reg(0x00, 0xFFFFFFFF)
    assert rig.reg(0x00) == 0x0F000000
    rig.set_reg(0x01, 0)                          # version is read-only
    assert rig.reg(0x01) == 0x00170020


def test_redirection_entry_read_only_bits_and_byte_reads(rig):
    rig.route(3, 0xFFFFFFFF, dest=0xAB)
    assert rig.rte(3) == (0xAB << 56) | (0x1FFFF & ~(1 << 12) & ~REMOTE_IRR)
    rig.io.write(IOREGSEL, 1, 0x16)
    assert rig.io.read(IOWIN + 1, 1) == 0xAF      # bits 8-15 of RTE 3: status and remote IRR read 0
    assert rig.io.read(0x20, 4) == 0              # reserved offset


def test_edge_pin_delivers_once_per_rising_edge(rig):
    rig.route(4, 0x22)
    rig.io.set_irq(4, True)
    rig.io.set_irq(4, True)
    assert rig.fixed == [(0x22, False)]
    rig.io.set_irq(4, False)
    assert rig.fixed == [(0x22, False)]
    rig.io.set_irq(4, True)
    assert rig.fixed == [(0x22, False)] * 2


def test_masked_edge_is_lost(rig):
    rig.route(4, MASKED | 0x22)
    rig.io.set_irq(4, True)
    rig.io.set_irq(4, False)
    rig.route(4, 0x22)
    assert rig.fixed == []


def test_level_pin_remote_irr_and_eoi_redelivery(rig):
    rig.route(9, LEVEL | 0x39)
    rig.io.set_irq(9, True)
    assert rig.fixed == [(0x39, True)]
    assert rig.rte(9) & REMOTE_IRR
    rig.io.set_irq(9, False)
    rig.io.set_irq(9, True)                       # remote IRR still set: no second message
    assert rig.fixed == [(0x39, True)]
    rig.io.eoi(0x39)                              # still asserted: delivered again
    assert rig.fixed == [(0x39, True)] * 2 and rig.rte(9) & REMOTE_IRR
    rig.io.set_irq(9, False)
    rig.io.eoi(0x39)
    assert rig.fixed == [(0x39, True)] * 2 and not rig.rte(9) & REMOTE_IRR


def test_eoi_register_and_other_vectors(rig):
    rig.route(10, LEVEL | 0x3A)
    rig.route(11, LEVEL | 0x3A)
    rig.route(12, LEVEL | 0x3C)
    for pin in (10, 11, 12):
        rig.io.set_irq(pin, True)
    rig.io.eoi(0x3B)                              # nobody's vector
    assert all(rig.rte(p) & REMOTE_IRR for p in (10, 11, 12))
    rig.io.set_irq(10, False)
    rig.io.write(EOI_REG, 4, 0x3A)                # clears every pin with that vector
    assert not rig.rte(10) & REMOTE_IRR
    assert rig.rte(11) & REMOTE_IRR               # still asserted: redelivered
    assert rig.rte(12) & REMOTE_IRR
    assert rig.fixed.count((0x3A, True)) == 3


def test_masked_level_pin_delivers_when_unmasked(rig):
    rig.route(5, MASKED | LEVEL | 0x25)
    rig.io.set_irq(5, True)
    assert rig.fixed == []
    rig.route(5, LEVEL | 0x25)
    assert rig.fixed == [(0x25, True)]


def test_active_low_polarity_inverts(rig):
    rig.route(6, ACTIVE_LOW | LEVEL | 0x26)
    assert rig.fixed == [(0x26, True)]            # an idle-low wire is asserted when active low
    rig.io.eoi(0x26)
    assert rig.fixed == [(0x26, True)] * 2
    rig.io.set_irq(6, True)                       # deasserted
    rig.io.eoi(0x26)
    assert len(rig.fixed) == 2
    rig.route(7, ACTIVE_LOW | 0x27)
    rig.io.set_irq(7, True)
    rig.io.set_irq(7, False)                      # falling wire = rising assertion
    assert rig.fixed[-1] == (0x27, False)


def test_delivery_modes_nmi_extint_and_init(rig):
    rig.route(0, EXTINT_MODE)
    rig.route(1, NMI_MODE)
    rig.route(2, INIT_MODE | LEVEL)
    for pin in (0, 1, 2):
        rig.io.set_irq(pin, True)
    assert rig.extint == [False] and rig.nmis == 1
    assert rig.fixed == [] and not rig.rte(2) & REMOTE_IRR


def test_destination_checks_without_lapic(rig):
    rig.route(3, 0x33, dest=1)                    # physical APIC 1: not this CPU
    rig.io.set_irq(3, True)
    rig.route(4, 0x34, dest=0xFF)                 # broadcast
    rig.io.set_irq(4, True)
    rig.route(5, LOGICAL | 0x35, dest=0)          # logical, nobody
    rig.io.set_irq(5, True)
    rig.route(8, LOGICAL | 0x38, dest=1)
    rig.io.set_irq(8, True)
    assert rig.fixed == [(0x34, False), (0x38, False)]


def test_vectors_below_16_are_sent_as_programmed(rig):
    rig.route(3, 0x05)
    rig.io.set_irq(3, True)
    assert rig.fixed == [(0x05, False)]


def test_pins_out_of_range_are_not_connected(rig):
    rig.io.set_irq(24, True)
    rig.io.set_irq(-1, True)
    assert rig.fixed == []


def test_narrow_iowin_writes_are_ignored(rig):
    rig.io.write(IOREGSEL, 1, 0x10)
    rig.io.write(IOWIN, 2, 0x0030)
    assert rig.rte(0) == 0x10000


# ---------------------------------------------------------------- wired to a local APIC

def test_level_interrupt_round_trip_through_a_local_apic():
    clock = GuestClock(FakeControl())
    io: IoApic
    lapic = LocalApic(clock, kick=lambda: None, eoi_broadcast=lambda v: io.eoi(v))
    io = IoApic(deliver=lambda v, lvl: lapic.deliver(v, level=lvl), deliver_nmi=lapic.nmi,
                accepts=lapic.accepts, ioapic_id=1)
    lapic.write(0xF0, 4, 0x1FF)
    lapic.write(0xD0, 4, 0x01000000)              # logical ID bit 0
    io.write(IOREGSEL, 4, 0x11 + 2 * 9)
    io.write(IOWIN, 4, 0x02 << 24)                # logical destination bit 1: not this LAPIC
    io.write(IOREGSEL, 4, 0x10 + 2 * 9)
    io.write(IOWIN, 4, LOGICAL | LEVEL | 0x49)
    io.set_irq(9, True)
    assert not lapic.interrupt_pending()
    io.write(IOREGSEL, 4, 0x11 + 2 * 9)
    io.write(IOWIN, 4, 0x03 << 24)
    io.set_irq(9, False)
    io.set_irq(9, True)
    assert lapic.interrupt_pending()
    assert lapic.acknowledge() == 0x49
    io.set_irq(9, False)                          # the handler quiets the device
    lapic.write(0xB0, 4, 0)                       # EOI: broadcast clears remote IRR
    io.write(IOREGSEL, 4, 0x10 + 2 * 9)
    assert not io.read(IOWIN, 4) & REMOTE_IRR
    io.set_irq(9, True)
    assert lapic.interrupt_pending() and lapic.acknowledge() == 0x49
    io.set_irq(1, True)
