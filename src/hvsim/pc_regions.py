"""What a PC has at a guest-physical address that hvsim may not model: names for stop lines.

When a run stops as ``bad-access`` (the guest touched an address with no RAM or device of hvsim's
there), ``explain(address)`` says what a real PC keeps at that address, so the stop line says
"the HPET" rather than only "nothing there".  It names; it does not model anything, and it does
not know whether a given machine has the device (if the access stopped the run, this machine does
not have it at that address).

The addresses are the PC's architectural or conventional ones:
- 0xA0000-0xBFFFF legacy VGA frame buffer, 0xC0000-0xDFFFF option ROMs, 0xE0000-0xFFFFF system BIOS
  (IBM PC/AT memory map; ACPI spec 6.5 §15 "System Address Map Interfaces" keeps them reserved);
- 0xFEC00000 I/O APIC (Intel 82093AA datasheet, default base), 0xFEE00000 local APIC (Intel SDM
  vol. 3A §11.4.1, IA32_APIC_BASE default), 0xFED00000 HPET (IA-PC HPET specification 1.0a §2.2,
  the conventional base ACPI's HPET table announces), 0xFED40000 TPM (TCG PC Client Platform
  TPM Profile, locality 0-4 at 0xFED40000-0xFED44FFF), 0xFED90000 Intel VT-d remapping unit (as
  QEMU's q35 places it), 0xFFE00000-0xFFFFFFFF BIOS flash (the reset vector's region);
- 0xB0000000-0xBFFFFFFF and 0xE0000000-0xEFFFFFFF PCI Express ECAM (MMCONFIG) as QEMU's q35 and
  many chipsets place it (the ACPI MCFG table announces the real base).
"""

from __future__ import annotations

import re

# (start, end exclusive, what a PC has there)
PC_REGIONS = (
    (0x000A0000, 0x000C0000, "the legacy VGA frame buffer"),
    (0x000C0000, 0x000E0000, "option ROMs (video BIOS and the like)"),
    (0x000E0000, 0x00100000, "the system BIOS ROM"),
    (0xB0000000, 0xC0000000, "PCI Express configuration space (ECAM/MMCONFIG, q35's base)"),
    (0xE0000000, 0xF0000000, "PCI Express configuration space (ECAM/MMCONFIG, a common base)"),
    (0xFEC00000, 0xFEC01000, "the I/O APIC"),
    (0xFED00000, 0xFED00400, "the HPET"),
    (0xFED40000, 0xFED45000, "a TPM"),
    (0xFED90000, 0xFED91000, "an Intel VT-d remapping unit"),
    (0xFEE00000, 0xFEE01000, "the local APIC (xAPIC MMIO)"),
    (0xFFE00000, 0x100000000, "the BIOS flash"),
)
_PHYSICAL = re.compile(r"guest-physical (0x[0-9a-fA-F]+)")


def region_at(address: int) -> str | None:
    """What a PC has at ``address``, or None when it is nothing hvsim knows a name for."""
    for start, end, name in PC_REGIONS:
        if start <= address < end:
            return f"{name} at {start:#x}"
    return None


def explain(detail: str) -> str | None:
    """For a ``bad-access`` stop's detail: "on a PC: <region>, which hvsim does not model here",
    or None when the address is in no known region (or the detail names none)."""
    match = _PHYSICAL.search(detail)
    if match is None:
        return None
    region = region_at(int(match.group(1), 16))
    return None if region is None else f"on a PC: {region}, which this machine does not model"
