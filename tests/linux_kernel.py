"""Debian's unmodified Linux kernel for tests: fetched by scripts/fetch-linux, never committed.

``debian_vmlinuz()`` returns the cached bzImage path.  Without Debian's package tools the tests skip
saying why, except when ``CI`` is set: there a missing kernel is a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from hvsim import hookimpl
from hvsim.core.result import StopReason

ROOT = Path(__file__).resolve().parent.parent
FETCH = ROOT / "scripts" / "fetch-linux"
E820_NAMES = {"usable": 1, "reserved": 2, "ACPI data": 3, "ACPI NVS": 4, "unusable": 5, "persistent (type 7)": 7}
# "BIOS-e820:" from a BIOS-provided map, "Xen:" from a Xen PV guest's (arch/x86/xen/setup.c names it)
_E820_LINE = re.compile(r"(?:BIOS-e820|Xen): \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (.+)$")


def debian_vmlinuz() -> Path:
    proc = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        why = f"scripts/fetch-linux failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(why + " — CI must have Debian's kernel", pytrace=False)
        pytest.skip(why)
    return Path(proc.stdout.strip().splitlines()[-1])


def e820_from_console(text: str) -> list[tuple[int, int, int]]:
    """The ``BIOS-e820:`` (or Xen PV ``Xen:``) lines Linux printed, as (start, size, type)."""
    out = []
    for line in text.splitlines():
        match = _E820_LINE.search(line)
        if match:
            start, last, name = int(match.group(1), 16), int(match.group(2), 16), match.group(3).strip()
            out.append((start, last + 1 - start, E820_NAMES.get(name, -1)))
    return out


class StopAfterMemoryMap:
    """Observer: stop the run at the first console line after Linux printed its E820 map.

    Everything the tests assert (banner, command line, memory map) is printed by then, and the
    run's length no longer depends on how far past it the kernel gets.
    """

    def __init__(self) -> None:
        self.seen_map = False

    @hookimpl
    def hvsim_event(self, machine, event):
        if event.kind != "ConsoleOutput":
            return
        if _E820_LINE.search(event.text):
            self.seen_map = True
        elif self.seen_map:
            machine.stop(StopReason("poweroff", detail="test observer: memory map printed"))
