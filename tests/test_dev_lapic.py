"""The local APIC driven as a guest drives it: register by register through its MMIO window, the
two MSRs, and the INTA cycle the run loop performs; guest time advanced on a fake control block."""

from __future__ import annotations

import pytest

from hvsim.core.clock import GuestClock
from hvsim.core.devices.lapic import LocalApic

from fakeclock import FakeControl

ID, VERSION, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0
ISR, TMR, IRR, ESR, ICR_LOW, ICR_HIGH = 0x100, 0x180, 0x200, 0x280, 0x300, 0x310
LVT_TIMER, LVT_THERMAL, LVT_PMC, LINT0, LINT1, LVT_ERROR = 0x320, 0x330, 0x340, 0x350, 0x360, 0x370
TIMER_INITIAL, TIMER_CURRENT, TIMER_DCR = 0x380, 0x390, 0x3E0
MASKED = 1 << 16
PERIODIC, TSC_DEADLINE = 1 << 17, 2 << 17


class Rig:
    """A LAPIC on a fake clock, with a fake 8259 behind LINT0 and records of kicks and EOIs."""

    def __init__(self, **kwargs):
        self.control = FakeControl()
        self.clock = GuestClock(self.control)
        self.kicks = 0
        self.broadcasts: list[int] = []
        self.pic_vector = 0x20
        self.pic_acks = 0
        self.lapic = LocalApic(self.clock, kick=self._kick, extint_ack=self._pic_ack,
                               eoi_broadcast=self.broadcasts.append, **kwargs)

    def _kick(self):
        self.kicks += 1

    def _pic_ack(self):
        self.pic_acks += 1
        return self.pic_vector

    def rd(self, offset, size=4):
        return self.lapic.read(offset, size)

    def wr(self, offset, value, size=4):
        self.lapic.write(offset, size, value)

    def enable(self):
        self.wr(SVR, 0x1FF)

    def advance_to(self, ns):
        """Move guest time to ``ns`` (a multiple of 10) and run what fell due."""
        assert ns % 10 == 0 and ns >= self.clock.now()
        self.control.blocks = ns // 10
        return self.clock.run_due()

    def irr_bit(self, vector):
        return bool(self.rd(IRR + 0x10 * (vector // 32)) >> (vector % 32) & 1)

    def isr_bit(self, vector):
        return bool(self.rd(ISR + 0x10 * (vector // 32)) >> (vector % 32) & 1)

    def tmr_bit(self, vector):
        return bool(self.rd(TMR + 0x10 * (vector // 32)) >> (vector % 32) & 1)


@pytest.fixture
def rig():
    return Rig()


# ---------------------------------------------------------------- power-on state and plain registers

def test_power_on_values(rig):
    assert rig.rd(ID) == 0
    assert rig.rd(VERSION) == 0x50014
    assert rig.rd(TPR) == 0 and rig.rd(PPR) == 0 and rig.rd(APR) == 0
    assert rig.rd(LDR) == 0
    assert rig.rd(DFR) == 0xFFFFFFFF
    assert rig.rd(SVR) == 0xFF
    for reg in (LVT_TIMER, LVT_THERMAL, LVT_PMC, LINT0, LINT1, LVT_ERROR):
        assert rig.rd(reg) == 0x10000, hex(reg)
    for i in range(8):
        assert rig.rd(ISR + 0x10 * i) == rig.rd(TMR + 0x10 * i) == rig.rd(IRR + 0x10 * i) == 0
    assert rig.rd(TIMER_INITIAL) == rig.rd(TIMER_CURRENT) == rig.rd(TIMER_DCR) == 0
    assert rig.lapic.apic_base == 0xFEE00900
    assert rig.lapic.hardware_enabled
    assert not rig.lapic.interrupt_pending() and not rig.lapic.nmi_pending()


def test_apic_id_from_constructor_and_writable_bits():
    r = Rig(apic_id=3)
    assert r.rd(ID) == 3 << 24
    r.wr(ID, 0x12345678)
    assert r.rd(ID) == 0x12000000


def test_ldr_dfr_svr_tpr_writable_bits(rig):
    rig.wr(LDR, 0xFFFFFFFF)
    assert rig.rd(LDR) == 0xFF000000
    rig.wr(DFR, 0)
    assert rig.rd(DFR) == 0x0FFFFFFF
    rig.wr(SVR, 0xFFFFFFFF)
    assert rig.rd(SVR) == 0x3FF
    rig.wr(SVR, 0x1F0)        # vector bits 0-3 are writable (P6 and later)
    assert rig.rd(SVR) == 0x1F0
    rig.wr(TPR, 0x1FF)
    assert rig.rd(TPR) == 0xFF


def test_read_only_registers_ignore_writes(rig):
    rig.enable()
    rig.lapic.deliver(0x40)
    rig.lapic.deliver(0x41)
    assert rig.lapic.acknowledge() == 0x41
    before = {off: rig.rd(off) for off in (VERSION, PPR, APR, RRD, ISR + 0x20, IRR + 0x20, TMR + 0x20)}
    for off in before:
        rig.wr(off, 0xFFFFFFFF)
        rig.wr(off, 0)
    assert {off: rig.rd(off) for off in before} == before
    rig.wr(TIMER_INITIAL, 1000)
    rig.advance_to(100)
    rig.wr(TIMER_CURRENT, 5)
    assert rig.rd(TIMER_CURRENT) == 950     # power-on DCR 0 divides by 2


def test_access_sizes_and_reserved_offsets(rig):
    rig.wr(SVR, 0x1AB)
    assert rig.rd(SVR, 1) == 0xAB
    assert rig.rd(SVR + 1, 1) == 0x01
    assert rig.rd(SVR, 2) == 0x1AB
    assert rig.rd(SVR, 8) == 0x1AB
    assert rig.rd(SVR + 4) == 0          # bytes 4-15 of a slot are reserved
    assert rig.rd(0x2F0) == 0            # CMCI LVT is not modelled
    assert rig.rd(0x3F0) == 0 and rig.rd(0x10) == 0 and rig.rd(0xFF0) == 0
    rig.wr(SVR, 0x1FF, size=2)           # narrow writes are ignored
    rig.wr(SVR + 4, 0xFF)
    assert rig.rd(SVR) == 0x1AB
    rig.wr(0x3F0, 0xFFFFFFFF)            # reserved: no effect, no exception
    assert rig.rd(0x3F0) == 0


# ---------------------------------------------------------------- acceptance, priority, EOI

def test_fixed_interrupt_sets_irr_kicks_and_acknowledge_moves_it_to_isr(rig):
    rig.enable()
    kicks = rig.kicks
    rig.lapic.deliver(0x31)
    assert rig.irr_bit(0x31) and rig.kicks > kicks
    assert rig.lapic.interrupt_pending()
    assert rig.lapic.acknowledge() == 0x31
    assert not rig.irr_bit(0x31) and rig.isr_bit(0x31)
    assert rig.rd(PPR) == 0x30
    assert not rig.lapic.interrupt_pending()


def test_irr_priority_order_highest_vector_first(rig):
    rig.enable()
    for vector in (0x35, 0x80, 0x52, 0xEC):
        rig.lapic.deliver(vector)
    got = []
    while rig.lapic.interrupt_pending():
        got.append(rig.lapic.acknowledge())
    assert got == [0xEC]               # the in-service 0xEC blocks lower classes
    rig.wr(EOI, 0)
    assert rig.lapic.acknowledge() == 0x80
    rig.wr(EOI, 0)
    assert rig.lapic.acknowledge() == 0x52
    rig.wr(EOI, 0)
    assert rig.lapic.acknowledge() == 0x35


def test_nesting_needs_a_higher_priority_class(rig):
    rig.enable()
    rig.lapic.deliver(0x55)
    assert rig.lapic.acknowledge() == 0x55
    rig.lapic.deliver(0x5A)            # same class as the in-service one: waits
    assert not rig.lapic.interrupt_pending()
    rig.lapic.deliver(0x61)            # higher class: nests
    assert rig.lapic.interrupt_pending()
    assert rig.lapic.acknowledge() == 0x61
    assert rig.rd(PPR) == 0x60


def test_tpr_masks_and_lowering_it_kicks(rig):
    rig.enable()
    rig.wr(TPR, 0x50)
    assert rig.rd(PPR) == 0x50
    rig.lapic.deliver(0x45)
    rig.lapic.deliver(0x50)
    assert not rig.lapic.interrupt_pending()
    assert rig.rd(APR) == 0x50
    kicks = rig.kicks
    rig.wr(TPR, 0x40)
    assert rig.lapic.interrupt_pending() and rig.kicks > kicks
    assert rig.lapic.acknowledge() == 0x50
    assert not rig.lapic.interrupt_pending()   # 0x45 is below the in-service 0x50


def test_ppr_takes_tpr_when_it_is_higher(rig):
    rig.enable()
    rig.lapic.deliver(0x30)
    rig.lapic.acknowledge()
    rig.wr(TPR, 0x47)
    assert rig.rd(PPR) == 0x47
    rig.wr(TPR, 0x2F)
    assert rig.rd(PPR) == 0x30


def test_acknowledge_with_nothing_deliverable_returns_spurious_vector(rig):
    rig.wr(SVR, 0x1F3)
    assert rig.lapic.acknowledge() == 0xF3
    rig.wr(TPR, 0xF0)
    rig.lapic.deliver(0x80)
    assert rig.lapic.acknowledge() == 0xF3
    assert rig.irr_bit(0x80) and not rig.isr_bit(0xF3)


def test_eoi_clears_highest_isr_and_uncovers_pending(rig):
    rig.enable()
    rig.lapic.deliver(0x40)
    assert rig.lapic.acknowledge() == 0x40
    rig.lapic.deliver(0x90)
    assert rig.lapic.acknowledge() == 0x90
    rig.lapic.deliver(0x42)
    assert not rig.lapic.interrupt_pending()
    rig.wr(EOI, 0)
    assert not rig.isr_bit(0x90) and rig.isr_bit(0x40)
    assert not rig.lapic.interrupt_pending()   # 0x42 is the same class as in-service 0x40
    kicks = rig.kicks
    rig.wr(EOI, 0)
    assert not rig.isr_bit(0x40)
    assert rig.lapic.interrupt_pending() and rig.kicks > kicks
    assert rig.broadcasts == []


def test_eoi_with_nothing_in_service_does_nothing(rig):
    rig.enable()
    rig.lapic.deliver(0x40)
    rig.wr(EOI, 0)
    assert rig.irr_bit(0x40) and rig.broadcasts == []


def test_level_interrupt_sets_tmr_and_eoi_broadcasts(rig):
    rig.enable()
    rig.lapic.deliver(0x61, level=True)
    assert rig.tmr_bit(0x61)
    assert rig.lapic.acknowledge() == 0x61
    rig.wr(EOI, 0)
    assert rig.broadcasts == [0x61]
    rig.lapic.deliver(0x61)            # edge this time: TMR cleared, no broadcast
    assert not rig.tmr_bit(0x61)
    rig.lapic.acknowledge()
    rig.wr(EOI, 0)
    assert rig.broadcasts == [0x61]


# ---------------------------------------------------------------- errors

def test_illegal_vector_received_sets_esr_after_write_latch(rig):
    rig.enable()
    rig.lapic.deliver(5)
    assert not rig.irr_bit(5) and not rig.lapic.interrupt_pending()
    assert rig.rd(ESR) == 0            # errors show only after a write latches them
    rig.wr(ESR, 0)
    assert rig.rd(ESR) == 0x40
    rig.wr(ESR, 0)                     # the accumulator was cleared by the first latch
    assert rig.rd(ESR) == 0


def test_lvt_error_raises_its_vector_once_per_new_error(rig):
    rig.enable()
    rig.wr(LVT_ERROR, 0xFE)
    rig.lapic.deliver(15)
    assert rig.irr_bit(0xFE)
    assert rig.lapic.acknowledge() == 0xFE
    rig.wr(EOI, 0)
    rig.lapic.deliver(15)              # same error bit still accumulated: no second interrupt
    assert not rig.irr_bit(0xFE)


def test_illegal_vector_in_icr_sets_send_illegal_and_is_not_sent(rig):
    rig.enable()
    rig.wr(ICR_LOW, (1 << 18) | 0x07)  # self, fixed, vector 7
    assert not rig.irr_bit(7)
    rig.wr(ESR, 0)
    assert rig.rd(ESR) == 0x20


# ---------------------------------------------------------------- IPIs

def test_self_ipi_by_shorthand_and_by_destination(rig):
    rig.enable()
    rig.wr(ICR_LOW, (1 << 18) | 0x22)                 # shorthand self
    assert rig.irr_bit(0x22)
    assert rig.rd(ICR_LOW) & (1 << 12) == 0            # delivery status idle
    rig.wr(ICR_LOW, (2 << 18) | 0x23)                 # all including self
    assert rig.irr_bit(0x23)
    rig.wr(ICR_LOW, (3 << 18) | 0x24)                 # all excluding self: nobody
    assert not rig.irr_bit(0x24)
    rig.wr(ICR_HIGH, 0 << 24)
    rig.wr(ICR_LOW, 0x25)                              # physical destination 0 = this APIC
    assert rig.irr_bit(0x25)
    rig.wr(ICR_HIGH, 7 << 24)
    rig.wr(ICR_LOW, 0x26)                              # physical destination 7: someone else
    assert not rig.irr_bit(0x26)
    assert rig.rd(ICR_HIGH) == 7 << 24


def test_logical_destination_flat_and_cluster(rig):
    rig.enable()
    rig.wr(LDR, 0x02 << 24)
    rig.wr(ICR_HIGH, 0x01 << 24)
    rig.wr(ICR_LOW, (1 << 11) | 0x30)
    assert not rig.irr_bit(0x30)
    rig.wr(ICR_HIGH, 0x03 << 24)
    rig.wr(ICR_LOW, (1 << 11) | 0x31)
    assert rig.irr_bit(0x31)
    rig.wr(DFR, 0x0FFFFFFF)                            # cluster model
    rig.wr(LDR, 0x21 << 24)                            # cluster 2, member bit 0
    rig.wr(ICR_HIGH, 0x11 << 24)
    rig.wr(ICR_LOW, (1 << 11) | 0x32)
    assert not rig.irr_bit(0x32)
    rig.wr(ICR_HIGH, 0x23 << 24)
    rig.wr(ICR_LOW, (1 << 11) | 0x33)
    assert rig.irr_bit(0x33)


def test_nmi_ipi_and_ignored_init_sipi(rig):
    rig.enable()
    rig.wr(ICR_LOW, (1 << 18) | (4 << 8))
    assert rig.lapic.nmi_pending()
    assert rig.lapic.acknowledge() == 2
    assert not rig.lapic.nmi_pending()
    rig.wr(ICR_HIGH, 1 << 24)
    rig.wr(ICR_LOW, (5 << 8) | (1 << 14))              # INIT
    rig.wr(ICR_LOW, (6 << 8) | 0x9A)                   # SIPI
    assert [ipi.delivery_mode for ipi in rig.lapic.ignored_ipis] == [5, 6]
    assert rig.lapic.ignored_ipis[1].vector == 0x9A
    assert rig.rd(ICR_LOW) & (1 << 12) == 0
    assert not rig.lapic.interrupt_pending()


# ---------------------------------------------------------------- LINT0 / LINT1

def test_lint0_extint_passes_the_pic_through(rig):
    rig.enable()
    rig.lapic.set_lint0(True)          # LINT0 masked: nothing
    assert not rig.lapic.interrupt_pending()
    kicks = rig.kicks
    rig.wr(LINT0, 0x700)               # ExtINT, unmasked: the high line is now pending
    assert rig.lapic.interrupt_pending() and rig.kicks > kicks
    rig.pic_vector = 0x28
    assert rig.lapic.acknowledge() == 0x28
    assert rig.pic_acks == 1
    assert all(rig.rd(ISR + 0x10 * i) == 0 for i in range(8))
    rig.lapic.set_lint0(False)
    assert not rig.lapic.interrupt_pending()
    assert rig.lapic.acknowledge() == 0xFF
    assert rig.pic_acks == 1


def test_lint0_extint_outranks_in_service_fixed_vectors(rig):
    rig.enable()
    rig.wr(LINT0, 0x700)
    rig.lapic.deliver(0xF0)
    assert rig.lapic.acknowledge() == 0xF0
    rig.wr(TPR, 0xFF)
    rig.lapic.set_lint0(True)
    assert rig.lapic.interrupt_pending()
    assert rig.lapic.acknowledge() == 0x20


def test_lint1_nmi_on_rising_edge(rig):
    rig.enable()
    rig.wr(LINT1, 0x400)
    rig.lapic.set_lint1(True)
    assert rig.lapic.nmi_pending()
    assert rig.lapic.acknowledge() == 2
    rig.lapic.set_lint1(True)          # still high: no new edge
    assert not rig.lapic.nmi_pending()
    rig.lapic.set_lint1(False)
    rig.lapic.set_lint1(True)
    assert rig.lapic.nmi_pending()


def test_lint_fixed_mode_delivers_vector_on_edge(rig):
    rig.enable()
    rig.wr(LINT1, 0x000 | 0x71)
    rig.lapic.set_lint1(True)
    assert rig.irr_bit(0x71)


# ---------------------------------------------------------------- software / hardware disable

def test_software_disabled_lvts_read_masked_and_stay_masked(rig):
    rig.wr(LINT0, 0x700)               # SVR bit 8 clear at power-on
    assert rig.rd(LINT0) == 0x10700
    rig.enable()
    rig.wr(LINT0, 0x700)
    rig.wr(LVT_TIMER, 0xEC)
    assert rig.rd(LINT0) == 0x700 and rig.rd(LVT_TIMER) == 0xEC
    rig.wr(SVR, 0xFF)                  # software disable masks every LVT
    assert rig.rd(LINT0) == 0x10700 and rig.rd(LVT_TIMER) == 0x100EC
    rig.wr(SVR, 0x1FF)                 # re-enable does not unmask
    assert rig.rd(LVT_TIMER) == 0x100EC


def test_software_disabled_drops_fixed_but_keeps_held_and_takes_nmi(rig):
    rig.enable()
    rig.lapic.deliver(0x40)
    rig.wr(SVR, 0xFF)
    rig.lapic.deliver(0x50)
    assert not rig.irr_bit(0x50)
    assert rig.irr_bit(0x40) and rig.lapic.interrupt_pending()
    rig.lapic.nmi()
    assert rig.lapic.nmi_pending()


def test_hardware_disable_floats_the_window_and_reenable_resets(rig):
    rig.enable()
    rig.wr(TPR, 0x20)
    rig.lapic.deliver(0x40)
    rig.wr(TIMER_INITIAL, 1000)
    assert rig.lapic.write_apic_base(0xFEE00100)       # bit 11 clear
    assert not rig.lapic.hardware_enabled
    assert rig.rd(TPR) == 0xFFFFFFFF and rig.rd(VERSION) == 0xFFFFFFFF
    rig.wr(TPR, 0)                                     # ignored
    assert not rig.lapic.interrupt_pending()
    rig.lapic.deliver(0x41)
    rig.lapic.nmi()
    assert not rig.lapic.interrupt_pending() and not rig.lapic.nmi_pending()
    assert rig.advance_to(2000) == 0                   # the timer was stopped
    assert rig.lapic.write_apic_base(0xFEE00900)
    assert rig.rd(TPR) == 0 and rig.rd(SVR) == 0xFF and rig.rd(LINT0) == 0x10000
    assert rig.rd(IRR + 0x20) == 0 and rig.rd(TIMER_INITIAL) == 0


def test_hardware_disabled_lint_pins_are_intr_and_nmi(rig):
    rig.lapic.write_apic_base(0xFEE00100)
    rig.lapic.set_lint0(True)
    assert rig.lapic.interrupt_pending()
    assert rig.lapic.acknowledge() == 0x20
    rig.lapic.set_lint0(False)
    assert not rig.lapic.interrupt_pending()
    assert rig.lapic.acknowledge() is None
    rig.lapic.set_lint1(True)
    assert rig.lapic.nmi_pending()


def test_apic_base_reserved_bits_are_gp(rig):
    for bad in (0xFEE00901, 0xFEE00B00, 0xFEE00D00, 1 << 40 | 0xFEE00900):
        assert rig.lapic.write_apic_base(bad) is False
    assert rig.lapic.apic_base == 0xFEE00900
    assert rig.lapic.write_apic_base(0xFED00800)
    assert rig.lapic.base_address == 0xFED00000 and rig.lapic.apic_base == 0xFED00800


# ---------------------------------------------------------------- timer

def test_one_shot_fires_at_initial_count_times_divider(rig):
    rig.enable()
    rig.wr(LVT_TIMER, 0xEC)
    rig.wr(TIMER_DCR, 0x3)             # divide by 16
    rig.advance_to(100)
    rig.wr(TIMER_INITIAL, 250)         # 250 x 16 = 4000 ns
    assert rig.clock.next_deadline() == 4100
    rig.advance_to(4090)
    assert not rig.irr_bit(0xEC)
    assert rig.rd(TIMER_CURRENT) == 1  # 3990 ns = 249 ticks
    rig.advance_to(4100)
    assert rig.irr_bit(0xEC)
    assert rig.rd(TIMER_CURRENT) == 0
    assert rig.clock.next_deadline() is None           # one-shot: stops
    assert rig.rd(TIMER_INITIAL) == 250


@pytest.mark.parametrize("dcr,divider", [(0xB, 1), (0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16),
                                         (0x8, 32), (0x9, 64), (0xA, 128)])
def test_divide_configuration_encoding(dcr, divider):
    r = Rig()
    r.wr(TIMER_DCR, dcr)
    assert r.rd(TIMER_DCR) == dcr
    r.wr(TIMER_INITIAL, 10)
    assert r.clock.next_deadline() == 10 * divider


def test_current_count_decreases_with_guest_time(rig):
    rig.wr(TIMER_DCR, 0xB)             # divide by 1: one tick per ns
    rig.wr(TIMER_INITIAL, 1_000_000)
    assert rig.rd(TIMER_CURRENT) == 1_000_000
    rig.advance_to(10)
    assert rig.rd(TIMER_CURRENT) == 999_990
    rig.advance_to(500_000)
    assert rig.rd(TIMER_CURRENT) == 500_000


def test_periodic_fires_repeatedly_and_reloads(rig):
    rig.enable()
    rig.wr(LVT_TIMER, PERIODIC | 0xEF)
    rig.wr(TIMER_DCR, 0xB)
    rig.wr(TIMER_INITIAL, 1000)
    fired = []
    for t in range(1000, 5001, 1000):
        rig.advance_to(t)
        fired.append(rig.irr_bit(0xEF))
        assert rig.lapic.acknowledge() == 0xEF
        rig.wr(EOI, 0)
        assert rig.clock.next_deadline() == t + 1000
    assert fired == [True] * 5
    rig.advance_to(5250)
    assert rig.rd(TIMER_CURRENT) == 750


def test_periodic_late_callback_keeps_cadence(rig):
    rig.enable()
    rig.wr(LVT_TIMER, PERIODIC | 0xEF)
    rig.wr(TIMER_DCR, 0xB)
    rig.wr(TIMER_INITIAL, 1000)
    assert rig.advance_to(3500) == 1   # three periods missed: one interrupt, no burst
    assert rig.clock.next_deadline() == 4000


def test_initial_count_zero_stops_the_timer(rig):
    rig.enable()
    rig.wr(LVT_TIMER, PERIODIC | 0xEF)
    rig.wr(TIMER_INITIAL, 1000)
    rig.advance_to(500)
    rig.wr(TIMER_INITIAL, 0)
    assert rig.rd(TIMER_CURRENT) == 0
    assert rig.advance_to(100_000) == 0
    assert not rig.irr_bit(0xEF)


def test_rewriting_initial_count_restarts_and_cancels(rig):
    rig.enable()
    rig.wr(LVT_TIMER, 0xEC)
    rig.wr(TIMER_DCR, 0xB)
    rig.wr(TIMER_INITIAL, 1000)
    rig.advance_to(600)
    rig.wr(TIMER_INITIAL, 1000)
    assert rig.advance_to(1000) == 0 and not rig.irr_bit(0xEC)
    rig.advance_to(1600)
    assert rig.irr_bit(0xEC)


def test_max_initial_count_does_not_overflow(rig):
    rig.enable()
    rig.wr(LVT_TIMER, 0xEC)
    rig.wr(TIMER_DCR, 0xA)             # divide by 128
    rig.wr(TIMER_INITIAL, 0xFFFFFFFF)
    assert rig.rd(TIMER_INITIAL) == 0xFFFFFFFF
    assert rig.rd(TIMER_CURRENT) == 0xFFFFFFFF
    deadline = 0xFFFFFFFF * 128        # about 550 s of guest time
    assert rig.clock.next_deadline() == deadline and deadline % 10 == 0
    rig.advance_to(1280)
    assert rig.rd(TIMER_CURRENT) == 0xFFFFFFFF - 10
    rig.advance_to(deadline - 10)
    assert not rig.irr_bit(0xEC) and rig.rd(TIMER_CURRENT) == 1
    rig.advance_to(deadline)
    assert rig.irr_bit(0xEC) and rig.rd(TIMER_CURRENT) == 0


def test_masked_timer_counts_but_does_not_interrupt(rig):
    rig.enable()
    rig.wr(LVT_TIMER, MASKED | PERIODIC | 0xEC)
    rig.wr(TIMER_DCR, 0xB)
    rig.wr(TIMER_INITIAL, 1000)
    rig.advance_to(1500)
    assert rig.rd(TIMER_CURRENT) == 500
    assert not rig.irr_bit(0xEC) and not rig.lapic.interrupt_pending()
    rig.wr(LVT_TIMER, PERIODIC | 0xEC)
    rig.advance_to(2000)
    assert rig.irr_bit(0xEC)


def test_dcr_change_keeps_counting_from_current_count(rig):
    rig.wr(TIMER_DCR, 0xB)
    rig.wr(TIMER_INITIAL, 1000)
    rig.advance_to(400)
    rig.wr(TIMER_DCR, 0x0)             # divide by 2 from here
    assert rig.rd(TIMER_CURRENT) == 600
    assert rig.clock.next_deadline() == 400 + 1200


def test_tsc_deadline_arm_fire_and_disarm(rig):
    rig.enable()
    rig.lapic.write_tsc_deadline(5000)  # not in TSC-deadline mode: ignored
    assert rig.lapic.tsc_deadline == 0 and rig.clock.next_deadline() is None
    rig.wr(LVT_TIMER, TSC_DEADLINE | 0xEC)
    rig.wr(TIMER_INITIAL, 100)          # ignored in TSC-deadline mode
    assert rig.rd(TIMER_INITIAL) == 0
    rig.lapic.write_tsc_deadline(5000)
    assert rig.lapic.tsc_deadline == 5000
    rig.advance_to(4990)
    assert not rig.irr_bit(0xEC)
    rig.advance_to(5000)
    assert rig.irr_bit(0xEC) and rig.lapic.tsc_deadline == 0
    rig.lapic.acknowledge()
    rig.wr(EOI, 0)
    rig.lapic.write_tsc_deadline(8000)
    rig.lapic.write_tsc_deadline(0)     # disarm
    assert rig.advance_to(9000) == 0 and not rig.irr_bit(0xEC)


def test_tsc_deadline_rearm_replaces_and_past_fires_next_boundary(rig):
    rig.enable()
    rig.wr(LVT_TIMER, TSC_DEADLINE | 0xEC)
    rig.lapic.write_tsc_deadline(3000)
    rig.lapic.write_tsc_deadline(6000)
    assert rig.advance_to(3000) == 0
    rig.advance_to(6000)
    assert rig.irr_bit(0xEC)
    rig.lapic.acknowledge()
    rig.wr(EOI, 0)
    rig.lapic.write_tsc_deadline(10)    # in the past
    assert rig.advance_to(6010) == 1 and rig.irr_bit(0xEC)


def test_leaving_tsc_deadline_mode_disarms(rig):
    rig.enable()
    rig.wr(LVT_TIMER, TSC_DEADLINE | 0xEC)
    rig.lapic.write_tsc_deadline(3000)
    rig.wr(LVT_TIMER, 0xEC)             # back to one-shot
    assert rig.lapic.tsc_deadline == 0
    assert rig.advance_to(4000) == 0 and not rig.irr_bit(0xEC)


def test_tsc_deadline_masked_clears_msr_without_interrupt(rig):
    rig.enable()
    rig.wr(LVT_TIMER, MASKED | TSC_DEADLINE | 0xEC)
    rig.lapic.write_tsc_deadline(1000)
    rig.advance_to(1000)
    assert rig.lapic.tsc_deadline == 0 and not rig.irr_bit(0xEC)


def test_lint_active_low_polarity_inverts_the_wire(rig):
    rig.enable()
    rig.wr(LINT0, (1 << 13) | 0x700)   # ExtINT, active low: an idle-low wire is asserted
    assert rig.lapic.interrupt_pending()
    rig.lapic.set_lint0(True)
    assert not rig.lapic.interrupt_pending()
    rig.wr(LINT1, (1 << 13) | 0x400)   # NMI, active low: a falling wire is the edge
    rig.lapic.set_lint1(True)
    assert not rig.lapic.nmi_pending()
    rig.lapic.set_lint1(False)
    assert rig.lapic.nmi_pending()


def test_extint_message_from_the_io_apic_takes_the_pic_vector(rig):
    rig.enable()
    rig.lapic.deliver_extint(False)
    assert rig.lapic.interrupt_pending()
    rig.pic_vector = 0x30
    assert rig.lapic.acknowledge() == 0x30 and rig.pic_acks == 1
    assert not rig.lapic.interrupt_pending()


def test_accepts_physical_id_and_broadcast():
    r = Rig(apic_id=2)
    assert r.lapic.accepts(2, False) and r.lapic.accepts(0xFF, False)
    assert not r.lapic.accepts(0, False)
    r.wr(ID, 5 << 24)                  # the ID register is what the bus matches
    assert r.lapic.accepts(5, False) and not r.lapic.accepts(2, False)


def test_apr_follows_irr_isr_and_tpr(rig):
    rig.enable()
    rig.lapic.deliver(0x70)
    assert rig.rd(APR) == 0x70
    rig.wr(TPR, 0x85)
    assert rig.rd(APR) == 0x85
    rig.wr(TPR, 0)
    rig.lapic.acknowledge()
    assert rig.rd(APR) == 0x70         # in service now


def test_icr_low_reads_back_writable_bits_only(rig):
    rig.wr(ICR_HIGH, 0xFFFFFFFF)
    assert rig.rd(ICR_HIGH) == 0xFF000000
    rig.wr(ICR_LOW, 0xFFFFFFFF & ~(7 << 8) | (5 << 8))   # INIT, every other bit set
    assert rig.rd(ICR_LOW) == 0x000CCDFF               # delivery status (bit 12) and bits 13, 16-17, 20-31 read 0
    assert rig.lapic.ignored_ipi_count == 1
