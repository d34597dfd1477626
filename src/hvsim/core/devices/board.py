"""The board's simple port devices: debug console, ACPI PM block, exit port, reset control.

A device answers ``read(port, size) -> int`` and ``write(port, size, value)`` for the ports it is
attached to (``Machine.ports.attach``).  The port table is a dict, so dispatch is one lookup.

- ``DebugCon``: the Bochs/QEMU 0xE9 port; reads return 0xE9, as QEMU's does, so guests detect it.
- ``AcpiPm``: the FADT's PM1a event/control blocks and PM timer; SLP_EN with the S5 sleep type
  powers off.  SCI_EN reads as set: the FADT declares no SMI command port, so ACPI is always on.
- ``ExitPort``: an isa-debug-exit style port (QEMU's default iobase 0x501): the byte written is
  the guest's exit code, 0 meaning success.
- ``ResetControl``: 0xCF9 (reset control register) and, on a machine without the i8042 model
  (``i8042.py``, in the PC chipset), the 8042's 0xFE pulse on 0x64: reboot.
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
    def __init__(self, machine: "Machine", *, kbc_port: bool = True):
        self.machine = machine
        self.ports = [RESET_CONTROL_PORT, KBC_COMMAND_PORT] if kbc_port else [RESET_CONTROL_PORT]
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
