"""The 16550A driven register by register, including the probe sequence of Linux's 8250 driver."""

from hvsim.core.devices.line import IrqLine
from hvsim.core.devices.uart import Uart16550A

BASE = 0x3F8
RX, IER, IIR, FCR, LCR, MCR, LSR, MSR, SCR = 0, 1, 2, 2, 3, 4, 5, 6, 7


class Port:
    def __init__(self):
        self.sent = bytearray()
        self.irq = IrqLine(name="irq4")
        self.edges = []
        self.irq.connect(self.edges.append)
        self.uart = Uart16550A(irq=self.irq, output=self.sent.extend, base=BASE)

    def inb(self, reg):
        return self.uart.read(BASE + reg, 1)

    def outb(self, reg, value):
        self.uart.write(BASE + reg, 1, value)


def size_fifo(p):
    """8250_port.c size_fifo: fill the FIFO in loopback at divisor 1, count what comes back."""
    old_lcr = p.inb(LCR)
    p.outb(LCR, 0)
    old_fcr = p.inb(FCR)
    old_mcr = p.inb(MCR)
    p.outb(FCR, 0x01 | 0x02 | 0x04)
    p.outb(MCR, 0x10)
    p.outb(LCR, 0x80)
    old_dl = p.inb(0) | p.inb(1) << 8
    p.outb(0, 1)
    p.outb(1, 0)
    p.outb(LCR, 0x03)
    for count in range(256):
        p.outb(0, count)
    count = 0
    while p.inb(LSR) & 0x01 and count < 256:
        p.inb(RX)
        count += 1
    p.outb(FCR, old_fcr)
    p.outb(MCR, old_mcr)
    p.outb(LCR, 0x80)
    p.outb(0, old_dl & 0xFF)
    p.outb(1, old_dl >> 8)
    p.outb(LCR, old_lcr)
    return count


def autoconfig(p):
    """The checks of 8250_port.c autoconfig() and autoconfig_16550a() (with the 16550A variant
    probes compiled in), returning the port type the driver would pick."""
    scratch = p.inb(IER)
    p.outb(IER, 0)
    scratch2 = p.inb(IER) & 0x0F
    p.outb(IER, 0x0F)
    scratch3 = p.inb(IER) & 0x0F
    p.outb(IER, scratch)
    if scratch2 != 0 or scratch3 != 0x0F:
        return "unknown (IER test)"
    save_mcr, save_lcr = p.inb(MCR), p.inb(LCR)
    p.outb(MCR, 0x10 | 0x0A)
    status1 = p.inb(MSR) & 0xF0
    p.outb(MCR, save_mcr)
    if status1 != 0x90:
        return "unknown (loop test)"
    p.outb(LCR, 0xBF)
    p.outb(2, 0)                                          # EFR, if there were one
    p.outb(LCR, 0)
    p.outb(FCR, 0x01)
    kind = p.inb(IIR) >> 6
    if kind != 3:
        return {0: "8250/16450", 1: "unknown", 2: "16550"}[kind]
    # autoconfig_16550a
    p.outb(LCR, 0x80)
    if p.inb(2) == 0:
        return "16650 (EFRv1)"
    p.outb(LCR, 0xBF)
    if p.inb(2) == 0:
        return "16650V2/16850 (EFRv2)"
    p.outb(LCR, 0)
    status1 = p.inb(MCR)
    p.outb(LCR, 0xE0)
    status2 = p.inb(2)
    if not (status2 ^ status1) & 0x10:
        p.outb(LCR, 0)
        p.outb(MCR, status1 ^ 0x10)
        p.outb(LCR, 0xE0)
        status2 = p.inb(2)
        p.outb(LCR, 0)
        p.outb(MCR, status1)
        if (status2 ^ status1) & 0x10:
            return "NS16550A"
    p.outb(LCR, 0)
    p.outb(FCR, 0x01 | 0x20)
    status1 = p.inb(IIR) >> 5
    p.outb(FCR, 0x01)
    p.outb(LCR, 0x80)
    p.outb(FCR, 0x01 | 0x20)
    status2 = p.inb(IIR) >> 5
    p.outb(FCR, 0x01)
    p.outb(LCR, 0)
    if status1 == 6 and status2 == 7:
        return "16750"
    iersave = p.inb(IER)
    p.outb(IER, iersave & ~0x40)
    if not p.inb(IER) & 0x40:
        p.outb(IER, iersave | 0x40)
        if p.inb(IER) & 0x40:
            return "XScale"
    p.outb(IER, iersave)
    if size_fifo(p) == 64:
        return "U6_16550A"
    p.outb(LCR, save_lcr)
    p.outb(MCR, save_mcr)
    p.outb(FCR, 0x01)                                     # serial8250_clear_fifos
    p.outb(FCR, 0x07)
    p.outb(FCR, 0)
    p.inb(RX)
    p.outb(IER, 0)
    return "16550A"


def test_linux_autoconfig_sees_a_16550a():
    p = Port()
    assert autoconfig(p) == "16550A"
    assert not p.irq.level
    assert p.sent == b""                                  # the probe's bytes stayed in loopback


def test_size_fifo_counts_16():
    p = Port()
    assert size_fifo(p) == 16


