"""Debian's Linux 6.1 under xen_pvh, as a xen_pv domU (its /init in ring 3) and as the xen_pv dom0 boots to
hvsim's own /init and powers off: its console is hvc0
on the Xen console ring (event-channel notifications), its clock and timer Xen's (the pvclock in
shared_info, VIRQ_TIMER through VCPUOP_set_singleshot_timer), its events delivered through the HVM
callback vector, xenbus answered by hvsim's xenstore.  Two runs print the same bytes.

Cost on a 2-core machine: ~14 s per boot (a PV boot ~100 s).
"""

from __future__ import annotations

import json
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


def test_vmlinux_as_the_xen_pv_dom0_sees_the_machine_and_powers_off(vmlinux, tmp_path):  # noqa: F811
    # The initial domain: console_io for its console, the machine's memory map and ACPI tables, the
    # physical CPUs through platform_op; SCHEDOP_shutdown(poweroff) ends the run.
    done, console = hvsim_run("--env", "xen_pv", "--dom0", str(vmlinux), "--json", str(tmp_path / "run.json"))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"poweroff via SCHEDOP_shutdown" in done.stderr
    report = parse_userspace_report(console)
    assert report is not None, console[-3000:]
    assert report["pid"] == 1 and report["cmdline"] == CMDLINE and report["truncated"] is False
    assert (report["hypervisor"], report["hypervisor_guest_type"]) == ("xen", "PV")
    assert {"APIC", "FACP", "DSDT"} <= set(report["acpi_tables"])
    assert report["consoles"] and report["consoles"][0].startswith("hvc0")
    assert report["clockevent"] == "xen"               # Linux's dom0 prefers the TSC as clocksource
    assert "Xen: [mem 0x0000000000100000-0x000000001fffffff] usable" in console
    assert "xen_cpu: Failed to sync pcpu info" not in console
    run = json.loads((tmp_path / "run.json").read_text())
    hypercalls = {e["name"] for e in run["events"] if e.get("kind") == "Call"}
    assert {"console_io.write", "memory_op.machine_memory_map", "platform_op.get_cpuinfo"} <= hypercalls
    assert "memory_op.memory_map" not in hypercalls


# The matrix over the PC entry and both Xen entries: every console Linux may pick is named, so each
# column's /init report reaches the console the environment has (ttyS0 on a PC, hvc0 under Xen).
MATRIX_CMDLINE = "console=ttyS0 console=hvc0"
# Linux's own differences, not Xen's ABI: its PVH entry reserves the whole ISA range (0x9fc00-0xfffff)
# in the map it builds, so the map it prints, /sys/firmware/memmap and /proc/iomem differ from the E820
# map hvsim gives (test_linux_matrix.py shows the same), and what it prints differs with them.  (Under
# xen_pv the console is declared: a domU's is the Xen console ring.)
LINUX_PVH_OWN = {("xen_pvh", "memmap"), ("xen_pvh", "userspace_memmap"), ("xen_pvh", "userspace_iomem"),
                 ("xen_pvh", "console")}


def test_the_xen_matrix_shows_what_userspace_saw_with_every_xen_difference_declared(vmlinux, tmp_path, capsys):  # noqa: F811
    from hvsim.cli import main

    out = tmp_path / "matrix.json"
    status = main(["matrix", str(vmlinux), "--init", "--envs", "bare_metal,xen_pvh,xen_pv", "--cmdline",
                   MATRIX_CMDLINE, "--timeout", "900", "--json", str(out), "--quiet"])
    table = capsys.readouterr().out
    data = json.loads(out.read_text())

    for env, column in data["environments"].items():
        record = column["semantics"]
        assert column["ok"] and record["stop"] == "poweroff", (env, column["error"], record["stop_detail"])
        assert record["userspace_cmdline"] == MATRIX_CMDLINE and record["sources"]["userspace_cmdline"] == "userspace"
    pv = data["environments"]["xen_pv"]["semantics"]
    assert pv["userspace_hypervisor"].startswith("xen") and pv["clockevent"] == "xen"
    undeclared = {(d["environment"], d["field"]) for d in data["differences"] if not d["inherent"]}
    assert undeclared == LINUX_PVH_OWN, undeclared
    declared = [d for d in data["differences"] if d["inherent"]]
    assert {d["environment"] for d in declared} == {"xen_pv", "xen_pvh"} and all(d["reason"] for d in declared)
    assert {"userspace_hypervisor", "clockevent", "userspace_irqs"} <= {d["field"] for d in declared
                                                                       if d["environment"] == "xen_pv"}
    assert status == 1 and "~ userspace_irqs" in table
