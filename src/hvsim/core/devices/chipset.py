"""The PC's interrupt and timer chipset, wired in one place.

    PIT ch0 ──IRQ0──┬─► 8259 pair IR0 ─INTR─► LAPIC LINT0 (ExtINT) ─┐
    RTC ─────IRQ8───┤                                               ├─► CPU (Machine.interrupt_source)
    COM1 ────IRQ4───┤                                               │
    i8042 ───IRQ1───┤  (keyboard; IRQ12 for the empty aux port)     │
    ACPI SCI ─IRQ9──┴─► I/O APIC pin (IRQ0 → GSI 2, as the MADT's ──► LAPIC IRR
                        interrupt source override says; others 1:1)

Every ISA line goes to both the 8259 input and the I/O APIC pin, as on a PC: the guest decides
which one listens (by masking).  The CPU takes interrupts from the local APIC, which passes the 8259's INTR
straight through when the guest disabled it in IA32_APIC_BASE (then its MMIO window is empty).
MMIO windows: the local APIC at 0xfee00000 (4 KiB), the I/O APIC at 0xfec00000 (the MADT's
addresses, ``acpi.AcpiPlatform``).  MSRs the core answers for the local APIC: IA32_APIC_BASE and
IA32_TSC_DEADLINE.

``level="lapic"`` attaches the local APIC alone (a machine without legacy devices, as Xen's PVH
guests have).  The chipset is the machine's ``interrupt_source``.

The legacy level also has the i8042 keyboard controller with its PS/2 keyboard (ports 0x60/0x64;
``typing`` types scripted keys on it) and VGA text mode (0xB8000-0xBFFFF over the RAM there, CRTC
ports 0x3D4/0x3D5; its screen is console channel ``vga``).
"""

from __future__ import annotations

import functools
import traceback
from typing import TYPE_CHECKING

from ..clock import WALLCLOCK_EPOCH_S
from ..events import Shutdown
from ..result import StopReason
from .ioapic import DEFAULT_IOAPIC_ADDRESS, IOAPIC_WINDOW_SIZE, IoApic
from .lapic import (
    APIC_WINDOW_SIZE, DEFAULT_APIC_BASE_ADDRESS, DM_EXTINT, DM_NMI, IA32_APIC_BASE_MSR, IA32_TSC_DEADLINE_MSR,
    LVT_DELIVERY_MODE_SHIFT, REG_LVT_LINT0, REG_LVT_LINT1, REG_SVR, SVR_ENABLE, SVR_POWER_ON, LocalApic,
)
from .line import IrqLine
from .pic import Pic8259Pair
from .pit import Pit8254
from .i8042 import I8042
from .keyboard import ScriptedTyping
from .rtc import CmosRtc
from .vga_text import TEXT_BASE, TEXT_SIZE, CrtcPorts, VgaText

if TYPE_CHECKING:
    from ..machine import Machine

ISA_IRQS = 16
PIT_IRQ, PIT_GSI = 0, 2            # acpi.py's MADT interrupt source override
KEYBOARD_IRQ, COM1_IRQ, RTC_IRQ, AUX_IRQ = 1, 4, 8, 12


def _mmio_guarded(machine: "Machine", what: str):
    """Run an MMIO callback; a Python exception stops the run as host-error (trace kept)."""

    def wrap(function):
        @functools.wraps(function)
        def wrapper(*args):
            try:
                return function(*args)
            except Exception as exc:  # noqa: BLE001 - the run must end with a result, not a traceback
                machine.host_traceback = traceback.format_exc()
                machine.stop(StopReason("host-error", detail=f"{type(exc).__name__} in the {what}: {exc}"))
                return 0

        return wrapper

    return wrap


