"""bare_metal acceptance: what the probe kernel observes is exactly the MachineConfig it was given.

Every test builds a config, boots the embedded probe (bzImage through the 64-bit boot protocol, or
the probe ELF entered at e_entry), and compares the probe's report with the config.  Each boot takes
a few milliseconds.
"""

from __future__ import annotations

import random
import zlib

import pytest

from hvsim import MachineConfig
from hvsim.api import run
from hvsim.core.events import Fault, Shutdown
from hvsim.core.layout import BIOS_AREA, EBDA_START, FOUR_GIB, HIGH_MEMORY, PCI_HOLE_START, PhysicalLayout
from hvsim.image import load_image
from hvsim.kernels import probe_path
from hvsim.probe_report import ProbeReport, parse_probe_exception, parse_probe_report

MiB, GiB = 1 << 20, 1 << 30
E820_RAM = 1
PROBE_FAULT_ADDR = 0x7FFF_0000_0000      # probe/probe.h: what probe.fault=pf reads


@pytest.fixture(params=["bzImage", "elf"])
def probe(request):
    """The kernel argument for ``run``: None (the embedded probe bzImage) or the probe ELF's path."""
    return None if request.param == "bzImage" else probe_path("elf")


def boot(kernel, config: MachineConfig):
    """Run the probe to its clean poweroff and return (result, report)."""
    result = run("bare_metal", kernel, config)
    assert result.stop.kind == "poweroff", (result.stop.describe(), result.console())
    assert result.exit_status == 0
    return result, parse_probe_report(result.console())


def kernel_end(kernel) -> int:
    """The first byte above the loaded kernel (what the initrd must not overlap)."""
    image = load_image(kernel if kernel is not None else probe_path("bzImage"))
    if image.bzimage is not None:
        hdr = image.bzimage.header
        return (hdr.pref_address or hdr.code32_start) + max(len(image.bzimage.pm_data), hdr.init_size)
    return max(s.paddr + s.memsz for s in image.elf.segments)


# -- the whole story at once ------------------------------------------------------------------------

def test_probe_reports_the_whole_machine_config(probe, tmp_path):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(random.Random(1).randbytes(3 * MiB + 5))
    config = MachineConfig(memory="6G", cmdline="console=ttyS0 café ünïcode ✓", initrd=initrd, smp=4)

    result, report = boot(probe, config)

    address = report.initrd[0] if report.initrd else None
    assert report == ProbeReport(
        entry="linux64",
        cmdline="console=ttyS0 café ünïcode ✓",
        memmap=tuple(r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map),
        initrd=(address, 3 * MiB + 5, zlib.crc32(initrd.read_bytes())),
        rsdp=report.rsdp,
        acpi_tables=report.acpi_tables,
        cpus=4,
    )
    assert report.rsdp is not None and {"FACP", "APIC"} <= set(report.acpi_tables)
    assert result.environment == "bare_metal"
    assert result.config == config.to_dict()


# -- memory ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("memory", [
    pytest.param(512 * MiB, id="512M"),
    pytest.param(3 * GiB + 512 * MiB, id="3.5G"),
    pytest.param(6 * GiB, id="6G"),
])
def test_memory_map_is_the_configs(probe, memory):
    config = MachineConfig(memory=memory)

    _, report = boot(probe, config)

    assert report.memmap == tuple(r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map)
    ram = [(start, start + size) for start, size, kind in report.memmap if kind == E820_RAM]
    # All of the configured RAM is there, less the legacy hole under 1 MiB (EBDA, VGA, BIOS).
    assert sum(end - start for start, end in ram) == memory - (HIGH_MEMORY - EBDA_START)
    ends = sorted(ram)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(ends, ends[1:])), "RAM ranges overlap"
    # No RAM in the 32-bit PCI hole; RAM that does not fit below it continues at 4 GiB.
    assert not any(start < FOUR_GIB and end > PCI_HOLE_START for start, end in ram)
    above = [(start, end) for start, end in ram if start >= FOUR_GIB]
    if memory > PCI_HOLE_START:
        assert above == [(FOUR_GIB, FOUR_GIB + memory - PCI_HOLE_START)]
    else:
        assert above == [] and max(end for _, end in ram) == memory


