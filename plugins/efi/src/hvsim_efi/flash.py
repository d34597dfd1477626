"""The firmware's flash at the top of the 32-bit address space, where a PC keeps it.

A PC's firmware lives in a flash part decoded just below 4 GiB (the reset vector is its last 16
bytes); software probes it without asking the firmware: GRUB's ``cbfs`` module, loaded by any
``search`` on x86, reads the dword at 0xFFFFFFFC for a coreboot CBFS header pointer.  hvsim's EFI
firmware is not code in that flash, so the region reads as erased flash (every byte 0xFF): no
CBFS header, no firmware volume.  2 MiB, as ``hvsim.pc_regions`` names the BIOS flash.

Not modelled: the flash's command interface (writes land in the region as they would in RAM, where a
real part would take them as commands), the firmware volumes and variable store a real image holds
(variables are ``variables.VariableStore``), and the region in the EFI memory map.
"""

from __future__ import annotations

FLASH_BASE = 0xFFE00000
FLASH_SIZE = 0x200000
ERASED = 0xFF


def install(machine) -> None:
    """Map the flash as memory of the environment (not guest RAM) and erase it."""
    machine.add_private_memory(FLASH_BASE, FLASH_SIZE)
    machine.memory.fill(FLASH_BASE, FLASH_SIZE, ERASED)
