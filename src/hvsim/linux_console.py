"""Read what Linux printed about its world from its console text.

Linux prints, early in ``setup_arch`` (arch/x86/kernel/setup.c, e820.c, acpi/tables.c)::

    [    0.000000] Command line: console=ttyS0 nokaslr
    [    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable
    [    0.000000] RAMDISK: [mem 0x1fc3c000-0x1fffffff]
    [    0.000000] ACPI: RSDP 0x00000000000E0000 000024 (v02 HVSIM )
    [    0.000000] ACPI: FACP 0x00000000000E00A0 000114 (v06 HVSIM  HVSIMPC  00000001 HVSM 00000001)

Each function returns ``None`` when the kernel did not print the line (it stopped before, or the
console was not the one it printed to), so a caller can tell "not printed" from "empty".
"""

from __future__ import annotations

import re

# e820__print_type() in arch/x86/kernel/e820.c; "type N" for a number it has no name for.
E820_NAMES = {"usable": 1, "reserved": 2, "ACPI data": 3, "ACPI NVS": 4, "unusable": 5,
              "persistent (type 7)": 7, "persistent (type 12)": 12, "soft reserved": 0xEFFFFFFF}
# "BIOS-e820:" for a firmware-provided map; "Xen:" for a Xen PV guest's (arch/x86/xen/setup.c names it)
_E820_LINE = re.compile(r"(?:BIOS-e820|Xen): \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (.+)$")
_TYPE_N = re.compile(r"type ([0-9]+)$")
_TIMESTAMP = re.compile(r"^\[ *[0-9]+\.[0-9]+\] ", re.MULTILINE)
_COMMAND_LINE = re.compile(r"^Command line: (.*)$", re.MULTILINE)
_RAMDISK = re.compile(r"^RAMDISK: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]", re.MULTILINE)
_ACPI_TABLE = re.compile(r"^ACPI: ([A-Z0-9_]{4}) 0x([0-9A-F]{16}) [0-9A-F]{6}", re.MULTILINE)


def without_timestamps(text: str) -> str:
    """The console text with printk's ``[    0.000000] `` prefixes removed and ``\\r\\n`` as ``\\n``."""
    return _TIMESTAMP.sub("", text.replace("\r\n", "\n"))


def is_linux(text: str) -> bool:
    return "Linux version " in text


def command_line(text: str) -> str | None:
    """The ``Command line:`` Linux printed."""
    match = _COMMAND_LINE.search(without_timestamps(text))
    return match.group(1) if match else None


def e820_map(text: str) -> list[tuple[int, int, int]] | None:
    """The ``BIOS-e820:`` (Xen PV: ``Xen:``) lines Linux printed, as (start, size, E820 type); -1 for
    a type name this module does not know."""
    out = []
    for line in without_timestamps(text).split("\n"):
        match = _E820_LINE.search(line)
        if not match:
            continue
        start, last, name = int(match.group(1), 16), int(match.group(2), 16), match.group(3).strip()
        numbered = _TYPE_N.match(name)
        kind = int(numbered.group(1)) if numbered else E820_NAMES.get(name, -1)
        out.append((start, last + 1 - start, kind))
    return out or None


def ramdisk(text: str) -> tuple[int, int] | None:
    """(address, size) of the ``RAMDISK:`` line Linux prints when it reserves the initrd."""
    match = _RAMDISK.search(without_timestamps(text))
    if not match:
        return None
    start, last = int(match.group(1), 16), int(match.group(2), 16)
    return start, last + 1 - start


def acpi_tables(text: str) -> tuple[int | None, list[str]] | None:
    """(RSDP address, signatures of the other tables in the order printed, each once) from the
    ``ACPI: SIG 0x...`` lines, or ``None`` when Linux printed none."""
    rsdp, signatures = None, []
    for match in _ACPI_TABLE.finditer(without_timestamps(text)):
        signature, address = match.group(1), int(match.group(2), 16)
        if signature == "RSDP":
            rsdp = address
        elif signature not in signatures:
            signatures.append(signature)
    if rsdp is None and not signatures:
        return None
    return rsdp, signatures
