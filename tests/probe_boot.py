"""Helpers for the probe-report tests of every environment: boot the probe and read its report."""

from __future__ import annotations

from hvsim import MachineConfig
from hvsim.api import Run
from hvsim.core.layout import PhysicalLayout
from hvsim.probe_report import parse_probe_report


def boot(kernel, config: MachineConfig, env: str, **options):
    """Run ``kernel`` under ``env``; it must power off cleanly. Returns (result, report)."""
    result = Run(env, kernel, config, options=options).execute()
    assert result.stop.kind == "poweroff", (result.stop.describe(), result.console())
    assert result.exit_status == 0
    return result, parse_probe_report(result.console())


def calls(result, prefix: str = "") -> list[str]:
    """The names of the recorded calls (hypercalls, ...) starting with ``prefix``, in order."""
    return [e.name for e in result.events if e.kind == "Call" and e.name.startswith(prefix)]


def expected_memmap(config) -> tuple[tuple[int, int, int], ...]:
    """The canonical RAM map of ``config`` as the report lists it."""
    return tuple(r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map)
