"""The firmware's periodic timer interrupt, programmed on the machine's own PC chipset as OVMF does.

OVMF's 8254TimerDxe drives the timer tick from PIT counter 0 through the 8259 pair: the 8259
driver (8259InterruptControllerDxe) initialises the pair with the master's vectors at 0x68 and the
slave's at 0x70, the timer driver programs counter 0 in mode 3 (square wave) at the 10 ms default
period and unmasks IRQ0; its handler ends with a non-specific EOI to the master.  Setting the
period to 0, which the DXE core does in ExitBootServices, masks IRQ0 again (the PIT keeps counting).
This firmware does the same, with the same numbers, through the same ports a guest would use:

- why the PIT and not the local APIC timer: it is what OVMF uses, so the kernel finds after
  ExitBootServices what it finds there (the local APIC untouched in virtual-wire mode, the 8259s
  initialised with IRQ0 masked, the PIT running) and nothing of a firmware LAPIC timer to undo.

The writes go to the devices behind the machine's port table, exactly as the firmware's own
``out`` instructions would.  What the tick does (timers, notifications) is ``Firmware``'s.
"""

from __future__ import annotations

# 8259A ports and command words (Intel 8259A datasheet; PC/AT wiring: slave on master IR2).
PIC_MASTER_COMMAND, PIC_MASTER_DATA = 0x20, 0x21
PIC_SLAVE_COMMAND, PIC_SLAVE_DATA = 0xA0, 0xA1
ICW1_INIT_ICW4 = 0x11            # ICW1: edge triggered, cascade mode, ICW4 follows
ICW3_MASTER_SLAVE_ON_IR2 = 0x04
ICW3_SLAVE_ID_2 = 0x02
ICW4_8086 = 0x01
OCW2_NONSPECIFIC_EOI = 0x20
# edk2 OvmfPkg 8259InterruptControllerDxe: PROTECTED_MODE_BASE_VECTOR_MASTER / _SLAVE.
MASTER_VECTOR_BASE, SLAVE_VECTOR_BASE = 0x68, 0x70
TIMER_IRQ = 0
TIMER_VECTOR = MASTER_VECTOR_BASE + TIMER_IRQ
ALL_MASKED = 0xFF

# 8254 ports and control word (Intel 8254 datasheet): counter 0, LSB then MSB, mode 3, binary.
PIT_COUNTER0, PIT_CONTROL = 0x40, 0x43
PIT_COUNTER0_MODE3 = 0x36
# edk2 8254TimerDxe DEFAULT_TIMER_TICK_DURATION: 10 ms in 100 ns units; its count rounds
# period * 119318 / 10^6 to the nearest integer.
DEFAULT_PERIOD_100NS = 100_000


def pit_count(period_100ns: int) -> int:
    """The counter-0 reload value for a period in 100 ns units (0 stands for 65536)."""
    count = (period_100ns * 119_318 + 500_000) // 1_000_000
    return 0 if count >= 0x10000 else count


class FirmwareTimer:
    """The firmware's timer driver on a machine with the PC chipset (``machine.ports``)."""

    def __init__(self, machine, period_100ns: int = DEFAULT_PERIOD_100NS):
        self.m = machine
        self.period_100ns = period_100ns
        self.running = False

    def _out(self, port: int, value: int) -> None:
        device = self.m.ports.devices.get(port)
        if device is not None:
            device.write(port, 1, value)

    def _in(self, port: int) -> int:
        device = self.m.ports.devices.get(port)
        return device.read(port, 1) if device is not None else 0xFF

    def start(self) -> None:
        """Initialise the 8259 pair (everything masked), program counter 0, unmask IRQ0."""
        for command, data, base, icw3 in ((PIC_MASTER_COMMAND, PIC_MASTER_DATA, MASTER_VECTOR_BASE,
                                           ICW3_MASTER_SLAVE_ON_IR2),
                                          (PIC_SLAVE_COMMAND, PIC_SLAVE_DATA, SLAVE_VECTOR_BASE, ICW3_SLAVE_ID_2)):
            self._out(command, ICW1_INIT_ICW4)
            self._out(data, base)
            self._out(data, icw3)
            self._out(data, ICW4_8086)
            self._out(data, ALL_MASKED)
        count = pit_count(self.period_100ns)
        self._out(PIT_CONTROL, PIT_COUNTER0_MODE3)
        self._out(PIT_COUNTER0, count & 0xFF)
        self._out(PIT_COUNTER0, count >> 8)
        self._out(PIC_MASTER_DATA, self._in(PIC_MASTER_DATA) & ~(1 << TIMER_IRQ) & 0xFF)
        self.running = True

    def stop(self) -> None:
        """SetTimerPeriod(0): mask IRQ0 at the master 8259 (the PIT itself keeps counting)."""
        self._out(PIC_MASTER_DATA, self._in(PIC_MASTER_DATA) | 1 << TIMER_IRQ)
        self.running = False

    def end_of_interrupt(self) -> None:
        self._out(PIC_MASTER_COMMAND, OCW2_NONSPECIFIC_EOI)
