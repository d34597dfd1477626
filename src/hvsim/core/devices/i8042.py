"""The i8042 keyboard controller with a PS/2 keyboard on its first port, as on a PC.

Ports: 0x60 data (read: the output buffer; write: a command's parameter, else a byte for the
keyboard) and 0x64 (read: status; write: a controller command).  Bytes for the host come from the
controller itself (command replies, first) or from the keyboard (``keyboard.Ps2Keyboard``), one at a
time through the one-byte output buffer; while the command byte's XLATE bit is set (the default, as
a PC's BIOS leaves it) keyboard bytes are translated from set 2 to set 1 with the 8042's table,
a 0xF0 break prefix folded into bit 7 of the next code.  IRQ1 is raised while the output buffer holds
a keyboard byte and the command byte's INT bit is set, lowered when the host reads it (each byte is
an edge, as the ISA line needs).

Modelled commands: 0x20-0x3F read and 0x60-0x7F write the controller's RAM (byte 0 the command
byte), 0xA7/0xA8 disable/enable the aux port, 0xA9 aux interface test (0x00), 0xAA self-test
(0x55, sets the system flag), 0xAB keyboard interface test (0x00), 0xAD/0xAE disable/enable the
keyboard, 0xC0 read the input port, 0xD0/0xD1 read/write the output port, 0xD2/0xD3 write the
keyboard/aux output buffer, 0xD4 write to the aux device, 0xDD/0xDF A20 off/on, 0xE0 read test
inputs, 0xF0-0xFF pulse output port bits (bit 0 pulsed low is the CPU reset: 0xFE reboots).
Writing the output port with bit 0 clear resets too.  The aux port has no device: a byte sent
to it answers 0xFE from the aux port with the timeout bit set, as a controller with no mouse does.

Not modelled: the A20 gate's effect (the engine never wraps addresses at 1 MiB: the output port
bit is stored and a request to turn A20 off is recorded as a note), password and keyboard-lock
commands, parity errors, the time the controller takes.
Unknown commands are ignored, as the chip ignores them, and recorded once each as a note.

Sources: IBM PS/2 Hardware Interface Technical Reference (keyboard/auxiliary device controller);
the translation table is the 8042's (it is what every PC firmware and emulator reproduces).
"""

from __future__ import annotations

from typing import Callable

from .isa_bus import BytePorts
from .keyboard import Ps2Keyboard
from .line import IrqLine

DATA_PORT, STATUS_PORT = 0x60, 0x64

# Status register.
STATUS_OBF, STATUS_IBF, STATUS_SYS, STATUS_CMD = 0x01, 0x02, 0x04, 0x08
STATUS_NOT_INHIBITED, STATUS_AUX, STATUS_TIMEOUT, STATUS_PARITY = 0x10, 0x20, 0x40, 0x80
# Command byte (controller RAM byte 0).
CB_KBD_INT, CB_AUX_INT, CB_SYS, CB_KBD_DISABLE, CB_AUX_DISABLE, CB_XLATE = 0x01, 0x02, 0x04, 0x10, 0x20, 0x40
DEFAULT_COMMAND_BYTE = CB_KBD_INT | CB_SYS | CB_AUX_DISABLE | CB_XLATE     # what a PC's BIOS leaves
# Output port.
OUT_RESET, OUT_A20, OUT_KBD_OBF, OUT_AUX_OBF = 0x01, 0x02, 0x10, 0x20
DEFAULT_OUTPUT_PORT = OUT_RESET | OUT_A20 | 0xC0       # keyboard clock and data lines high
INPUT_PORT = 0xA0               # keyboard not inhibited, 512 KiB on the board (bits 7:4 as IBM's AT)

C_READ_RAM, C_WRITE_RAM = 0x20, 0x60
C_AUX_DISABLE, C_AUX_ENABLE, C_AUX_TEST, C_SELF_TEST, C_KBD_TEST = 0xA7, 0xA8, 0xA9, 0xAA, 0xAB
C_KBD_DISABLE, C_KBD_ENABLE, C_READ_INPUT, C_READ_OUTPUT, C_WRITE_OUTPUT = 0xAD, 0xAE, 0xC0, 0xD0, 0xD1
C_WRITE_KBD_OBUF, C_WRITE_AUX_OBUF, C_WRITE_AUX, C_A20_OFF, C_A20_ON = 0xD2, 0xD3, 0xD4, 0xDD, 0xDF
C_READ_TEST, C_PULSE = 0xE0, 0xF0
SELF_TEST_OK, INTERFACE_OK, AUX_NO_DEVICE = 0x55, 0x00, 0xFE

