"""Port-I/O devices every PC-like environment shares.

A device answers ``read(port, size) -> int`` and ``write(port, size, value)`` for the ports it is
attached to (``Machine.ports.attach``).  The port table is a dict, so dispatch is one lookup.

- ``Uart16550``: enough of a 16550A for Linux's earlyprintk, the 8250 driver's autoconfig (scratch
  register, loopback through MCR, FIFO identification in IIR) and the probe.  The line status
  always reports the transmitter empty: ``earlyprintk=serial`` polls it before every byte.
- ``DebugCon``: the Bochs/QEMU 0xE9 port; reads return 0xE9, as QEMU's does, so guests detect it.
- ``AcpiPm``: the FADT's PM1a event/control blocks and PM timer; SLP_EN with the S5 sleep type
  powers off.  SCI_EN reads as set: the FADT declares no SMI command port, so ACPI is always on.
- ``ExitPort``: an isa-debug-exit style port (QEMU's default iobase 0x501): the byte written is
  the guest's exit code, 0 meaning success.
- ``ResetControl``: 0xCF9 (reset control register) and the 8042's 0xFE pulse on 0x64: reboot.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

from ..events import Shutdown

if TYPE_CHECKING:
    from ..machine import Machine

COM1 = 0x3F8
DEBUGCON_PORT = 0xE9
EXIT_PORT = 0x501
RESET_CONTROL_PORT = 0xCF9
KBC_COMMAND_PORT = 0x64
PM_TIMER_HZ = 3_579_545


class ConsoleSink:
    """Decodes a byte stream to text and hands it to the machine line by line.

    Bytes that are not UTF-8 survive as surrogate escapes, so the exact guest output can be
    recovered with ``text.encode("utf-8", "surrogateescape")``.
    """

    def __init__(self, machine: "Machine", channel: str):
        self._machine = machine
        self.channel = channel
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._pending = ""

    def put(self, data: bytes) -> None:
        self._pending += self._decoder.decode(data)
        if "\n" in self._pending:
            head, _, self._pending = self._pending.rpartition("\n")
            self._machine.console_text(self.channel, head + "\n")

    def flush(self) -> None:
        self._pending += self._decoder.decode(b"", final=True)
        if self._pending:
            self._machine.console_text(self.channel, self._pending)
            self._pending = ""


class Uart16550:
    """A 16550A UART whose transmitter is always ready; output goes to a console channel."""

    LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40

    def __init__(self, machine: "Machine", base: int = COM1, channel: str = "serial0"):
        self.base = base
        self.sink = ConsoleSink(machine, channel)
        machine.add_sink(self.sink)
        self.ier = self.lcr = self.mcr = self.scr = self.fcr = 0
        self.dll, self.dlm = 0x0C, 0
        self.rx: bytearray = bytearray()

    @property
    def ports(self) -> range:
        return range(self.base, self.base + 8)

    def read(self, port: int, size: int) -> int:
        reg = port - self.base
        dlab = self.lcr & 0x80
        if reg == 0:
            if dlab:
                return self.dll
            return self.rx.pop(0) if self.rx else 0
        if reg == 1:
            return self.dlm if dlab else self.ier
        if reg == 2:   # IIR: no interrupt pending; FIFOs enabled bits when FCR enabled them
            return 0xC1 if self.fcr & 1 else 0x01
        if reg == 3:
            return self.lcr
        if reg == 4:
            return self.mcr
        if reg == 5:
            return self.LSR_THRE | self.LSR_TEMT | (self.LSR_DR if self.rx else 0)
        if reg == 6:   # MSR: in loopback, the modem outputs come back as inputs
            if self.mcr & 0x10:
                m = self.mcr
                return ((m & 1) << 5) | ((m & 2) << 3) | ((m & 4) << 4) | ((m & 8) << 4)
            return 0xB0    # CTS, DSR, DCD
        return self.scr

    def write(self, port: int, size: int, value: int) -> None:
        reg, value = port - self.base, value & 0xFF
        dlab = self.lcr & 0x80
        if reg == 0:
            if dlab:
                self.dll = value
            elif self.mcr & 0x10:
                self.rx.append(value)       # loopback: transmitted bytes are received
            else:
                self.sink.put(bytes([value]))
        elif reg == 1:
            if dlab:
                self.dlm = value
            else:
                self.ier = value & 0x0F
        elif reg == 2:
            self.fcr = value
        elif reg == 3:
            self.lcr = value
        elif reg == 4:
            self.mcr = value & 0x1F
        elif reg == 7:
            self.scr = value


class DebugCon:
    def __init__(self, machine: "Machine", port: int = DEBUGCON_PORT, channel: str = "debugcon"):
        self.ports = range(port, port + 1)
        self.sink = ConsoleSink(machine, channel)
        machine.add_sink(self.sink)

    def read(self, port: int, size: int) -> int:
        return DEBUGCON_PORT

    def write(self, port: int, size: int, value: int) -> None:
        self.sink.put((value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))


class AcpiPm:
    """PM1a event block (status, enable), PM1a control block and the PM timer (24-bit)."""

    SCI_EN, SLP_EN = 1 << 0, 1 << 13

    def __init__(self, machine: "Machine", *, evt_port: int, cnt_port: int, tmr_port: int, s5_sleep_type: int):
        self.machine = machine
        self.evt_port, self.cnt_port, self.tmr_port = evt_port, cnt_port, tmr_port
        self.s5_sleep_type = s5_sleep_type
        self.ports = [*range(evt_port, evt_port + 4), *range(cnt_port, cnt_port + 2), *range(tmr_port, tmr_port + 4)]
        self.status = self.enable = 0
        self.control = self.SCI_EN

    def read(self, port: int, size: int) -> int:
        if port in range(self.tmr_port, self.tmr_port + 4):
            ticks = self.machine.guest_ns() * PM_TIMER_HZ // 1_000_000_000
            return (ticks & 0xFFFFFF) >> (8 * (port - self.tmr_port))
        if port in range(self.cnt_port, self.cnt_port + 2):
            return (self.control >> (8 * (port - self.cnt_port))) & ((1 << (8 * size)) - 1)
        value = self.status | self.enable << 16
        return (value >> (8 * (port - self.evt_port))) & ((1 << (8 * size)) - 1)

    def write(self, port: int, size: int, value: int) -> None:
        if port == self.cnt_port:
            self.control = (value & ~self.SLP_EN) | self.SCI_EN
            sleep_type = (value >> 10) & 7
            if value & self.SLP_EN and sleep_type == self.s5_sleep_type:
                self.machine.shutdown(Shutdown(reason="poweroff", source="acpi-pm1a-s5"))
            elif value & self.SLP_EN:
                self.machine.note(f"ACPI sleep type {sleep_type} requested; only S5 is modelled, guest keeps running")
        elif port == self.evt_port:
            self.status &= ~(value & 0xFFFF)        # write-one-to-clear
        elif port == self.evt_port + 2:
            self.enable = value & 0xFFFF


class ExitPort:
    def __init__(self, machine: "Machine", port: int = EXIT_PORT):
        self.machine = machine
        self.ports = range(port, port + 1)

    def read(self, port: int, size: int) -> int:
        return 0xFF

    def write(self, port: int, size: int, value: int) -> None:
        code = value & ((1 << (8 * size)) - 1)
        self.machine.shutdown(Shutdown(reason="poweroff" if code == 0 else "exit", source="exit-port", code=code))


class ResetControl:
    def __init__(self, machine: "Machine"):
        self.machine = machine
        self.ports = [RESET_CONTROL_PORT, KBC_COMMAND_PORT]
        self.value = 0

    def read(self, port: int, size: int) -> int:
        return self.value if port == RESET_CONTROL_PORT else 0x1C   # 8042 status: input buffer empty

    def write(self, port: int, size: int, value: int) -> None:
        if port == RESET_CONTROL_PORT:
            if value & 0x04 and value & 0x02:
                self.machine.shutdown(Shutdown(reason="reboot", source="reset-control-cf9"))
            self.value = value & 0x0E
        elif value & 0xFF == 0xFE:
            self.machine.shutdown(Shutdown(reason="reboot", source="i8042-reset-pulse"))
