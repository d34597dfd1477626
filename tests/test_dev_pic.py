"""The 8259A pair driven through its ports the way Linux's i8259.c and a BIOS drive it."""

from hvsim.core.devices.line import IrqLine
from hvsim.core.devices.pic import Pic8259Pair


def make_pic(master_base=0x30, slave_base=0x38, aeoi=False):
    intr = IrqLine(name="intr")
    pic = Pic8259Pair(intr=intr)
    icw4 = 0x03 if aeoi else 0x01
    # The sequence of init_8259A(): ICW1 edge+ICW4, ICW2 base, ICW3 cascade, ICW4 8086 mode.
    pic.write(0x20, 1, 0x11)
    pic.write(0x21, 1, master_base)
    pic.write(0x21, 1, 0x04)
    pic.write(0x21, 1, icw4)
    pic.write(0xA0, 1, 0x11)
    pic.write(0xA1, 1, slave_base)
    pic.write(0xA1, 1, 0x02)
    pic.write(0xA1, 1, icw4)
    pic.write(0x21, 1, 0x00)
    pic.write(0xA1, 1, 0x00)
    return pic, intr


def test_imr_readback_probe():
    pic, _ = make_pic()
    # probe_8259A: write 0xff then 0xfb to the master IMR and read it back.
    pic.write(0xA1, 1, 0xFF)
    pic.write(0x21, 1, 0xFF)
    assert pic.read(0x21, 1) == 0xFF
    pic.write(0x21, 1, 0xFB)
    assert pic.read(0x21, 1) == 0xFB
    assert pic.read(0xA1, 1) == 0xFF


def test_icw1_clears_imr_and_requests():
    pic, intr = make_pic()
    pic.write(0x21, 1, 0xFF)
    pic.set_irq(3, True)
    assert pic.read(0x20, 1) == 0x08                  # IRR (default read register)
    pic.write(0x20, 1, 0x11)
    assert pic.read(0x21, 1) == 0x00
    assert pic.read(0x20, 1) == 0x00


def test_edge_request_raises_intr_and_ack_returns_vector():
    pic, intr = make_pic()
    pic.set_irq(0, True)
    pic.set_irq(0, False)                             # a pulse: the latch holds the request
    assert intr.level
    assert pic.acknowledge() == 0x30
    assert not intr.level
    pic.write(0x20, 1, 0x0B)                          # OCW3: read ISR
    assert pic.read(0x20, 1) == 0x01
    pic.write(0x20, 1, 0x20)                          # non-specific EOI
    assert pic.read(0x20, 1) == 0x00


def test_priority_and_nesting():
    pic, intr = make_pic()
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x34
    pic.set_irq(6, True)                              # lower priority than IRQ4 in service
    assert not intr.level
    pic.set_irq(1, True)                              # higher priority: nests
    assert intr.level
    assert pic.acknowledge() == 0x31
    pic.write(0x20, 1, 0x61)                          # specific EOI for IRQ1
    assert not intr.level                             # IRQ4 still in service blocks IRQ6
    pic.write(0x20, 1, 0x20)                          # non-specific EOI clears IRQ4
    assert intr.level
    assert pic.acknowledge() == 0x36


def test_mask_blocks_request_until_unmasked():
    pic, intr = make_pic()
    pic.write(0x21, 1, 0x02)
    pic.set_irq(1, True)
    assert not intr.level
    pic.write(0x21, 1, 0x00)
    assert intr.level


def test_cascade_through_irq2_and_eoi_order():
    pic, intr = make_pic()
    pic.set_irq(12, True)
    assert intr.level
    assert pic.acknowledge() == 0x3C
    pic.write(0xA0, 1, 0x0B)
    pic.write(0x20, 1, 0x0B)
    assert pic.read(0xA0, 1) == 0x10
    assert pic.read(0x20, 1) == 0x04
    # mask_and_ack_8259A: specific EOI to the slave, then to IR2 on the master.
    pic.write(0xA0, 1, 0x60 + 4)
    pic.write(0x20, 1, 0x60 + 2)
    assert pic.read(0xA0, 1) == 0 and pic.read(0x20, 1) == 0
    pic.set_irq(12, False)
    pic.set_irq(12, True)
    assert intr.level                                 # the slave's new edge reaches the master


def test_slave_mask_hides_cascade():
    pic, intr = make_pic()
    pic.write(0xA1, 1, 0x01)
    pic.set_irq(8, True)
    assert not intr.level
    pic.write(0xA1, 1, 0x00)
    assert intr.level


def test_spurious_irq7_when_level_request_vanishes():
    pic, intr = make_pic()
    pic.write(0x4D0, 1, 0x20)                         # IRQ5 level triggered
    pic.set_irq(5, True)
    assert intr.level
    pic.set_irq(5, False)
    assert not intr.level
    assert pic.acknowledge() == 0x37                  # spurious IRQ7
    pic.write(0x20, 1, 0x0B)
    assert pic.read(0x20, 1) == 0x00                  # ISR bit 7 not set: Linux sees it as spurious