# -- command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cmdline", [
    pytest.param("", id="empty"),
    pytest.param("console=ttyS0 root=/dev/vda1  ro quiet", id="spaces"),
    pytest.param("  leading and trailing  ", id="edge-spaces"),
    pytest.param("café ünïcode ✓", id="utf8"),
    pytest.param("path=C:\\boot\\vmlinuz \\x41 end\\", id="backslash"),
    pytest.param("tab\there", id="tab"),
])
def test_command_line_reaches_the_guest_unchanged(probe, cmdline):
    _, report = boot(probe, MachineConfig(cmdline=cmdline))

    assert report.cmdline == cmdline


def test_command_line_of_exactly_cmdline_size_bytes_is_accepted():
    limit = load_image(probe_path("bzImage")).bzimage.header.cmdline_size
    cmdline = "é" * (limit // 2) + "x" * (limit % 2)       # counted in bytes, not characters
    assert len(cmdline.encode()) == limit

    _, report = boot(None, MachineConfig(cmdline=cmdline))

    assert report.cmdline == cmdline


# -- initrd ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("memory", ["512M", "6G"])
@pytest.mark.parametrize("size", [1, 4096, 3 * MiB + 123])
def test_initrd_bytes_reach_the_guest_in_ram(probe, tmp_path, memory, size):
    data = random.Random(size).randbytes(size)
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(data)
    config = MachineConfig(memory=memory, initrd=initrd)

    _, report = boot(probe, config)

    assert report.initrd is not None
    address, reported_size, crc = report.initrd
    assert (reported_size, crc) == (size, zlib.crc32(data))
    assert PhysicalLayout.for_config(config).is_ram(address, size), f"initrd at {address:#x} is not in RAM"
    assert address % 4096 == 0
    assert address >= kernel_end(probe), "the initrd overlaps the kernel"
    if probe is None:   # below initrd_addr_max, unless above 4 GiB (XLF_CAN_BE_LOADED_ABOVE_4G)
        initrd_addr_max = load_image(probe_path("bzImage")).bzimage.header.initrd_addr_max
        assert address + size - 1 <= initrd_addr_max or address >= FOUR_GIB


def test_no_initrd_is_reported_as_none(probe):
    _, report = boot(probe, MachineConfig())

    assert report.initrd is None


# -- CPUs and ACPI --------------------------------------------------------------------------------

@pytest.mark.parametrize("smp", [1, 4])
def test_acpi_madt_describes_the_configured_cpus(probe, smp):
    _, report = boot(probe, MachineConfig(smp=smp))

    assert report.cpus == smp
    assert report.rsdp is not None and BIOS_AREA <= report.rsdp < HIGH_MEMORY
    assert "FACP" in report.acpi_tables and "APIC" in report.acpi_tables


def test_without_acpi_the_guest_finds_no_tables_and_powers_off_via_the_exit_port(probe):
    result, report = boot(probe, MachineConfig(acpi=False, smp=4))

    assert (report.rsdp, report.acpi_tables, report.cpus) == (None, (), None)
    shutdowns = [e for e in result.events if isinstance(e, Shutdown)]
    assert [(s.reason, s.source, s.code) for s in shutdowns] == [("poweroff", "exit-port", 0)]


def test_with_acpi_the_guest_powers_off_through_acpi_s5(probe):
    result, _ = boot(probe, MachineConfig())

    shutdowns = [e for e in result.events if isinstance(e, Shutdown)]
    assert [(s.reason, s.source) for s in shutdowns] == [("poweroff", "acpi-pm1a-s5")]


# -- exceptions through the guest's IDT -----------------------------------------------------------

def test_page_fault_is_delivered_to_the_probes_idt_handler(probe):
    result, report = boot(probe, MachineConfig(cmdline="probe.fault=pf"))

    assert report.cmdline == "probe.fault=pf"            # the report comes before the fault
    seen = parse_probe_exception(result.console())
    assert seen is not None, result.console()
    assert (seen.vector, seen.cr2) == (14, PROBE_FAULT_ADDR)
    assert "probe: exception 14 " in result.console() and f"cr2={PROBE_FAULT_ADDR:#x}" in result.console()
    faults = [e for e in result.events if isinstance(e, Fault)]
    assert [(f.vector, f.delivered, f.cr2) for f in faults] == [(14, True, PROBE_FAULT_ADDR)]
    assert faults[0].rip == seen.rip                     # hvsim recorded the RIP the handler saw
    assert faults[0].error_code == seen.error_code
    assert result.stats.faults_delivered == 1


def test_no_fault_without_probe_fault(probe):
    result, _ = boot(probe, MachineConfig())

    assert parse_probe_exception(result.console()) is None
    assert not any(isinstance(e, Fault) for e in result.events)
    assert result.stats.faults_delivered == 0
