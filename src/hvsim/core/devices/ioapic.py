"""An I/O APIC compatible with the Intel 82093AA, as chipsets integrate it (version 0x20, with the
directed EOI register): 24 input pins, each routed by a 64-bit redirection-table entry to a
processor's local APIC.

What it models (82093AA datasheet §3 "Register Description"; the version-0x20 EOI register at 0x40
as in later ICH datasheets):

- Indirect access: IOREGSEL (0x00) selects a register, IOWIN (0x10) reads/writes it; registers are
  ID (0x00, bits 24-27), version (0x01), arbitration (0x02, bits 24-27, reads like the ID) and the
  redirection table (0x10-0x3f, low dword then high dword of entries 0-23).
- An edge-triggered pin delivers once on each rising edge of its (polarity-adjusted) input while
  unmasked.  An edge on a masked pin is lost: unmasking later does not deliver it.
- A level-triggered pin delivers while asserted, unmasked and remote IRR clear, and sets remote
  IRR; an EOI for its vector (``eoi`` from a local APIC's broadcast, or a write to the EOI register)
  clears remote IRR on every level pin with that vector and delivers again if the pin is still
  asserted.  Unmasking an asserted level pin delivers it.
- Active-low polarity (bit 13) inverts the pin's input.
- Delivery modes: fixed and lowest priority call ``deliver(vector, level_triggered)``; NMI calls
  ``deliver_nmi``; ExtINT calls ``deliver_extint(level_triggered)``; SMI, INIT and reserved modes
  reach no one and are dropped.  Only fixed and lowest-priority messages set remote IRR (only they
  are EOI'd by vector).
- Destination (bits 56-63): physical mode names an APIC ID (0xff broadcast), logical mode a set of
  logical IDs.  With ``accepts`` (a local APIC's ``accepts(destination, logical)``) the check is the
  local APIC's own; without it, physical mode accepts ``cpu_apic_id`` and 0xff, and logical mode any
  non-zero destination (one processor, whose LDR this device cannot see).  A message no processor
  accepts is dropped and sets no remote IRR.
- Vectors 0-15 are delivered as programmed; the receiving local APIC flags them illegal.

What it does not model: the delivery-status bit (reads idle: delivery is immediate), more than one
processor for lowest-priority arbitration, the 82093AA's APIC serial bus.

MMIO access: IOREGSEL and IOWIN are 32-bit; reads of 1-4 bytes inside them return those bytes;
writes narrower than 4 bytes write only IOREGSEL's low byte (as byte writes to IOREGSEL are common)
and are otherwise ignored.  Every other offset reads 0 and ignores writes.  A read of an
unimplemented register index through IOWIN returns 0; writes to it are ignored.
"""

from __future__ import annotations

from typing import Callable

# MMIO offsets (82093AA §3.1; EOI register of version-0x20 I/O APICs)
IOREGSEL = 0x00
IOWIN = 0x10
IOAPIC_EOI = 0x40
DEFAULT_IOAPIC_ADDRESS = 0xFEC00000
IOAPIC_WINDOW_SIZE = 0x1000

# Indirect registers (82093AA §3.2)
IOAPICID = 0x00
IOAPICVER = 0x01
IOAPICARB = 0x02
IOREDTBL_BASE = 0x10
NUM_PINS = 24
IOAPIC_VERSION = 0x20
IOAPIC_VERSION_VALUE = ((NUM_PINS - 1) << 16) | IOAPIC_VERSION
ID_MASK = 0x0F000000             # IOAPICID bits 24-27

# Redirection table entry fields (82093AA §3.2.4)
RTE_VECTOR = 0xFF
RTE_DELIVERY_MODE_SHIFT = 8
RTE_DELIVERY_MODE = 0x7 << RTE_DELIVERY_MODE_SHIFT
RTE_DEST_LOGICAL = 1 << 11
RTE_DELIVERY_STATUS = 1 << 12    # read-only
RTE_POLARITY_LOW = 1 << 13
RTE_REMOTE_IRR = 1 << 14         # read-only
RTE_TRIGGER_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
RTE_DEST_SHIFT = 56
RTE_READ_ONLY = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR
RTE_WRITABLE = (RTE_VECTOR | RTE_DELIVERY_MODE | RTE_DEST_LOGICAL | RTE_POLARITY_LOW | RTE_TRIGGER_LEVEL
                | RTE_MASKED | (0xFF << RTE_DEST_SHIFT))
RTE_POWER_ON = RTE_MASKED        # §3.2.4: entries reset masked

DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_EXTINT = 0, 1, 2, 4, 5, 7
BROADCAST_ID = 0xFF


