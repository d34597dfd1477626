"""Real Xen as the reference for ``xen_pv --dom0``: QEMU (TCG) boots Xen's multiboot image with a Linux
kernel as its PV dom0, and this module returns what came out of COM1.

What runs: ``qemu-system-x86_64 -M pc -accel tcg -cpu max,-smap`` with ``-kernel XEN`` (QEMU's multiboot
loader takes Xen's ELF32 image; ``scripts/fetch-xen`` unpacks Debian's) and ``-initrd "KERNEL
CMDLINE,INITRD"``: multiboot module 1 is dom0's kernel with its command line, module 2 its initramfs.
Xen's own command line sends its console to COM1 and gives dom0 a fixed allocation; dom0's ``hvc0``
is Xen's console, which Xen copies to COM1, so one stream holds Xen's log, then Linux's.  When dom0
powers off, Xen enters ACPI S5 and QEMU (``-no-reboot``) exits 0.

``-cpu max,-smap``: with SMAP offered (``max`` or ``EPYC``) Debian's Xen 4.17 under QEMU 7.2 takes a
fatal fault in the dom0's first exception bounce (observed, not investigated); without SMAP it boots.

Modelled: one boot, its wall time, each COM1 line with the wall second it arrived, the /init report
parsed by ``hvsim.userspace_report``.  Not modelled: anything about QEMU's machine beyond its
command line (its CPU model, ACPI tables, firmware are QEMU's and SeaBIOS's: see the comparison test,
tests/test_xen_reference.py).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from .userspace_report import parse_userspace_report

QEMU = "qemu-system-x86_64"
MACHINE_MEMORY = "1024M"            # QEMU's RAM: Xen keeps what dom0 does not get
DOM0_MEMORY = "512M"                # Xen's dom0_mem: the same size as hvsim's --memory for the dom0
TIMEOUT = 300                       # wall seconds; the boot to /init takes ~10 s on an idle 2-core machine
XEN_VERSION_PREFIX = "(XEN) Xen version "


class ReferenceUnavailable(Exception):
    """QEMU or a file the boot needs is missing (the test skips on it, saying why)."""


class ReferenceFailed(Exception):
    """QEMU ran but the boot did not end as it must: a non-zero exit, the wall-clock limit, no report."""


@attrs.frozen
class XenReferenceBoot:
    """One boot under real Xen: its COM1 lines as (wall seconds since QEMU started, text) with
    CR LF made LF, QEMU's exit status and wall time, and the command that ran."""

    command: tuple[str, ...]
    lines: tuple[tuple[float, str], ...]
    exit_status: int
    wall_s: float

    def console(self) -> str:
        return "".join(text for _, text in self.lines)

    def report(self) -> dict[str, Any] | None:
        """The /init report (``hvsim.userspace_report.parse_userspace_report``), ``None`` without one."""
        return parse_userspace_report(self.console())

    def xen_version(self) -> str | None:
        """What Xen's first log line says of its version and build, e.g. ``4.17.5 (Debian 4.17.5+72-...)``."""
        for _, text in self.lines:
            if text.startswith(XEN_VERSION_PREFIX):
                return text[len(XEN_VERSION_PREFIX):].split(" (pkg-")[0].strip()
        return None

    def first(self, text: str) -> float | None:
        """The wall second of the first line holding ``text``, ``None`` when none does."""
        return next((at for at, line in self.lines if text in line), None)


def qemu_command(qemu: str, xen: Path, kernel: Path, initrd: Path, cmdline: str, *,
                 dom0_memory: str = DOM0_MEMORY, machine_memory: str = MACHINE_MEMORY) -> list[str]:
    """The QEMU command line of the reference boot (see the module docstring)."""
    for path in (kernel, initrd):
        # QEMU separates multiboot modules with commas and a module's path from its arguments with a blank
        if "," in str(path) or " " in str(path):
            raise ValueError(f"{path}: QEMU's multiboot -initrd cannot take a path with a comma or a blank")
    if "," in cmdline:
        raise ValueError(f"dom0 command line {cmdline!r}: QEMU's multiboot -initrd cannot take a comma in it")
    return [qemu, "-M", "pc", "-accel", "tcg", "-cpu", "max,-smap", "-m", machine_memory, "-smp", "1",
            "-display", "none", "-monitor", "none", "-net", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(xen),
            "-append", f"console=com1 com1=115200 dom0_mem={dom0_memory},max:{dom0_memory}",
            "-initrd", f"{kernel} {cmdline},{initrd}"]


def boot_dom0(xen: Path, kernel: Path, initrd: Path, cmdline: str, *, timeout: float = TIMEOUT,
              dom0_memory: str = DOM0_MEMORY, qemu: str | None = None) -> XenReferenceBoot:
    """Boot ``kernel`` (an ELF vmlinux: Xen's PV loader reads its ELF notes) with ``initrd`` as the dom0
    of ``xen`` under QEMU, until QEMU exits.  Raises ``ReferenceUnavailable`` when QEMU or a file is
    missing, ``ReferenceFailed`` when QEMU exits non-zero or runs past ``timeout`` wall seconds (it is
    killed) or the console holds no complete /init report."""
    qemu = qemu or shutil.which(QEMU)
    if not qemu:
        raise ReferenceUnavailable(f"{QEMU} not found (Debian's qemu-system-x86)")
    for path, what in ((xen, "Xen's multiboot image (scripts/fetch-xen)"), (kernel, "the dom0 kernel"),
                       (initrd, "the dom0 initramfs")):
        if not Path(path).is_file():
            raise ReferenceUnavailable(f"{path}: not found ({what})")
    command = qemu_command(qemu, Path(xen), Path(kernel), Path(initrd), cmdline, dom0_memory=dom0_memory)
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    killer = threading.Timer(timeout, kill)
    killer.start()
    lines = []
    try:
        for raw in proc.stdout:
            text = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n").replace("\r", "")
            lines.append((time.perf_counter() - t0, text))
        status = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    boot = XenReferenceBoot(tuple(command), tuple(lines), status, time.perf_counter() - t0)
    tail = boot.console()[-2000:]
    if timed_out.is_set():
        raise ReferenceFailed(f"QEMU + Xen still running after {timeout} s (killed); console ends:\n{tail}")
    if status != 0:
        raise ReferenceFailed(f"QEMU + Xen exited {status}; console ends:\n{tail}")
    if boot.report() is None:
        raise ReferenceFailed(f"no complete /init report on the console; it ends:\n{tail}")
    return boot