class PcChipset:
    def __init__(self, machine: "Machine", *, level: str = "pc", ioapic_id: int = 1):
        self.m = machine
        self.legacy = level == "pc"
        self.pic = self.ioapic = self.pit = self.rtc = self.i8042 = self.typing = self.vga = None
        self.isa_lines: list[IrqLine] = []
        self.pic_intr = IrqLine(self._pic_intr, name="8259 INTR")
        if self.legacy:
            self.pic = Pic8259Pair(intr=self.pic_intr)
        self.lapic = LocalApic(machine.clock, kick=machine.kick,
                               extint_ack=self.pic.acknowledge if self.pic else None,
                               eoi_broadcast=self._eoi_broadcast)
        if self.legacy:
            self.ioapic = IoApic(deliver=self._ioapic_fixed, deliver_extint=self.lapic.deliver_extint,
                                 deliver_nmi=self.lapic.nmi, ioapic_id=ioapic_id, accepts=self.lapic.accepts)
        # What the BIOS leaves (SeaBIOS, as QEMU boots a PC): the local APIC software-enabled in
        # virtual-wire mode, LINT0 passing the 8259's INTR as ExtINT and LINT1 as NMI.
        self.lapic.write(REG_SVR, 4, SVR_ENABLE | SVR_POWER_ON)
        self.lapic.write(REG_LVT_LINT0, 4, DM_EXTINT << LVT_DELIVERY_MODE_SHIFT)
        self.lapic.write(REG_LVT_LINT1, 4, DM_NMI << LVT_DELIVERY_MODE_SHIFT)
        self._map(DEFAULT_APIC_BASE_ADDRESS, APIC_WINDOW_SIZE, self.lapic, "local APIC")
        machine.add_core_msr(IA32_APIC_BASE_MSR, lambda: self.lapic.apic_base, self._write_apic_base)
        machine.add_core_msr(IA32_TSC_DEADLINE_MSR, lambda: self.lapic.tsc_deadline, self._write_tsc_deadline)
        if self.legacy:
            self.isa_lines = [IrqLine(functools.partial(self._isa_irq, irq), name=f"IRQ{irq}") for irq in range(ISA_IRQS)]
            self._map(DEFAULT_IOAPIC_ADDRESS, IOAPIC_WINDOW_SIZE, self.ioapic, "I/O APIC")
            self.pit = Pit8254(machine.clock, irq0=self.isa_lines[PIT_IRQ])
            self.rtc = CmosRtc(machine.clock, irq8=self.isa_lines[RTC_IRQ], start_time=WALLCLOCK_EPOCH_S)
            self.i8042 = I8042(irq1=self.isa_lines[KEYBOARD_IRQ], irq12=self.isa_lines[AUX_IRQ],
                               reset=self._reset, note=machine.note)
            self.typing = ScriptedTyping(machine.clock, self.i8042.keyboard, machine.note)
            self.vga = VgaText(machine.clock, machine.console_text)
            for device in (self.pic, self.pit, self.rtc, self.i8042, CrtcPorts(self.vga)):
                machine.ports.attach(device)
            machine.add_sink(self.vga)
            machine.uc.mem_unmap(TEXT_BASE, TEXT_SIZE)          # RAM until now: the window replaces it
            machine.memory.remove_region(TEXT_BASE, TEXT_SIZE)
            self._map(TEXT_BASE, TEXT_SIZE, self.vga, "VGA text buffer")
        machine.interrupt_source = self

    # -- wiring ----------------------------------------------------------------------------------
    def isa_line(self, irq: int) -> IrqLine | None:
        return self.isa_lines[irq] if self.isa_lines else None

    def _isa_irq(self, irq: int, level: bool) -> None:
        self.pic.set_irq(irq, level)
        self.ioapic.set_irq(PIT_GSI if irq == PIT_IRQ else irq, level)

    def _reset(self, source: str) -> None:
        self.m.shutdown(Shutdown(reason="reboot", source=source))

    def _pic_intr(self, level: bool) -> None:
        self.lapic.set_lint0(level)

    def _ioapic_fixed(self, vector: int, level: bool) -> None:
        self.lapic.deliver(vector, level=level)

    def _eoi_broadcast(self, vector: int) -> None:
        if self.ioapic is not None:
            self.ioapic.eoi(vector)

    def _map(self, base: int, size: int, device, what: str) -> None:
        guard = _mmio_guarded(self.m, what)

        @guard
        def read(uc, offset, width, _ud):
            return device.read(offset, width)

        @guard
        def write(uc, offset, width, value, _ud):
            device.write(offset, width, value)

        self.m.uc.mmio_map(base, size, read, None, write, None)    # the binding keeps the callbacks

    def _write_apic_base(self, value: int) -> bool:
        return self.lapic.write_apic_base(value) is not False

    def _write_tsc_deadline(self, value: int) -> bool:
        self.lapic.write_tsc_deadline(value)
        return True

    # -- the CPU's interrupt input -----------------------------------------------------------------
    # The local APIC arbitrates, also when the guest disabled it (then LINT0 is the plain INTR pin).
    def interrupt_pending(self) -> bool:
        return self.lapic.interrupt_pending() or self.lapic.nmi_pending()

    def nmi_pending(self) -> bool:
        return self.lapic.nmi_pending()

    def acknowledge(self) -> int | None:
        return self.lapic.acknowledge()
