"""Debian's unmodified Linux kernel for tests: fetched by scripts/fetch-linux, never committed.

``debian_vmlinuz()`` returns the cached bzImage path.  Without Debian's package tools the tests skip
saying why, except when ``CI`` is set: there a missing kernel is a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hvsim import hookimpl
from hvsim.linux_console import e820_map
from hvsim.core.result import StopReason

ROOT = Path(__file__).resolve().parent.parent


def fetched(script: str, what: str) -> Path:
    """The path ``scripts/<script>`` prints once it has fetched ``what`` into the cache.  Without
    Debian's package tools the test skips saying why; with ``CI`` set that is a failure."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        why = f"scripts/{script} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(f"{why} — CI must have {what}", pytrace=False)
        pytest.skip(why)
    return Path(proc.stdout.strip().splitlines()[-1])


def debian_vmlinuz() -> Path:
    return fetched("fetch-linux", "Debian's kernel")


def e820_from_console(text: str) -> list[tuple[int, int, int]]:
    """The ``BIOS-e820:`` (Xen PV: ``Xen:``) lines Linux printed, as (start, size, type) (``hvsim.linux_console``)."""
    return e820_map(text) or []


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
        if "BIOS-e820:" in event.text or "Xen: [mem " in event.text:
            self.seen_map = True
        elif self.seen_map:
            machine.stop(StopReason("poweroff", detail="test observer: memory map printed"))
