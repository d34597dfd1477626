"""Debian's Linux 6.1 boots to hvsim's own /init (``--init``) and powers off, under bare_metal (the ELF
vmlinux) and kvm_pvh: /init prints what userspace sees, and coverage of the whole boot names what one
entry alone runs.  Two runs of the same kernel and config print byte-identical consoles, printk
timestamps included.  The efi handover entry to /init is in test_linux_efi.py, and the matrix of
the bzImage under every entry (/init included) in test_linux_matrix.py.

Cost on a 2-core machine: the vmlinux boots to /init in ~11 s.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hvsim import MachineConfig
from hvsim.core.layout import PhysicalLayout
from hvsim.semantics import FIRMWARE_MEMMAP_TYPES
from hvsim.userspace_report import parse_userspace_report

from linux_kernel import debian_vmlinuz

pytestmark = pytest.mark.linux

CMDLINE = "console=ttyS0"


@pytest.fixture(scope="module")
def vmlinux(tmp_path_factory):
    cached = debian_vmlinuz().with_name("vmlinux")          # scripts/fetch-linux keeps the ELF beside it
    if cached.is_file():
        return cached
    path = tmp_path_factory.mktemp("linux") / "vmlinux"
    done = subprocess.run([sys.executable, "-m", "hvsim", "extract", str(debian_vmlinuz()), "-o", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return path


def hvsim_run(*args: str) -> tuple[subprocess.CompletedProcess, str]:
    done = subprocess.run([sys.executable, "-m", "hvsim", "run", *args, "--init", "--cmdline", CMDLINE,
                           "--timeout", "300"], capture_output=True, timeout=900)
    return done, done.stdout.decode("utf-8", "surrogateescape")


def expected_memmap() -> list[list[int]]:
    return [list(r.to_tuple()) for r in PhysicalLayout.for_config(MachineConfig(cmdline=CMDLINE)).memory_map]


def firmware_memmap(report) -> list[list[int]]:
    return [[s, n, FIRMWARE_MEMMAP_TYPES.get(t, -1)] for s, n, t in report["memmap"]]


def assert_pc_userspace(report) -> None:
    assert report["pid"] == 1 and report["mount_proc"] == "ok" and report["mount_sys"] == "ok"
    assert report["cmdline"] == CMDLINE
    assert report["cpus_online"] == "0"
    assert report["clocksource"] in ("tsc", "tsc-early") and report["clockevent"] == "lapic"
    assert {"timer", "ttyS0"} <= {line.split()[-1] for line in report["irqs"] if line.split()[0].isdigit()}
    assert report["consoles"] and report["consoles"][0].startswith("ttyS0")
    assert report["truncated"] is False


def test_vmlinux_reaches_init_powers_off_and_two_runs_print_the_same_bytes(vmlinux):
    first, console = hvsim_run("--env", "bare_metal", str(vmlinux))
    assert first.returncode == 0, first.stderr.decode()[-2000:]                 # /init's reboot(POWER_OFF)
    assert b"poweroff via acpi-pm1a-s5" in first.stderr
    report = parse_userspace_report(console)
    assert report is not None, console[-3000:]
    assert_pc_userspace(report)
    assert firmware_memmap(report) == expected_memmap()
    assert report["hypervisor"] == "" and report["efi"] is False
    assert "Run /init as init process" in console
    second, console_again = hvsim_run("--env", "bare_metal", str(vmlinux))
    assert second.returncode == 0 and console_again == console                 # timestamps included


def test_vmlinux_under_kvm_pvh_reaches_init(vmlinux):
    done, console = hvsim_run("--env", "kvm_pvh", str(vmlinux))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    report = parse_userspace_report(console)
    assert report is not None, console[-3000:]
    assert report["cmdline"] == CMDLINE and report["pid"] == 1
    assert report["hypervisor"] == ""                    # no /sys/hypervisor: KVM guests have none


def test_coverage_of_the_whole_boot_to_init_names_what_one_entry_runs(vmlinux, tmp_path):
    system_map = debian_vmlinuz().parent / "System.map"
    if not system_map.is_file():
        pytest.fail(f"{system_map} is missing: scripts/fetch-linux keeps it next to the vmlinuz")
    out = tmp_path / "coverage.json"
    done = subprocess.run([sys.executable, "-m", "hvsim", "coverage", str(vmlinux), "--init", "--envs",
                           "bare_metal,kvm_pvh", "--system-map", str(system_map), "--cmdline", CMDLINE,
                           "--timeout", "300", "--jobs", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    import json
    coverage = json.loads(out.read_text())
    for env in ("bare_metal", "kvm_pvh"):
        assert coverage["columns"][env]["ok"], coverage["columns"][env]
    # both entries reach userspace: the path to /init is common, late boot included
    assert {"start_kernel", "kernel_init", "run_init_process", "acpi_power_off"} <= set(coverage["every"])
    # what one entry alone runs, from the first instruction to poweroff
    assert "kvmclock_init" in coverage["only"]["kvm_pvh"]            # KVM's paravirtual clock
    assert "x86_default_get_root_pointer" in coverage["only"]["bare_metal"]