def test_spurious_irq15_through_cascade():
    pic, intr = make_pic()
    pic.write(0x4D1, 1, 0x02)                         # IRQ9 level triggered
    pic.set_irq(9, True)
    assert intr.level
    # The master already latched IR2's edge; the slave's request vanishes before INTA.
    pic.set_irq(9, False)
    assert pic.acknowledge() == 0x3F
    pic.write(0x20, 1, 0x0B)
    assert pic.read(0x20, 1) == 0x04                  # IR2 in service on the master


def test_level_input_requests_again_after_eoi_while_high():
    pic, intr = make_pic()
    pic.write(0x4D1, 1, 0x08)                         # IRQ11 level
    assert pic.read(0x4D1, 1) == 0x08
    pic.set_irq(11, True)
    assert pic.acknowledge() == 0x3B
    pic.write(0xA0, 1, 0x20)
    pic.write(0x20, 1, 0x20)
    assert intr.level                                 # still high: requests again
    pic.set_irq(11, False)
    # The master's IR2 is edge triggered and already latched the cascade: as on a real PC the
    # vanished slave request shows up as a spurious IRQ15.
    assert pic.acknowledge() == 0x3F
    assert not intr.level


def test_edge_input_needs_new_rising_edge():
    pic, intr = make_pic()
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x33
    pic.write(0x20, 1, 0x20)
    assert not intr.level                             # held high: no new edge, no request
    pic.set_irq(3, False)
    pic.set_irq(3, True)
    assert intr.level


def test_elcr_fixed_edge_bits_and_word_access():
    pic, _ = make_pic()
    pic.write(0x4D0, 2, 0xFFFF)
    assert pic.read(0x4D0, 1) == 0xF8
    assert pic.read(0x4D1, 1) == 0xDE
    assert pic.read(0x4D0, 2) == 0xDEF8


def test_ltim_makes_all_inputs_level():
    intr = IrqLine()
    pic = Pic8259Pair(intr=intr)
    pic.write(0x20, 1, 0x19)                          # ICW1 with LTIM
    pic.write(0x21, 1, 0x08)
    pic.write(0x21, 1, 0x04)
    pic.write(0x21, 1, 0x01)
    pic.write(0x21, 1, 0x00)
    pic.set_irq(1, True)
    assert intr.level
    pic.set_irq(1, False)
    assert not intr.level


def test_poll_command():
    pic, intr = make_pic()
    pic.set_irq(5, True)
    pic.write(0x20, 1, 0x0C)                          # OCW3 poll
    assert pic.read(0x20, 1) == 0x85
    assert not intr.level                             # the poll read acknowledged it
    pic.write(0x20, 1, 0x0B)
    assert pic.read(0x20, 1) == 0x20
    pic.write(0x20, 1, 0x0C)
    assert pic.read(0x20, 1) == 0x00                  # nothing pending


def test_auto_eoi_leaves_isr_clear():
    pic, intr = make_pic(aeoi=True)
    pic.set_irq(2 + 1, True)
    assert pic.acknowledge() == 0x33
    pic.write(0x20, 1, 0x0B)
    assert pic.read(0x20, 1) == 0x00


def test_rotate_on_nonspecific_eoi_makes_served_irq_lowest():
    pic, intr = make_pic()
    pic.set_irq(1, True)
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x31
    pic.write(0x20, 1, 0xA0)                          # rotate on non-specific EOI
    pic.set_irq(1, False)
    pic.set_irq(1, True)
    assert pic.acknowledge() == 0x34                  # IRQ1 is now lowest priority


def test_special_mask_mode_lets_lower_priority_in():
    pic, intr = make_pic()
    pic.set_irq(2 + 1, True)
    assert pic.acknowledge() == 0x33
    pic.set_irq(6, True)
    assert not intr.level
    pic.write(0x21, 1, 0x08)                          # mask the in-service IRQ3
    pic.write(0x20, 1, 0x68)                          # OCW3: set special mask mode
    assert intr.level
    assert pic.acknowledge() == 0x36


def test_set_priority_command():
    pic, intr = make_pic()
    pic.write(0x20, 1, 0xC0 + 4)                      # IRQ4 lowest, so IRQ5 highest
    pic.set_irq(0, True)
    pic.set_irq(5, True)
    assert pic.acknowledge() == 0x35


def test_acknowledge_with_nothing_pending_is_spurious():
    pic, intr = make_pic()
    assert pic.acknowledge() == 0x37


def test_switching_a_high_input_to_level_requests_while_high():
    pic, intr = make_pic()
    pic.set_irq(10, True)
    assert pic.acknowledge() == 0x3A
    pic.write(0xA0, 1, 0x20)
    pic.write(0x20, 1, 0x20)
    assert not intr.level                             # edge mode: no new edge
    pic.write(0x4D1, 1, 0x04)                         # IRQ10 becomes level triggered
    assert intr.level
    pic.set_irq(10, False)
    pic.write(0x4D1, 1, 0x00)
    assert pic.read(0xA0, 1) == 0x00                  # IRR empty: nothing latched
