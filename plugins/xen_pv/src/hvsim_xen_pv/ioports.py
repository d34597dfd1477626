"""Which I/O ports a PV domain reaches, and what Xen answers for the others.

Xen (pv/emul-priv-op.c guest_io_read/guest_io_write and admin_io_okay) completes a PV guest's
``in``/``out`` once its virtual IOPL or I/O bitmap allows it (cpu.py ``port_access``):
- a port the domain is permitted (``ioports_access_permitted``) reaches the hardware; the
  initial domain is permitted every port but those dom0_build.c dom0_setup_permissions denies it
  (the 8259s, the PIT's channels 0 and 1, 0x92, 0xF0, the ACPI PM timer; PCI config data too, but
  Xen reads and writes that for the initial domain), and a domU none;
- PIT channel 2 and the speaker gate (0x42, 0x43, 0x61) are Xen's per-domain virtual PIT
  (emul-i8254.c pv_pit_handler): here the machine's own ports answer them;
- the RTC index and data ports (time.c rtc_guest_read/write): the initial domain reaches the
  RTC; a domU's index writes are latched and read back (bit 7 clear), its data reads all ones;
- a 4-byte access to 0xCF8 is the domain's latched PCI config address (the initial domain's is
  the machine's), and config data (0xCFC-0xCFF) is read only for the initial domain;
- anything else reads all ones and a write is dropped.
``answered`` counts, per port, the accesses Xen completed without a device.
"""

from __future__ import annotations

from collections import Counter

from hvsim.core.plugin_types import PortAccess, PortAnswered

PIT_CHANNEL_2 = frozenset({0x42, 0x43, 0x61})
RTC_INDEX, RTC_DATA = 0x70, 0x71
PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = range(0xCFC, 0xD00)
# dom0_setup_permissions' ioports_deny_access ranges, besides the PM timer and those answered above.
DENIED_TO_DOM0 = (range(0x20, 0x22), range(0xA0, 0xA2), range(0x40, 0x42), range(0x92, 0x93), range(0xF0, 0xF1))
ALL_ONES = PortAnswered()


class XenPorts:
    """The port model of one PV domain; ``pm_timer`` is the machine's ACPI PM timer port (None: no
    ACPI)."""

    def __init__(self, *, dom0: bool, pm_timer: int | None):
        self.dom0 = dom0
        self.denied = DENIED_TO_DOM0 + ((range(pm_timer, pm_timer + 4),) if pm_timer is not None else ())
        self.cmos_index = 0
        self.pci_cf8 = 0
        self.answered: Counter[int] = Counter()

    def route(self, access: PortAccess) -> PortAnswered | None:
        """None: the access reaches the machine's device; else Xen's answer."""
        port = access.port
        if port in PIT_CHANNEL_2:
            return None
        if self.dom0 and not any(port in r for r in self.denied):
            return None
        self.answered[port] += 1
        if port == RTC_INDEX:
            if access.write:
                self.cmos_index = access.value & 0xFF
                return ALL_ONES
            return PortAnswered(self.cmos_index & 0x7F)
        if port == PCI_CONFIG_ADDRESS and access.size == 4:
            if access.write:
                self.pci_cf8 = access.value & 0xFFFF_FFFF
                return ALL_ONES
            return PortAnswered(self.pci_cf8)
        return ALL_ONES
