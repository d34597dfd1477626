"""A National/TI 16550A UART with its interrupt, as on a PC's COM port.

Transmission is instantaneous: a byte written to THR goes to ``output`` at once, so the
transmitter holding register and shift register are always empty (LSR THRE and TEMT always set).
The THRE interrupt source is the datasheet's: it becomes pending when THR empties (that is, right
after every THR write, as QEMU's does when its transmit timer fires) and when ETBEI is enabled
while THR is empty (Linux's THRE test and its start_tx rely on that); it is cleared by writing THR
or by reading IIR while THRE is the reported source.  Every THR write with ETBEI enabled therefore
lowers and raises ``irq`` again, which is the edge an edge-triggered 8259 or I/O APIC input needs.

Received bytes (``receive``) enter a 16-byte FIFO (one holding register with FIFOs off); a byte
arriving to a full FIFO (or a full holding register) is lost and sets LSR OE.  The receive
data interrupt is pending when the FIFO reaches its trigger level (1/4/8/14 bytes from FCR); below
the trigger level the character timeout interrupt (IIR 0x0C) is pending as soon as the FIFO holds
data: the model has no clock, so the four character times of silence the chip waits for are taken
to have passed (in keeping with instantaneous transmission).

The ``irq`` level is "some enabled interrupt is pending" (IIR bit 0 clear), as QEMU's: MCR OUT2,
which gates the interrupt onto the ISA bus on real PC boards, is stored but does not gate it.

Modelled: RBR/THR, IER (the four enable bits; the rest read 0), IIR with priority RLS > RDA /
character timeout > THRE > modem status and bits 7:6 set while the FIFOs are enabled, FCR (enable,
clear RX/TX, trigger level; toggling the enable clears the FIFOs; the 64-byte bit of a 16750 is
ignored, so IIR bit 5 never sets), LCR (DLAB selects DLL/DLM at offsets 0/1 only: offset 2 is
FCR/IIR whatever LCR holds, as a 16550A has no EFR, so Linux's LCR=0xBF EFR probe reads IIR and
finds no 16650/16750/ST16C654), MCR (DTR/RTS/OUT1/OUT2/loopback), loopback (THR goes to the receive
FIFO, the modem outputs appear as CTS/DSR/RI/DCD, the line input is disconnected), LSR (DR, OE,
THRE, TEMT; reading clears OE), MSR (lines and delta bits, deltas cleared on read), SCR, DLL/DLM.
Outside loopback the modem inputs read as a connected terminal: CTS, DSR and DCD asserted.

Not modelled: parity, framing and break errors (the line is ideal), baud-rate timing, the
TX FIFO's depth (nothing ever waits in it), DMA mode signalling (FCR bit 3 is stored only).

Sources: TI PC16550D / 16550A datasheet (register map, IIR priorities, THRE interrupt rules);
Linux drivers/tty/serial/8250/8250_port.c (autoconfig, autoconfig_16550a, size_fifo, the THRE
test in serial8250_do_startup) for what the driver checks.
"""

from __future__ import annotations

from .isa_bus import BytePorts

from collections import deque
from typing import Callable

from .line import IrqLine

COM1_BASE = 0x3F8
FIFO_SIZE = 16

# Register offsets (16550A datasheet).
RBR_THR_DLL, IER_DLM, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)

IER_ERBFI, IER_ETBEI, IER_ELSI, IER_EDSSI = 0x01, 0x02, 0x04, 0x08
IER_MASK = 0x0F

IIR_NO_INT = 0x01
IIR_MSR, IIR_THRE, IIR_RDA, IIR_RLS, IIR_TIMEOUT = 0x00, 0x02, 0x04, 0x06, 0x0C
IIR_FIFO_ENABLED = 0xC0

FCR_ENABLE, FCR_CLEAR_RX, FCR_CLEAR_TX, FCR_DMA = 0x01, 0x02, 0x04, 0x08
FCR_TRIGGER_SHIFT = 6
RX_TRIGGER_LEVELS = (1, 4, 8, 14)

LCR_DLAB = 0x80

MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 0x01, 0x02, 0x04, 0x08, 0x10
MCR_MASK = 0x1F

LSR_DR, LSR_OE, LSR_PE, LSR_FE, LSR_BI, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40
LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI

MSR_DCTS, MSR_DDSR, MSR_TERI, MSR_DDCD = 0x01, 0x02, 0x04, 0x08
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
MSR_DELTAS = 0x0F
MODEM_INPUTS_CONNECTED = MSR_CTS | MSR_DSR | MSR_DCD


