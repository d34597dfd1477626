"""The canonical record of what a guest observed in one run, in the same vocabulary for every
environment: ``Semantics``, built from a ``RunResult`` by :func:`semantics_of`.

Where each field comes from is recorded in ``sources`` (field -> source):

- ``probe report``: the hvsim probe's canonical report (``hvsim.probe_report``), for the probe;
- ``linux console``: the lines Linux printed (``hvsim.linux_console``): ``Command line:``,
  ``BIOS-e820:``, ``RAMDISK:``, ``ACPI: SIG 0x...``;
- ``environment``: what the environment did or offered, independent of the kernel: the entry it
  chose (``RunResult.entry``), the CPU mode it entered the guest in, its CPUID leaf 0x40000000;
- ``events``: the run's events (``Call`` events counted per ``interface:name``, console channels,
  the stop reason);
- ``userspace``: the report of hvsim's own ``/init`` (``hvsim.userspace_report``), when the run
  booted it (``hvsim run --init``): what Linux showed userspace in /proc and /sys;
- ``not printed``: the kernel did not say (the field is ``None``).

Memory maps are lists of ``[start, size, E820 type]``; modules are ``{"size", "crc32"}`` (``crc32``
is ``None`` when the kernel does not report it) with their addresses apart in ``module_addresses``,
since where a loader puts a module is its own choice.  The console field is the text the guest
wrote, without the probe report or the ``/init`` report (their content is in the other fields) and without printk
timestamps.  Coverage, when asked for, is recorded per run by ``hvsim.coverage`` (the executed
block addresses and the functions they name) beside this record.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from typing import Any

import attrs

from . import linux_console
from .core.result import RunResult
from .probe_report import BEGIN, END, ProbeReportError, parse_probe_report
from .userspace_report import parse_userspace_report, without_userspace_report

# The fields the matrix compares, in display order, each with what it holds.
FIELD_DOCS = {
    "entry": "the boot entry the kernel was entered at (linux64, pvh, elf, ...)",
    "entry_mode": "the CPU mode at the entry",
    "cmdline": "the command line the kernel saw",
    "memmap": "the memory map, as E820 [start, size, type] entries",
    "modules": "the modules (initrd): size and CRC-32",
    "module_addresses": "where the modules were placed",
    "rsdp": "the ACPI RSDP address",
    "acpi_tables": "the ACPI tables found through the RSDP",
    "cpus": "the CPUs the guest counted (the ACPI MADT; a Xen PV guest asks VCPUOP_is_up)",
    "hypervisor": "the CPUID 0x40000000 hypervisor signature (empty: none)",
    "console": "the console text (without the probe report and printk timestamps)",
    "console_channels": "the consoles written to (serial0, xen, ...)",
    "stop": "how the run ended (stop kind, and the guest's code)",
    "stop_detail": "the stop's detail: the shutdown mechanism, or the faulting access",
    "calls": "calls into the environment: count per interface:name",
    "userspace_kernel": "the kernel release userspace saw (uname -r)",
    "userspace_cmdline": "the command line userspace read from /proc/cmdline",
    "userspace_memmap": "the firmware memory map in /sys/firmware/memmap, as E820 [start, size, type]",
    "userspace_iomem": "the top-level ranges of /proc/iomem, as [start, size, name]",
    "userspace_cpus": "the CPUs online (/sys/devices/system/cpu/online)",
    "clocksource": "the clocksource in use",
    "clocksources": "the clocksources available",
    "clockevent": "the clockevent device of CPU 0",
    "userspace_hypervisor": "/sys/hypervisor/type, and guest_type when present (empty: none)",
    "userspace_efi": "whether /sys/firmware/efi exists (and the runtime services table it names)",
    "userspace_acpi_tables": "the tables in /sys/firmware/acpi/tables",
    "userspace_dmi": "whether /sys/firmware/dmi exists",
    "userspace_boot_params": "the boot protocol version in /sys/kernel/boot_params/version",
    "userspace_consoles": "the consoles in /proc/consoles",
    "userspace_cpu_flags": "the /proc/cpuinfo flags of interest (hypervisor, x2apic, tsc_deadline_timer, ...)",
    "userspace_irqs": "the interrupts /proc/interrupts lists (names, not counts)",
}
COMPARED_FIELDS = tuple(FIELD_DOCS)

PROBE, LINUX, ENVIRONMENT, EVENTS, NOT_PRINTED = "probe report", "linux console", "environment", "events", "not printed"
USERSPACE = "userspace"
USERSPACE_FIELDS = tuple(name for name in FIELD_DOCS if name.startswith("userspace_")
                         or name in ("clocksource", "clocksources", "clockevent"))
# /sys/firmware/memmap/N/type names (e820_type_to_string() in arch/x86/kernel/e820.c) -> E820 type
FIRMWARE_MEMMAP_TYPES = {"System RAM": 1, "Reserved": 2, "ACPI Tables": 3, "ACPI Non-volatile Storage": 4,
                         "Unusable memory": 5, "Persistent Memory": 7, "Persistent Memory (legacy)": 12,
                         "Soft Reserved": 0xEFFFFFFF}


@attrs.frozen
class Semantics:
    """What a guest observed in one run (see the module docstring); JSON-able through ``to_dict``."""

    environment: str
    kernel: str                    # "probe", "linux", or "other" (only the console and events are read)
    entry: str | None
    entry_mode: str | None
    cmdline: str | None
    memmap: list | None
    modules: list | None
    module_addresses: list | None
    rsdp: int | None
    acpi_tables: list | None
    cpus: int | None
    hypervisor: str | None
    console: str
    console_channels: list
    stop: str
    stop_detail: str
    calls: dict
    # from /init's report (None: not printed)
    userspace_kernel: str | None = None
    userspace_cmdline: str | None = None
    userspace_memmap: list | None = None
    userspace_iomem: list | None = None
    userspace_cpus: str | None = None
    clocksource: str | None = None
    clocksources: list | None = None
    clockevent: str | None = None
    userspace_hypervisor: str | None = None
    userspace_efi: str | None = None
    userspace_acpi_tables: list | None = None
    userspace_dmi: bool | None = None
    userspace_boot_params: str | None = None
    userspace_consoles: list | None = None
    userspace_cpu_flags: list | None = None
    userspace_irqs: list | None = None
    sources: dict = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Semantics":
        return cls(**{f.name: data.get(f.name, f.default if f.default is not attrs.NOTHING else None)
                      for f in attrs.fields(cls)})


def semantics_of(result: RunResult) -> Semantics:
    """The canonical record of ``result``: from the probe's report when the console holds one, else
    from what Linux printed when the kernel is Linux, and from the events and the environment."""
    text = result.console()
    fields: dict[str, Any] = {}
    sources: dict[str, str] = {}
    try:
        report = parse_probe_report(text)
    except ProbeReportError:
        report = None
    if report is not None:
        kernel = "probe"
        fields.update(_from_probe(report))
        sources.update(dict.fromkeys(fields, PROBE))
        console = _without_probe_report(text)
    elif linux_console.is_linux(text):
        kernel = "linux"
        for name, value in _from_linux(text).items():
            fields[name] = value
            sources[name] = LINUX if value is not None else NOT_PRINTED
        console = linux_console.without_timestamps(without_userspace_report(text))
    else:
        kernel = "other"
        console = without_userspace_report(text)
    userspace = parse_userspace_report(text)
    if userspace is not None:
        for name, value in _from_userspace(userspace).items():
            fields[name] = value
            sources[name] = USERSPACE if value is not None else NOT_PRINTED
    if "entry" not in fields:
        match = re.match(r"[A-Za-z0-9_.-]+", result.entry or "")
        fields["entry"], sources["entry"] = (match.group(0) if match else None), ENVIRONMENT
    for name in COMPARED_FIELDS:
        if name not in fields and name not in ("entry_mode", "hypervisor", "console", "console_channels",
                                               "stop", "stop_detail", "calls"):
            fields[name], sources[name] = None, NOT_PRINTED
    fields["entry_mode"] = result.extra.get("entry_mode")
    sources["entry_mode"] = ENVIRONMENT
    if report is not None:           # what the probe read from CPUID ("" when no hypervisor bit)
        fields["hypervisor"], sources["hypervisor"] = report.hypervisor or "", PROBE
    else:                            # what the environment answers at CPUID 0x40000000
        fields["hypervisor"], sources["hypervisor"] = _signature(result.extra.get("hypervisor_cpuid")), ENVIRONMENT
    fields.update(console=console, console_channels=_channels(result), stop=_stop(result),
                  stop_detail=result.stop.detail, calls=_calls(result))
    sources.update(dict.fromkeys(("console", "console_channels", "stop", "stop_detail", "calls"), EVENTS))
    return Semantics(environment=result.environment, kernel=kernel, sources=sources, **fields)


def _from_probe(report) -> dict[str, Any]:
    return {
        "entry": report.entry,
        "cmdline": report.cmdline,
        "memmap": [list(entry) for entry in report.memmap],
        "modules": [] if report.initrd is None else [{"size": report.initrd[1], "crc32": report.initrd[2]}],
        "module_addresses": [] if report.initrd is None else [report.initrd[0]],
        "rsdp": report.rsdp,
        "acpi_tables": list(report.acpi_tables),
        "cpus": report.cpus,
    }


def _from_linux(text: str) -> dict[str, Any]:
    memmap = linux_console.e820_map(text)
    ramdisk = linux_console.ramdisk(text)
    acpi = linux_console.acpi_tables(text)
    return {
        "cmdline": linux_console.command_line(text),
        "memmap": None if memmap is None else [list(entry) for entry in memmap],
        # Linux prints "RAMDISK:" only when there is one: no line after the map means no module.
        "modules": ([{"size": ramdisk[1], "crc32": None}] if ramdisk
                    else [] if memmap is not None else None),
        "module_addresses": [ramdisk[0]] if ramdisk else [] if memmap is not None else None,
        "rsdp": acpi[0] if acpi else None,
        "acpi_tables": acpi[1] if acpi else None,
    }


def _from_userspace(report: dict[str, Any]) -> dict[str, Any]:
    hypervisor = report["hypervisor"]
    if hypervisor and report["hypervisor_guest_type"]:
        hypervisor = f"{hypervisor} ({report['hypervisor_guest_type']})"
    efi = None if report["efi"] is None else "no" if not report["efi"] else (
        f"yes, runtime {report['efi_runtime']}" if report["efi_runtime"] else "yes")
    return {
        "userspace_kernel": report["kernel"],
        "userspace_cmdline": report["cmdline"],
        "userspace_memmap": [[start, size, FIRMWARE_MEMMAP_TYPES.get(name, -1)]
                             for start, size, name in report["memmap"]],
        "userspace_iomem": [list(item) for item in report["iomem"]],
        "userspace_cpus": report["cpus_online"],
        "clocksource": report["clocksource"],
        "clocksources": report["clocksources"],
        "clockevent": report["clockevent"],
        "userspace_hypervisor": hypervisor,
        "userspace_efi": efi,
        "userspace_acpi_tables": report["acpi_tables"],
        "userspace_dmi": report["dmi"],
        "userspace_boot_params": report["boot_params_version"],
        "userspace_consoles": list(report["consoles"]),
        "userspace_cpu_flags": report["cpu_flags"],
        "userspace_irqs": list(report["irqs"]),
    }


def _without_probe_report(text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    begin = next(i for i, line in enumerate(lines) if line.endswith(BEGIN))
    end = next(i for i in range(begin, len(lines)) if lines[i] == END)
    prefix = lines[begin][: -len(BEGIN)]
    return "\n".join(lines[:begin] + ([prefix] if prefix else []) + lines[end + 1:])


def _signature(leaf: dict | None) -> str | None:
    if leaf is None:
        return None
    raw = bytes.fromhex(leaf["signature"])
    if not leaf["max_leaf"] and not any(raw):
        return ""
    return raw.rstrip(b"\0").decode("ascii", "backslashreplace")


def _channels(result: RunResult) -> list[str]:
    return sorted({e.channel for e in result.events if e.kind == "ConsoleOutput"})


def _stop(result: RunResult) -> str:
    stop = result.stop
    return stop.kind if stop.code is None else f"{stop.kind} (code {stop.code})"


def _calls(result: RunResult) -> dict[str, int]:
    counts = Counter(f"{e.interface}:{e.name}" for e in result.events if e.kind == "Call")
    return dict(sorted(counts.items()))


def console_digest(text: str) -> str:
    """A short stand-in for a console text in tables: line count and CRC-32."""
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    return f"{lines} line{'' if lines == 1 else 's'}, crc32 {zlib.crc32(text.encode('utf-8', 'surrogateescape')):08x}" if text else "(empty)"
