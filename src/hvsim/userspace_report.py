"""Read the report of hvsim's own ``/init`` (``userspace/init.c``; ``hvsim.kernels.init_cpio_path()``)
back out of console text.

Booted as a Linux initramfs, ``/init`` prints one block of ``key: value`` lines between two
marker lines, through ``/dev/console`` (or, when that fails, ``/dev/kmsg``, where each line gets
printk's timestamp)::

    hvsim-userspace: begin v1
    pid: 1
    mount_proc: ok                        (ok | error ERRNO | skipped)
    mount_sys: ok
    kernel: 6.1.0-18-amd64                (uname -r)
    kernel_version: #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)
    machine: x86_64
    cmdline: console=ttyS0                (/proc/cmdline)
    iomem: 0x00001000 0x0009fbff System RAM          (each top-level /proc/iomem range; end inclusive)
    memmap: 0x0 0x9fbff System RAM                   (each /sys/firmware/memmap/N, N ascending; end inclusive)
    memtotal_kb: 498124
    cpus_online: 0                        (/sys/devices/system/cpu/online)
    cpus_possible: 0
    clocksource: tsc                      (current_clocksource; none when absent)
    clocksources: tsc hpet acpi_pm        (available_clocksource)
    clockevent: lapic-deadline            (clockevent0/current_device; none when absent)
    hypervisor: xen                       (/sys/hypervisor/type; none when absent)
    hypervisor_guest_type: PVH            (/sys/hypervisor/guest_type; none when absent)
    efi: yes                              (whether /sys/firmware/efi exists)
    efi_runtime: 0x3ff6e018               (/sys/firmware/efi/runtime; none when absent)
    efi_platform_size: 64                 (/sys/firmware/efi/fw_platform_size; none when absent)
    acpi_tables: APIC DSDT FACP           (files in /sys/firmware/acpi/tables, sorted; none)
    dmi: no                               (whether /sys/firmware/dmi exists)
    boot_params_version: 0x020f           (/sys/kernel/boot_params/version; none)
    rtc: rtc_cmos                         (/sys/class/rtc/rtc0/name; none)
    tainted: 0
    console: ttyS0 -W- (EC p a) 4:64      (each /proc/consoles line, blanks collapsed)
    cpu_model: ...
    cpu_flags: fpu tsc ... hypervisor     (the flags of interest /proc/cpuinfo lists, fixed order)
    irq: 4 IO-APIC 4-edge ttyS0           (each /proc/interrupts row without its counts)
    truncated: yes                        (only when the report outgrew /init's buffer)
    hvsim-userspace: end

Values are escaped as in the probe report (a backslash as ``\\\\``, control bytes as ``\\xNN``), so
one value is one line.  Nothing in it depends on time.

Kernel messages can land between the report's lines.  When the report came through
``/dev/console`` (its begin line has no timestamp), lines with a printk timestamp are the kernel's
and are skipped; through ``/dev/kmsg`` every line has one, so lines whose key the report does not
have are skipped, and a key the report gives once keeps its first value.
"""

from __future__ import annotations

import re
from typing import Any

BEGIN = "hvsim-userspace: begin v1"
END = "hvsim-userspace: end"

_TIMESTAMP = re.compile(r"^\[ *[0-9]+\.[0-9]+\] ")
_LINE = re.compile(r"([a-z_]+): ?(.*)$")
_ESCAPE = re.compile(r"\\(\\|x([0-9a-fA-F]{2}))")
_RANGE = re.compile(r"0x([0-9a-fA-F]+) 0x([0-9a-fA-F]+) (.*)$")

# Keys printed once, and what each becomes.
_SINGLE = {
    "pid", "mount_proc", "mount_sys", "kernel", "kernel_version", "machine", "cmdline", "memtotal_kb",
    "cpus_online", "cpus_possible", "clocksource", "clocksources", "clockevent", "hypervisor",
    "hypervisor_guest_type", "efi", "efi_runtime", "efi_platform_size", "acpi_tables", "dmi",
    "boot_params_version", "rtc", "tainted", "cpu_model", "cpu_flags", "truncated",
}
# Keys printed once per item, gathered into lists (report key -> result key).
_REPEATED = {"iomem": "iomem", "memmap": "memmap", "console": "consoles", "irq": "irqs"}
# Single values where the word "none" means the thing is absent (-> None).
_NONE_MEANS_ABSENT = {"clocksource", "clockevent", "hypervisor_guest_type", "efi_runtime", "efi_platform_size",
                      "boot_params_version", "rtc"}