class Uart16550A(BytePorts):
    """The UART; see the module docstring."""

    def __init__(self, *, irq: IrqLine, output: Callable[[bytes], None], base: int = COM1_BASE):
        self.irq = irq
        self.output = output
        self.base = base
        self.ports = range(base, base + 8)
        self.rx: deque[int] = deque()
        self.last_rx = 0                 # RBR keeps the last byte once the FIFO is empty
        self.ier = self.lcr = self.mcr = self.scr = 0
        self.dll, self.dlm = 0x0C, 0x00  # 9600 baud, as a BIOS leaves it
        self.fifo_enabled = False
        self.fcr_dma = False
        self.rx_trigger = 1
        self.errors = 0                  # LSR OE/PE/FE/BI
        self.msr_deltas = 0
        self.thr_pending = False         # the THRE interrupt source
        self._lines = self._modem_lines()

    # --- the line side -----------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Bytes arriving on the serial input (lost while in loopback, where it is disconnected)."""
        if self.mcr & MCR_LOOP:
            return
        for byte in data:
            self._rx_byte(byte)
        self._update_irq()

    def _rx_byte(self, byte: int) -> None:
        capacity = FIFO_SIZE if self.fifo_enabled else 1
        if len(self.rx) < capacity:
            self.rx.append(byte)
        elif self.fifo_enabled:
            self.errors |= LSR_OE        # the FIFO keeps its contents; the new byte is lost
        else:
            self.errors |= LSR_OE        # the holding register is overwritten
            self.rx[-1] = byte

    # --- interrupt identification ----------------------------------------------------------------
    def _interrupt_id(self) -> int:
        if self.ier & IER_ELSI and self.errors:
            return IIR_RLS
        if self.ier & IER_ERBFI and self.rx:
            if not self.fifo_enabled or len(self.rx) >= self.rx_trigger:
                return IIR_RDA
            return IIR_TIMEOUT
        if self.ier & IER_ETBEI and self.thr_pending:
            return IIR_THRE
        if self.ier & IER_EDSSI and self.msr_deltas:
            return IIR_MSR
        return IIR_NO_INT

    def _update_irq(self) -> None:
        self.irq.set(self._interrupt_id() != IIR_NO_INT)

    # --- modem lines -------------------------------------------------------------------------
    def _modem_lines(self) -> int:
        if not self.mcr & MCR_LOOP:
            return MODEM_INPUTS_CONNECTED
        m = self.mcr
        return ((MSR_CTS if m & MCR_RTS else 0) | (MSR_DSR if m & MCR_DTR else 0) |
                (MSR_RI if m & MCR_OUT1 else 0) | (MSR_DCD if m & MCR_OUT2 else 0))

    def _lines_changed(self) -> None:
        new, old = self._modem_lines(), self._lines
        changed = new ^ old
        if changed & MSR_CTS:
            self.msr_deltas |= MSR_DCTS
        if changed & MSR_DSR:
            self.msr_deltas |= MSR_DDSR
        if changed & MSR_DCD:
            self.msr_deltas |= MSR_DDCD
        if old & MSR_RI and not new & MSR_RI:
            self.msr_deltas |= MSR_TERI  # trailing edge of ring indicator
        self._lines = new

    # --- ports -------------------------------------------------------------------------------
    def _read_byte(self, port: int) -> int:
        reg = port - self.base
        if not 0 <= reg < 8:
            return 0xFF
        dlab = self.lcr & LCR_DLAB
        if reg == RBR_THR_DLL:
            if dlab:
                return self.dll
            if self.rx:
                self.last_rx = self.rx.popleft()
            value = self.last_rx
        elif reg == IER_DLM:
            return self.dlm if dlab else self.ier
        elif reg == IIR_FCR:
            ident = self._interrupt_id()
            if ident == IIR_THRE:
                self.thr_pending = False
            value = ident | (IIR_FIFO_ENABLED if self.fifo_enabled else 0)
        elif reg == LCR:
            return self.lcr
        elif reg == MCR:
            return self.mcr
        elif reg == LSR:
            value = (LSR_THRE | LSR_TEMT | self.errors | (LSR_DR if self.rx else 0))
            self.errors = 0
        elif reg == MSR:
            value = self._lines | self.msr_deltas
            self.msr_deltas = 0
        else:
            return self.scr
        self._update_irq()
        return value

    def _write_byte(self, port: int, value: int) -> None:
        reg = port - self.base
        if not 0 <= reg < 8:
            return
        dlab = self.lcr & LCR_DLAB
        if reg == RBR_THR_DLL:
            if dlab:
                self.dll = value
                return
            self._transmit(value)
        elif reg == IER_DLM:
            if dlab:
                self.dlm = value
                return
            old, self.ier = self.ier, value & IER_MASK
            if (old ^ self.ier) & IER_ETBEI:
                self.thr_pending = bool(self.ier & IER_ETBEI)   # THR is always empty
        elif reg == IIR_FCR:
            self._write_fcr(value)
        elif reg == LCR:
            self.lcr = value
            return
        elif reg == MCR:
            self.mcr = value & MCR_MASK
            self._lines_changed()
        elif reg == LSR or reg == MSR:
            return                       # status registers: writes ignored (factory test only)
        else:
            self.scr = value
            return
        self._update_irq()

    def _transmit(self, value: int) -> None:
        self.thr_pending = False
        self._update_irq()               # THR full: the THRE interrupt drops
        if self.mcr & MCR_LOOP:
            self._rx_byte(value)
        else:
            self.output(bytes([value]))
        self.thr_pending = True          # shifted out at once: THR empty again

    def _write_fcr(self, value: int) -> None:
        enable = bool(value & FCR_ENABLE)
        if enable != self.fifo_enabled:
            self.rx.clear()              # changing the FIFO enable resets both FIFOs
        self.fifo_enabled = enable
        if not enable:
            return                       # the other bits are only written with the enable bit
        if value & FCR_CLEAR_RX:
            self.rx.clear()
        # FCR_CLEAR_TX: the TX FIFO is always empty.
        self.fcr_dma = bool(value & FCR_DMA)
        self.rx_trigger = RX_TRIGGER_LEVELS[value >> FCR_TRIGGER_SHIFT]
