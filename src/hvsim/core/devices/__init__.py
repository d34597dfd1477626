"""The PC's devices, each a plain state machine with its registers and the interrupt line given to it.

A port device answers ``read(port, size) -> int`` and ``write(port, size, value)`` for the ports it
is attached to (``Machine.ports.attach``); an MMIO device answers ``read(offset, size)`` and
``write(offset, size, value)`` for offsets in its window.  Devices know nothing of the engine or the
run loop: time comes from a ``GuestClock`` (``hvsim.core.clock``), interrupts leave through an
``IrqLine`` (``hvsim.core.devices.line``).  ``chipset.py`` wires a PC's set in one place.
"""

from .ioapic import IoApic
from .lapic import LocalApic
from .board import COM1, DEBUGCON_PORT, EXIT_PORT, AcpiPm, ConsoleSink, DebugCon, ExitPort, ResetControl
from .line import IrqLine
from .pic import Pic8259Pair
from .pit import Pit8254
from .rtc import CmosRtc
from .uart import Uart16550A

__all__ = ["COM1", "DEBUGCON_PORT", "EXIT_PORT", "AcpiPm", "CmosRtc", "ConsoleSink", "DebugCon", "ExitPort",
           "IoApic", "IrqLine", "LocalApic", "Pic8259Pair", "Pit8254", "ResetControl", "Uart16550A"]