# The 8042's set 2 -> set 1 translation table, indexed by the set 2 byte.
TRANSLATE_SET2_TO_SET1 = bytes.fromhex(
    "ff43413f3d3b3c58644442403e0f2959"
    "65382a701d10025a66712c1f1e11035b"
    "672e2d201205045c68392f211413065d"
    "693130232215075e6a7232241608095f"
    "6b332517180b0a606c34352627190c61"
    "6d7328741a0d626e3a361c1b752b6376"
    "55567778797a0e7b7c4f7d4b477e7f6f"
    "5253504c4d480145574e514a37494654"
) + bytes([0x80, 0x81, 0x82, 0x41, 0x54]) + bytes(range(0x85, 0x100))   # 0x83 is F7, 0x84 SysRq


class I8042(BytePorts):
    """The controller; ``reset`` is called for a CPU reset request, ``note`` records what the
    model does not do.  ``keyboard`` is the device on port 1."""

    def __init__(self, *, irq1: IrqLine, irq12: IrqLine | None = None, reset: Callable[[str], None],
                 note: Callable[[str], None] = lambda text: None):
        self.irq1 = irq1
        self.irq12 = irq12 or IrqLine(name="IRQ12")
        self.reset = reset
        self.note = note
        self.ports = [DATA_PORT, STATUS_PORT]
        self.keyboard = Ps2Keyboard(TRANSLATE_SET2_TO_SET1, data_ready=self._pump)
        self.ram = bytearray(32)
        self.ram[0] = DEFAULT_COMMAND_BYTE
        self.output_port = DEFAULT_OUTPUT_PORT
        self.status = STATUS_SYS | STATUS_NOT_INHIBITED
        self.output: int | None = None            # the output buffer
        self.output_from_aux = False
        self.last_read = 0
        self.replies: list[tuple[int, bool]] = []  # controller-made bytes waiting: (byte, from aux)
        self._parameter_of: int | None = None      # the command whose data byte comes next
        self._break_pending = False                 # a translated 0xF0 waits for its code
        self._noted: set[int] = set()

    @property
    def command_byte(self) -> int:
        return self.ram[0]

    # --- the output buffer ------------------------------------------------------------------------
    def _reply(self, byte: int, aux: bool = False) -> None:
        self.replies.append((byte, aux))
        self._pump()

    def _pump(self) -> None:
        """Fill an empty output buffer: controller replies first, then the keyboard's bytes (unless
        the keyboard port is disabled)."""
        while self.output is None:
            if self.replies:
                byte, aux = self.replies.pop(0)
                self._fill(byte, aux)
            elif self.keyboard.has_data() and not self.command_byte & CB_KBD_DISABLE:
                byte = self.keyboard.take()
                if self.command_byte & CB_XLATE:
                    if byte == 0xF0:
                        self._break_pending = True
                        continue
                    byte = TRANSLATE_SET2_TO_SET1[byte] | (0x80 if self._break_pending else 0)
                    self._break_pending = False
                self._fill(byte, False)
            else:
                return

    def _fill(self, byte: int, aux: bool) -> None:
        self.output, self.output_from_aux = byte, aux
        self.status = (self.status | STATUS_OBF) & ~STATUS_AUX | (STATUS_AUX if aux else 0)
        self._update_irqs()

    def _update_irqs(self) -> None:
        full = self.output is not None
        self.irq1.set(full and not self.output_from_aux and bool(self.command_byte & CB_KBD_INT))
        self.irq12.set(full and self.output_from_aux and bool(self.command_byte & CB_AUX_INT))

    # --- ports -----------------------------------------------------------------------------------
    def _read_byte(self, port: int) -> int:
        if port == STATUS_PORT:
            return self.status
        if port != DATA_PORT:
            return 0xFF
        if self.output is None:
            return self.last_read                  # an empty buffer reads as its last byte again
        self.last_read, self.output = self.output, None
        self.status &= ~(STATUS_OBF | STATUS_AUX | STATUS_TIMEOUT)
        self._update_irqs()
        self._pump()
        return self.last_read

    def _write_byte(self, port: int, value: int) -> None:
        if port == STATUS_PORT:
            self.status |= STATUS_CMD
            self._parameter_of = None
            self._command(value)
        elif port == DATA_PORT:
            self.status &= ~STATUS_CMD
            command, self._parameter_of = self._parameter_of, None
            if command is None:
                self.ram[0] &= ~CB_KBD_DISABLE       # sending to the keyboard enables its clock
                self.keyboard.receive(value)
                self._pump()
            else:
                self._parameter(command, value)

    # --- commands --------------------------------------------------------------------------------
    def _command(self, command: int) -> None:
        if C_READ_RAM <= command < C_READ_RAM + 0x20:
            self._reply(self.ram[command - C_READ_RAM])
        elif (C_WRITE_RAM <= command < C_WRITE_RAM + 0x20 or
              command in (C_WRITE_OUTPUT, C_WRITE_KBD_OBUF, C_WRITE_AUX_OBUF, C_WRITE_AUX)):
            self._parameter_of = command
        elif command in (C_AUX_DISABLE, C_AUX_ENABLE):
            self._set_command_byte(self.ram[0] & ~CB_AUX_DISABLE | (CB_AUX_DISABLE if command == C_AUX_DISABLE else 0))
        elif command in (C_KBD_DISABLE, C_KBD_ENABLE):
            self._set_command_byte(self.ram[0] & ~CB_KBD_DISABLE | (CB_KBD_DISABLE if command == C_KBD_DISABLE else 0))
        elif command in (C_AUX_TEST, C_KBD_TEST):
            self._reply(INTERFACE_OK)
        elif command == C_SELF_TEST:
            self.status |= STATUS_SYS
            self._reply(SELF_TEST_OK)
        elif command == C_READ_INPUT:
            self._reply(INPUT_PORT)
        elif command == C_READ_OUTPUT:
            self._reply(self._output_port_value())
        elif command in (C_A20_OFF, C_A20_ON):
            self._write_output_port(self.output_port & ~OUT_A20 | (OUT_A20 if command == C_A20_ON else 0))
        elif command == C_READ_TEST:
            self._reply(0x00)
        elif command >= C_PULSE:
            if not command & OUT_RESET:
                self.reset("i8042-reset-pulse")
        elif command not in self._noted:
            self._noted.add(command)
            self.note(f"i8042: command {command:#04x} is not modelled; ignored")

    def _parameter(self, command: int, value: int) -> None:
        if C_WRITE_RAM <= command < C_WRITE_RAM + 0x20:
            if command == C_WRITE_RAM:
                self._set_command_byte(value)
            else:
                self.ram[command - C_WRITE_RAM] = value
        elif command == C_WRITE_OUTPUT:
            self._write_output_port(value)
        elif command == C_WRITE_KBD_OBUF:
            self._reply(value)
        elif command == C_WRITE_AUX_OBUF:
            self._reply(value, aux=True)
        elif command == C_WRITE_AUX:
            self.ram[0] &= ~CB_AUX_DISABLE
            self.status |= STATUS_TIMEOUT
            self._reply(AUX_NO_DEVICE, aux=True)

    def _set_command_byte(self, value: int) -> None:
        self.ram[0] = value
        self.status = self.status & ~STATUS_SYS | (value & CB_SYS)
        self._update_irqs()
        self._pump()

    def _output_port_value(self) -> int:
        value = self.output_port & ~(OUT_KBD_OBF | OUT_AUX_OBF)
        if self.output is not None:
            value |= OUT_AUX_OBF if self.output_from_aux else OUT_KBD_OBF
        return value

    def _write_output_port(self, value: int) -> None:
        if not value & OUT_A20 and self.output_port & OUT_A20:
            self.note("i8042: A20 gate turned off; the engine does not wrap addresses at 1 MiB (not modelled)")
        self.output_port = value
        if not value & OUT_RESET:
            self.reset("i8042-output-port-reset")