_WORD_LISTS = {"clocksources", "acpi_tables", "cpu_flags"}


def unescape(text: str) -> str:
    """A value as ``/init`` read it: ``\\\\`` and ``\\xNN`` undone (bytes >= 0x80 stay as decoded)."""
    def one(match: re.Match) -> str:
        if match.group(2) is None:
            return "\\"
        return chr(int(match.group(2), 16))
    return _ESCAPE.sub(one, text)


def _lines_of_report(text: str) -> list[str] | None:
    """The lines between the markers, printk timestamps removed and interleaved kernel lines
    skipped as the module docstring says; ``None`` without a complete report."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    begin = next((i for i, line in enumerate(lines) if line.endswith(BEGIN)), None)
    if begin is None:
        return None
    through_kmsg = bool(_TIMESTAMP.match(lines[begin]))
    body = []
    for line in lines[begin + 1:]:
        stamped = _TIMESTAMP.match(line)
        if stamped:
            if not through_kmsg:
                continue              # the kernel's own message, interleaved
            line = line[stamped.end():]
        if line == END:
            return body
        body.append(line)
    return None


def parse_userspace_report(console_text: "str | bytes") -> dict[str, Any] | None:
    """The first complete ``/init`` report in ``console_text`` as a dict (keys as in the module
    docstring; repeated keys as lists ``iomem``, ``memmap``, ``consoles``, ``irqs``), or ``None`` when
    there is none.  Ranges are ``[start, size, name]``; ``hypervisor`` is ``""`` when the kernel
    shows none; ``efi`` and ``dmi`` are booleans; ``pid`` and ``memtotal_kb`` integers."""
    if isinstance(console_text, bytes):
        console_text = console_text.decode("utf-8", "surrogateescape")
    lines = _lines_of_report(console_text)
    if lines is None:
        return None
    report: dict[str, Any] = {name: [] for name in _REPEATED.values()}
    for line in lines:
        match = _LINE.match(line)
        if not match:
            continue
        name, raw = match.group(1), match.group(2)
        if name in _REPEATED:
            item = _item(name, raw)
            if item is not None:
                report[_REPEATED[name]].append(item)
        elif name in _SINGLE and name not in report:
            report[name] = _single(name, raw)
    for name in _SINGLE:
        report.setdefault(name, None)
    report["truncated"] = report["truncated"] is True
    return report


def _item(name: str, raw: str) -> Any:
    if name in ("iomem", "memmap"):
        match = _RANGE.match(raw)
        if not match:
            return None
        start, last = int(match.group(1), 16), int(match.group(2), 16)
        return [start, last + 1 - start, unescape(match.group(3))]
    return unescape(raw)


def _single(name: str, raw: str) -> Any:
    value = unescape(raw)
    if name in ("pid", "memtotal_kb"):
        return int(value) if value.isdigit() else None
    if name in ("efi", "dmi", "truncated"):
        return value == "yes"
    if name == "hypervisor":
        return "" if value == "none" else value
    if name in _WORD_LISTS:
        return [] if value in ("none", "unknown") else value.split()
    if name in _NONE_MEANS_ABSENT and value == "none":
        return None
    return value


def without_userspace_report(text: str) -> str:
    """``text`` with the report's lines (markers included) taken out; other lines stay."""
    lines = text.split("\n")
    begin = next((i for i, line in enumerate(lines) if line.rstrip("\r").endswith(BEGIN)), None)
    if begin is None:
        return text
    end = next((i for i in range(begin, len(lines)) if _strip_stamp(lines[i].rstrip("\r")) == END), None)
    if end is None:
        return text
    prefix = lines[begin].rstrip("\r")[: -len(BEGIN)]
    through_kmsg = bool(_TIMESTAMP.match(lines[begin]))
    kept = [line for line in lines[begin + 1:end] if _TIMESTAMP.match(line) and not through_kmsg]
    head = [prefix] if prefix and not _TIMESTAMP.fullmatch(prefix) else []
    return "\n".join(lines[:begin] + head + kept + lines[end + 1:])


def _strip_stamp(line: str) -> str:
    stamped = _TIMESTAMP.match(line)
    return line[stamped.end():] if stamped else line