class IoApic:
    """An 82093AA-style I/O APIC with 24 pins (see the module docstring)."""

    def __init__(self, *, deliver: Callable[[int, bool], None],
                 deliver_extint: Callable[[bool], None] | None = None,
                 deliver_nmi: Callable[[], None] | None = None, ioapic_id: int = 0,
                 accepts: Callable[[int, bool], bool] | None = None, cpu_apic_id: int = 0):
        self._deliver = deliver
        self._deliver_extint = deliver_extint
        self._deliver_nmi = deliver_nmi
        self._accepts = accepts
        self._cpu_apic_id = cpu_apic_id & 0xFF
        self.id = (ioapic_id << 24) & ID_MASK
        self.ioregsel = 0
        self.redirection = [RTE_POWER_ON] * NUM_PINS
        self.pin_levels = [False] * NUM_PINS     # the raw input of each pin

    # ------------------------------------------------------------------ MMIO
    def read(self, offset: int, size: int) -> int:
        base = offset & ~0x3
        if base == IOREGSEL:
            value = self.ioregsel
        elif base == IOWIN:
            value = self._read_indirect(self.ioregsel)
        else:
            return 0
        return (value >> (8 * (offset & 3))) & ((1 << (8 * min(size, 4))) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == IOREGSEL:
            self.ioregsel = value & 0xFF
        elif size < 4:
            return
        elif offset == IOWIN:
            self._write_indirect(self.ioregsel, value & 0xFFFFFFFF)
        elif offset == IOAPIC_EOI:
            self.eoi(value & 0xFF)

    def _read_indirect(self, index: int) -> int:
        if index in (IOAPICID, IOAPICARB):
            return self.id
        if index == IOAPICVER:
            return IOAPIC_VERSION_VALUE
        pin, high = self._rte_index(index)
        if pin is None:
            return 0
        return (self.redirection[pin] >> (32 if high else 0)) & 0xFFFFFFFF

    def _write_indirect(self, index: int, value: int) -> None:
        if index == IOAPICID:
            self.id = value & ID_MASK
            return
        pin, high = self._rte_index(index)
        if pin is None:
            return
        old = self.redirection[pin]
        if high:
            new = (old & 0xFFFFFFFF) | (value << 32)
        else:
            new = (old & ~0xFFFFFFFF) | value
        self.redirection[pin] = (new & RTE_WRITABLE) | (old & RTE_READ_ONLY)
        if not self.redirection[pin] & RTE_TRIGGER_LEVEL:
            self.redirection[pin] &= ~RTE_REMOTE_IRR      # remote IRR is undefined for edge pins
        self._service_level(pin)

    @staticmethod
    def _rte_index(index: int) -> tuple[int | None, bool]:
        if IOREDTBL_BASE <= index < IOREDTBL_BASE + 2 * NUM_PINS:
            return (index - IOREDTBL_BASE) >> 1, bool(index & 1)
        return None, False

    # ------------------------------------------------------------------ pins
    def asserted(self, pin: int) -> bool:
        """The pin's input after polarity: True when it requests an interrupt."""
        return self.pin_levels[pin] != bool(self.redirection[pin] & RTE_POLARITY_LOW)

    def set_irq(self, pin: int, level: bool) -> None:
        """Drive input ``pin``'s wire to ``level``; pins outside 0-23 are not connected."""
        if not 0 <= pin < NUM_PINS:
            return
        was = self.asserted(pin)
        self.pin_levels[pin] = bool(level)
        entry = self.redirection[pin]
        if entry & RTE_TRIGGER_LEVEL:
            self._service_level(pin)
        elif self.asserted(pin) and not was and not entry & RTE_MASKED:
            self._send(entry)

    def _service_level(self, pin: int) -> None:
        entry = self.redirection[pin]
        if (entry & RTE_TRIGGER_LEVEL and not entry & (RTE_MASKED | RTE_REMOTE_IRR)
                and self.asserted(pin) and self._send(entry)):
            self.redirection[pin] |= RTE_REMOTE_IRR

    def eoi(self, vector: int) -> None:
        """An EOI for ``vector``: clear remote IRR of the level pins routed to it, and deliver
        again each one still asserted."""
        for pin, entry in enumerate(self.redirection):
            if entry & RTE_REMOTE_IRR and entry & RTE_VECTOR == vector & 0xFF:
                self.redirection[pin] &= ~RTE_REMOTE_IRR
                self._service_level(pin)

    def _destination_accepted(self, entry: int) -> bool:
        destination = (entry >> RTE_DEST_SHIFT) & 0xFF
        logical = bool(entry & RTE_DEST_LOGICAL)
        if self._accepts is not None:
            return self._accepts(destination, logical)
        if logical:
            return destination != 0
        return destination in (self._cpu_apic_id, BROADCAST_ID)

    def _send(self, entry: int) -> bool:
        """Send the entry's message; True when a processor took a fixed or lowest-priority
        interrupt, which is EOI'd by vector (NMI and ExtINT messages are not, so they never set
        remote IRR)."""
        if not self._destination_accepted(entry):
            return False
        mode = (entry & RTE_DELIVERY_MODE) >> RTE_DELIVERY_MODE_SHIFT
        level = bool(entry & RTE_TRIGGER_LEVEL)
        if mode in (DM_FIXED, DM_LOWEST):
            self._deliver(entry & RTE_VECTOR, level)
            return True
        if mode == DM_NMI and self._deliver_nmi is not None:
            self._deliver_nmi()
        elif mode == DM_EXTINT and self._deliver_extint is not None:
            self._deliver_extint(level)
        return False
