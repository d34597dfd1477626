"""Debian's Linux 6.1 in the conformance matrix and under boot-path coverage: what Linux printed about
its world under each environment side by side, and the functions only one boot entry runs (the
HVMLite thread's "dead code" question), named with the kernel's System.map."""

from __future__ import annotations

import json

import pytest

from hvsim import get_plugin_manager
from hvsim.cli import main
from hvsim.core.layout import PhysicalLayout
from hvsim.core.plugins import environments
from hvsim.image import load_image
from hvsim import MachineConfig

from linux_kernel import debian_vmlinuz

pytestmark = pytest.mark.linux

CMDLINE = "earlyprintk=serial,ttyS0 console=ttyS0 nokaslr"
# kvm_pvh: the example third-party plugin.  xen_pv boots to /init in test_linux_xen_init.py; it is left
# out of this matrix for time (a PV boot is the slowest, ~100 s).
IN_TREE = ("bare_metal", "xen_pvh", "efi", "kvm_pvh")
# Functions only one boot entry runs, with the expected stop, per environment.  An environment that is
# not installed (xen_pv and efi until their branches land) is skipped by name.
ONLY_UNDER = {
    "bare_metal": {"x86_default_get_root_pointer"},          # the RSDP from boot_params / the BIOS scan
    "xen_pvh": {"pvh_start_xen", "xen_prepare_pvh", "xen_pvh_init", "pvh_get_root_pointer",
                "xen_hvm_guest_init"},
    "xen_pv": {"startup_xen", "xen_start_kernel", "xen_setup_kernel_pagetable"},
}


def installed(names) -> list[str]:
    present = environments(get_plugin_manager())
    return [name for name in names if name in present]


@pytest.fixture(scope="module")
def vmlinuz():
    return debian_vmlinuz()


@pytest.fixture(scope="module")
def coverage(vmlinuz, tmp_path_factory):
    """``hvsim coverage`` of the vmlinux inside Debian's bzImage, under every installed environment
    of ONLY_UNDER, with the package's System.map."""
    system_map = vmlinuz.parent / "System.map"
    if not system_map.is_file():
        pytest.fail(f"{system_map} is missing: scripts/fetch-linux keeps it next to the vmlinuz")
    folder = tmp_path_factory.mktemp("coverage")
    vmlinux = folder / "vmlinux"
    vmlinux.write_bytes(load_image(vmlinuz).payload_elf().data)
    out = folder / "coverage.json"
    status = main(["coverage", str(vmlinux), "--envs", ",".join(installed(ONLY_UNDER)), "--system-map",
                   str(system_map), "--cmdline", CMDLINE, "--timeout", "120", "--json", str(out)])
    assert status == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("env", sorted(ONLY_UNDER))
def test_coverage_names_the_functions_only_one_entry_runs(coverage, env):
    if env not in coverage["columns"]:
        pytest.skip(f"{env} is not installed")
    column = coverage["columns"][env]
    assert column["ok"] and column["complete"] and column["blocks"] > 3000, column["error"]
    assert ONLY_UNDER[env] <= set(coverage["only"][env]), sorted(coverage["only"][env])
    # the common path: start_kernel and setup_arch run under every entry; a PV kernel enters at
    # startup_xen, so startup_64 is common only when xen_pv is not in the set
    assert {"start_kernel", "setup_arch"} <= set(coverage["every"])
    assert ("startup_64" in coverage["every"]) == ("xen_pv" not in coverage["columns"])
    assert coverage["functions_total"] > 40000 and coverage["none"]


def test_matrix_shows_what_linux_printed_under_every_environment(vmlinuz, tmp_path, capsys):
    envs = installed(IN_TREE)
    out = tmp_path / "matrix.json"
    status = main(["matrix", str(vmlinuz), "--init", "--envs", ",".join(envs), "--cmdline", CMDLINE,
                   "--timeout", "300", "--json", str(out)])
    table = capsys.readouterr().out
    data = json.loads(out.read_text())

    assert list(data["environments"]) == sorted(envs)
    layout = [list(r.to_tuple()) for r in PhysicalLayout.for_config(MachineConfig()).memory_map]
    for env, column in data["environments"].items():
        record = column["semantics"]
        assert column["ok"] and record["kernel"] == "linux", column
        assert record["cmdline"] == CMDLINE and record["sources"]["memmap"] == "linux console"
        assert record["memmap"] and record["stop"] and record["stop_detail"]
        assert "Linux version 6.1" in record["console"]
    bare = data["environments"]["bare_metal"]["semantics"]
    assert bare["memmap"] == layout and bare["calls"] == {}
    # with hvsim's /init, Linux reaches userspace, which reports what it saw and powers off
    assert bare["stop"] == "poweroff" and bare["stop_detail"] == "poweroff via acpi-pm1a-s5"
    assert bare["sources"]["userspace_cmdline"] == "userspace" and bare["userspace_cmdline"] == CMDLINE
    assert bare["userspace_efi"] == "no" and bare["clockevent"] == "lapic"
    for env in {"efi", "kvm_pvh"} & set(envs):       # the other PC entries reach userspace too
        record = data["environments"][env]["semantics"]
        assert record["stop"] == "poweroff" and record["userspace_cmdline"] == CMDLINE, (env, record["stop_detail"])
    if "efi" in envs:
        assert data["environments"]["efi"]["semantics"]["userspace_efi"].startswith("yes")
        declared = {d["field"] for d in data["differences"] if d["environment"] == "efi" and d["inherent"]}
        assert {"userspace_efi", "userspace_memmap"} <= declared
    if "kvm_pvh" in envs:
        assert data["environments"]["kvm_pvh"]["semantics"]["clocksource"] == "kvm-clock"
    assert bare["rsdp"] == 0xE0000 and {"FACP", "APIC"} <= set(bare["acpi_tables"])
    if "xen_pvh" in envs:
        pvh = data["environments"]["xen_pvh"]["semantics"]
        assert pvh["calls"]["xen-hypercall:xen_version.get_features"] == 1
        # Linux's PVH entry adds the ISA range as reserved, so the map it prints differs: shown, undeclared
        assert [0x9FC00, 0x100000 - 0x9FC00, 2] in pvh["memmap"]
        undeclared = {(d["environment"], d["field"]) for d in data["differences"] if not d["inherent"]}
        assert ("xen_pvh", "memmap") in undeclared and status == 1
        assert "! memmap" in table and "Hypervisor detected: Xen HVM" in table
    assert "earlyprintk=serial,ttyS0" in table and "poweroff" in table and "userspace_cmdline" in table
