"""xen_pv acceptance: the probe kernel, entered at its XEN_ELFNOTE_ENTRY with start_info in RSI, observes
the MachineConfig as a PV guest sees it, as a domU and as dom0 (the differences PV makes inevitable are
named in test_cross_env.py: a domU's pseudo-physical map, no ACPI for the probe under PV)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zlib

import pytest
from probe_boot import boot, calls, expected_memmap

from hvsim import MachineConfig
from hvsim.abi import xen as x
from hvsim.api import Run
from hvsim.image import load_image
from hvsim.kernels import probe_path
from hvsim.probe_report import parse_probe_exception, parse_probe_report

MiB, GiB = 1 << 20, 1 << 30
DOMAINS = {"domU": {}, "dom0": {"dom0": True}}
RAM = 1


@pytest.fixture(params=["elf", "bzImage"])
def probe(request):
    """The probe ELF, or the probe bzImage booted through its payload ELF's PV notes."""
    return probe_path(request.param)


@pytest.fixture(params=list(DOMAINS))
def domain(request):
    return request.param


def boot_pv(kernel, config: MachineConfig, domain: str):
    return boot(kernel, config, "xen_pv", **DOMAINS[domain])


RESERVED = 2
XEN_IOMEM = ((0xFEC0_0000, 0x1000), (0xFEE0_0000, 0x10_0000))    # the I/O APIC page, the MSI range


def pv_memmap(config: MachineConfig, domain: str):
    """dom0 reads the machine's map (XENMEM_machine_memory_map) with the I/O memory Xen keeps from
    it reserved where it lies in a hole; a domU its own pseudo-physical one."""
    if domain != "dom0":
        return ((0, config.memory, RAM),)
    machine = expected_memmap(config)
    extra = [(start, size, RESERVED) for start, size in XEN_IOMEM
             if not any(s < start + size and start < s + n for s, n, _ in machine)]
    return tuple(sorted((*machine, *extra)))


def probe_symbols() -> dict:
    return load_image(probe_path("elf")).elf.symbols


# -- the probe sees the MachineConfig -------------------------------------------------------------

@pytest.mark.parametrize("hypercall", ["page", "inline"])
def test_probe_reports_the_machine_config(probe, domain, tmp_path, hypercall):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(random.Random(4).randbytes(3 * MiB + 5))
    cmdline = f"probe.hypercall={hypercall} console=hvc0 café ünïcode ✓"
    config = MachineConfig(memory="6G", cmdline=cmdline, initrd=initrd, smp=4)

    result, report = boot_pv(probe, config, domain)

    assert report.entry == "pv"
    assert report.cmdline == cmdline
    assert report.memmap == pv_memmap(config, domain)
    assert report.initrd[1:] == (3 * MiB + 5, zlib.crc32(initrd.read_bytes()))
    assert report.cpus == 4
    assert (report.rsdp, report.acpi_tables) == (None, ())
    # how the guest learnt it
    hypercalls = calls(result)
    assert hypercalls[0] == "set_trap_table"
    is_up = [e for e in result.events if e.kind == "Call" and e.name == "vcpu_op.is_up"]
    assert [e.result for e in is_up] == [1, 0, 0, 0, -x.ENOENT]    # vCPU 4 of 4: -ENOENT, still named
    if domain == "dom0":
        assert "memory_op.machine_memory_map" in hypercalls and "memory_op.memory_map" not in hypercalls
        assert result.console("xen").startswith("hvsim-probe: begin v1\n") and result.console("hvc0") == ""
    else:
        assert "memory_op.memory_map" in hypercalls and "memory_op.machine_memory_map" not in hypercalls
        assert "console_io.write" not in hypercalls              # a domU writes its console ring
        assert result.console("hvc0").startswith("hvsim-probe: begin v1\n") and result.console("xen") == ""
        assert "event_channel_op.send" in hypercalls
    assert hypercalls[-1] == "sched_op.shutdown"
    assert [e.source for e in result.events if e.kind == "Shutdown"] == ["SCHEDOP_shutdown"]
    # page: every hypercall comes from a stub in the hypercall page; inline: from the probe's syscall
    page, inline = probe_symbols()["hypercall_page"], probe_symbols()["xen_hypercall_syscall"]
    rips = {e.rip for e in result.events if e.kind == "Call" and e.interface == "xen-hypercall"}
    if hypercall == "page":
        assert all(page <= rip < page + 4096 for rip in rips), sorted(map(hex, rips))
    else:
        assert rips == {inline + 12}, sorted(map(hex, rips))      # after its four 3-byte movs