def test_startup_thre_test_reasserts_thre():
    """serial8250_do_startup: IER=THRI, read IIR, IER=0, IER=THRI, read IIR; both must show THRE
    or the driver marks the port UART_BUG_THRE."""
    p = Port()
    p.outb(IER, 0x02)
    iir1 = p.inb(IIR)
    p.outb(IER, 0)
    p.outb(IER, 0x02)
    iir = p.inb(IIR)
    p.outb(IER, 0)
    assert iir1 & 0x0F == 0x02 and iir & 0x0F == 0x02
    assert not p.irq.level


def test_thre_interrupt_cycle():
    p = Port()
    p.outb(FCR, 0x07)
    p.outb(IER, 0x02)
    assert p.irq.level
    assert p.inb(IIR) == 0xC2
    assert not p.irq.level                                # reading IIR cleared the THRE source
    assert p.inb(IIR) == 0xC1
    p.edges.clear()
    p.outb(0, ord("h"))
    assert p.sent == b"h"
    assert p.edges == [True]                              # THR emptied again: a new edge
    p.outb(0, ord("i"))
    assert p.edges == [True, False, True]
    assert p.inb(LSR) & 0x60 == 0x60
    p.outb(IER, 0x00)
    assert not p.irq.level
    assert p.sent == b"hi"


def test_rx_interrupt_with_receive_and_trigger_level():
    p = Port()
    p.outb(FCR, 0x81)                                     # FIFO on, trigger 8
    p.outb(IER, 0x01)
    assert not p.irq.level
    p.uart.receive(b"abc")
    assert p.irq.level
    assert p.inb(IIR) == 0xCC                             # below trigger: character timeout
    p.uart.receive(b"defgh")
    assert p.inb(IIR) == 0xC4                             # trigger reached: data available
    data = bytearray()
    while p.inb(LSR) & 0x01:
        data.append(p.inb(RX))
    assert data == b"abcdefgh"
    assert not p.irq.level
    assert p.inb(IIR) == 0xC1


def test_rx_overrun_sets_oe_and_rls_interrupt():
    p = Port()
    p.outb(FCR, 0x01)
    p.outb(IER, 0x05)
    p.uart.receive(bytes(range(20)))
    assert p.inb(IIR) == 0xC6                             # RLS has top priority
    lsr = p.inb(LSR)
    assert lsr & 0x03 == 0x03
    assert not p.inb(LSR) & 0x02                          # reading LSR cleared OE
    assert p.inb(IIR) == 0xC4
    assert bytes(p.inb(RX) for _ in range(16)) == bytes(range(16))


def test_non_fifo_mode_holding_register_overrun():
    p = Port()
    p.uart.receive(b"xy")
    assert p.inb(LSR) & 0x03 == 0x03
    assert p.inb(RX) == ord("y")
    assert p.inb(IIR) == 0x01                             # no FIFO bits


def test_loopback_tx_to_rx_and_modem_lines():
    p = Port()
    p.outb(MCR, 0x10)
    assert p.inb(MSR) & 0xF0 == 0x00
    p.outb(MCR, 0x10 | 0x0F)
    msr = p.inb(MSR)
    assert msr & 0xF0 == 0xF0 and msr & 0x0B == 0x0B      # deltas for CTS, DSR, DCD
    assert p.inb(MSR) & 0x0F == 0                         # deltas cleared by the read
    p.outb(MCR, 0x10 | 0x0B)                              # OUT1 (RI) falls: trailing edge
    assert p.inb(MSR) & 0x04
    p.outb(0, 0x42)
    assert p.sent == b""
    assert p.inb(LSR) & 0x01 and p.inb(RX) == 0x42
    p.uart.receive(b"z")                                  # the line input is disconnected
    assert not p.inb(LSR) & 0x01


def test_modem_status_interrupt_lowest_priority():
    p = Port()
    p.outb(IER, 0x0A)                                     # THRE and modem status
    p.outb(MCR, 0x10 | 0x02)                              # loopback RTS -> CTS delta
    assert p.inb(IIR) == 0x02                             # THRE first
    assert p.inb(IIR) == 0x00                             # then modem status
    p.inb(MSR)
    assert p.inb(IIR) == 0x01
    assert not p.irq.level


def test_iir_priority_order():
    p = Port()
    p.outb(FCR, 0x01)
    p.outb(IER, 0x0F)
    p.outb(MCR, 0x02)                                     # no loop: no modem delta
    p.uart.receive(bytes(17))
    assert p.inb(IIR) & 0x0F == 0x06
    p.inb(LSR)
    assert p.inb(IIR) & 0x0F == 0x04
    while p.inb(LSR) & 1:
        p.inb(RX)
    assert p.inb(IIR) & 0x0F == 0x02


def test_divisor_latch_and_scratch():
    p = Port()
    p.outb(LCR, 0x83)
    p.outb(0, 0x01)
    p.outb(1, 0x00)
    assert p.inb(0) == 0x01 and p.inb(1) == 0x00
    p.outb(LCR, 0x03)
    assert p.inb(IER) == 0x00
    p.outb(SCR, 0xA5)
    assert p.inb(SCR) == 0xA5
    assert p.inb(LCR) == 0x03


def test_lcr_bf_does_not_expose_an_efr():
    p = Port()
    p.outb(FCR, 0x01)
    p.outb(LCR, 0xBF)
    assert p.inb(2) != 0                                  # IIR, not an EFR reading 0
    p.outb(2, 0xA8)                                       # lands in FCR (enable off: FIFO off)
    p.outb(LCR, 0)
    assert p.inb(IIR) >> 6 == 0
