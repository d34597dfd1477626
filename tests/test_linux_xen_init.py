"""Debian's Linux 6.1 under xen_pvh (and as a xen_pv domU, its /init in ring 3) boots to hvsim's own /init and powers off: its console is hvc0
on the Xen console ring (event-channel notifications), its clock and timer Xen's (the pvclock in
shared_info, VIRQ_TIMER through VCPUOP_set_singleshot_timer), its events delivered through the HVM
callback vector, xenbus answered by hvsim's xenstore.  Two runs print the same bytes.

Cost on a 2-core machine: ~14 s per boot.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hvsim.userspace_report import parse_userspace_report

from test_linux_init import vmlinux  # noqa: F401  (the module-scoped fixture)

pytestmark = pytest.mark.linux

CMDLINE = "console=hvc0"


def hvsim_run(*args: str) -> tuple[subprocess.CompletedProcess, str]:
    done = subprocess.run([sys.executable, "-m", "hvsim", "run", *args, "--init", "--cmdline", CMDLINE,
                           "--timeout", "300"], capture_output=True, timeout=900)
    return done, done.stdout.decode("utf-8", "surrogateescape")


def test_vmlinux_under_xen_pvh_reaches_init_on_xen_time_and_events(vmlinux):  # noqa: F811
    done, console = hvsim_run("--env", "xen_pvh", str(vmlinux))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"poweroff via acpi-pm1a-s5" in done.stderr
    report = parse_userspace_report(console)
    assert report is not None, console[-3000:]
    assert report["pid"] == 1 and report["cmdline"] == CMDLINE and report["truncated"] is False
    assert (report["hypervisor"], report["hypervisor_guest_type"]) == ("xen", "PVH")
    assert report["clocksource"] == "xen" and report["clockevent"] == "xen"
    assert report["consoles"] and report["consoles"][0].startswith("hvc0")
    irqs = {" ".join(line.split()[1:]) for line in report["irqs"] if line.split()[0].isdigit()}
    assert {"xen-percpu -virq timer0", "xen-dyn -event xenbus", "xen-dyn-lateeoi -event hvc_console"} <= irqs
    again, console_again = hvsim_run("--env", "xen_pvh", str(vmlinux))
    assert again.returncode == 0 and console_again == console                # timestamps included


def test_vmlinux_as_a_xen_pv_domu_runs_init_in_user_mode_and_powers_off(vmlinux):  # noqa: F811
    # /init runs in ring 3 (entered by the iret hypercall on the user page table), its system calls
    # reach the kernel's syscall callback; it powers off through SCHEDOP_shutdown.
    done, console = hvsim_run("--env", "xen_pv", str(vmlinux))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"poweroff via SCHEDOP_shutdown" in done.stderr
    assert "Run /init as init process" in console
    report = parse_userspace_report(console)
    assert report is not None, console[-3000:]
    assert report["pid"] == 1 and report["cmdline"] == CMDLINE and report["truncated"] is False
    assert (report["hypervisor"], report["hypervisor_guest_type"]) == ("xen", "PV")
    assert report["clocksource"] == "xen" and report["clockevent"] == "xen"
    assert report["consoles"] and report["consoles"][0].startswith("hvc0")