@pytest.mark.parametrize("memory", [512 * MiB, 3 * GiB + 512 * MiB, 6 * GiB])
def test_memory_map(memory, domain):
    config = MachineConfig(memory=memory)
    _, report = boot_pv(probe_path("elf"), config, domain)
    assert report.memmap == pv_memmap(config, domain)


@pytest.mark.parametrize("cmdline", ["", "console=hvc0 root=/dev/vda1  ro quiet", "  edge  ",
                                     "path=C:\\boot\\vmlinuz \\x41 end\\", "tab\there", "x" * 1023])
def test_command_line_reaches_the_guest_unchanged(cmdline, domain):
    _, report = boot_pv(probe_path("elf"), MachineConfig(cmdline=cmdline), domain)
    assert report.cmdline == cmdline


def test_a_command_line_longer_than_start_info_holds_arrives_cut(domain):
    """start_info.cmd_line is char[1024] (MAX_GUEST_CMDLINE): the guest gets the first 1023 bytes."""
    cmdline = "".join(random.Random(5).choice("abc xyz") for _ in range(1500))
    _, report = boot_pv(probe_path("elf"), MachineConfig(cmdline=cmdline), domain)
    assert report.cmdline == cmdline[:1023]


@pytest.mark.parametrize("smp", [1, 4])
def test_no_initrd_and_cpu_count(smp, domain):
    _, report = boot_pv(probe_path("elf"), MachineConfig(smp=smp), domain)
    assert report.initrd is None and report.cpus == smp


def test_the_initrd_lies_in_the_bootstrap_region_after_the_image(tmp_path, domain):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"x" * 5000)
    prepared = Run("xen_pv", probe_path("elf"), MachineConfig(initrd=initrd), options=DOMAINS[domain])
    result = prepared.execute()
    start_info = int(result.entry.split("start_info at ")[1].split(",")[0], 16)
    report = parse_probe_report(result.console())
    image_end = max(s.paddr + s.memsz for s in prepared.image.elf.segments)
    assert image_end <= report.initrd[0] and report.initrd[0] + 5000 <= start_info


def test_a_long_report_wraps_the_console_ring():
    """A domU's report goes through the 2 KiB console ring: 1000 tabs print as 4000 bytes of "\\x09"."""
    cmdline = "\t" * 1000
    result, report = boot_pv(probe_path("elf"), MachineConfig(cmdline=cmdline), "domU")
    assert report.cmdline == cmdline
    assert len(result.console("hvc0")) > 2 * 2048
    assert calls(result).count("event_channel_op.send") >= 4000 // 256


def test_an_exception_goes_through_the_trap_table(domain):
    """probe.fault=pf reads an unmapped address after the report: Xen bounces the #PF to the handler
    set_trap_table named, which prints the exception line and powers off."""
    result, report = boot_pv(probe_path("elf"), MachineConfig(cmdline="probe.fault=pf"), domain)
    fault = parse_probe_exception(result.console())
    assert (fault.vector, fault.cr2) == (14, 0x7FFF_0000_0000)
    assert result.extra["xen_pv"]["bounced_exceptions"] == 1
    faults = [e for e in result.events if e.kind == "Fault"]
    assert [e.name for e in faults if not e.detail.startswith("emulated as Xen does")] == ["#PF"]
    # the handler reads CR2 with a mov, which ring 1 may not execute: Xen's emulator answers
    assert [e.detail for e in faults if e.name == "#GP"] == ["emulated as Xen does: mov rbp, cr2: cr2 read"]
    assert calls(result)[-1] == "sched_op.shutdown"


# -- the command line ---------------------------------------------------------------------------------

def test_the_cli_offers_and_runs_the_pv_entry():
    """``hvsim inspect`` lists the probe ELF's PV entry and xen_pv accepts it; ``hvsim run --env xen_pv
    --dom0`` prints the report on stdout and exits 0."""
    cli = [sys.executable, "-m", "hvsim.cli"]
    inspect = subprocess.run([*cli, "inspect", str(probe_path("elf")), "--json"], capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    report = json.loads(inspect.stdout)
    entries = {e["kind"]: e for e in report["entries"]}
    assert entries["xen_pv"]["address"] == probe_symbols()["pv_entry"], entries
    assert report["environments"]["xen_pv"]["accepted"] is True

    done = subprocess.run([*cli, "run", "--env", "xen_pv", "--dom0", "--smp", "3", "--cmdline", "from the cli",
                           str(probe_path("elf"))], capture_output=True)
    assert done.returncode == 0, done.stderr
    printed = parse_probe_report(done.stdout.decode("utf-8", "surrogateescape"))
    assert (printed.entry, printed.cmdline, printed.cpus) == ("pv", "from the cli", 3)
