"""xen_pvh acceptance: the probe kernel, entered at its PHYS32_ENTRY with an hvm_start_info, observes
exactly the MachineConfig. (That it agrees with bare_metal field by field, but for the differences the
ABIs make inevitable, is test_cross_env.py.)"""

from __future__ import annotations

import random
import zlib

import probe_boot
import pytest
from probe_boot import calls, expected_memmap

from hvsim import MachineConfig
from hvsim.api import Run, run
from hvsim.kernels import probe_path
from hvsim.probe_report import parse_probe_report

MiB, GiB = 1 << 20, 1 << 30


@pytest.fixture(params=["elf", "bzImage"])
def probe(request):
    """The probe ELF, or the probe bzImage booted through its payload ELF's PVH note."""
    return probe_path(request.param)


def boot(kernel, config: MachineConfig, **options):
    return probe_boot.boot(kernel, config, "xen_pvh", **options)


# -- the probe sees the MachineConfig -------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 0])
@pytest.mark.parametrize("hypercall", ["page", "inline"])
def test_probe_reports_the_whole_machine_config(probe, tmp_path, version, hypercall):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(random.Random(2).randbytes(3 * MiB + 5))
    cmdline = f"probe.hypercall={hypercall} console=hvc0 café ünïcode ✓"
    config = MachineConfig(memory="6G", cmdline=cmdline, initrd=initrd, smp=4)

    result, report = boot(probe, config, start_info_version=version)

    assert report.entry == "pvh"
    assert report.cmdline == cmdline
    assert report.memmap == expected_memmap(config)
    assert report.initrd[1:] == (3 * MiB + 5, zlib.crc32(initrd.read_bytes()))
    assert report.cpus == 4 and {"FACP", "APIC"} <= set(report.acpi_tables)
    # how the guest learnt it: the map from the start info (v1) or from Xen (v0)
    assert ("memory_op.memory_map" in calls(result)) == (version == 0)
    # the report went out through console_io, and the run ended through SCHEDOP_shutdown
    assert result.console("xen").startswith("hvsim-probe: begin v1\n")
    assert calls(result)[-1] == "sched_op.shutdown"
    assert [e.source for e in result.events if e.kind == "Shutdown"] == ["SCHEDOP_shutdown"]
    # hypercall page: filled through the MSR; inline: no MSR write at all
    assert ("wrmsr 0x40000000" in calls(result, "wrmsr")) == (hypercall == "page")


@pytest.mark.parametrize("memory", [512 * MiB, 3 * GiB + 512 * MiB, 6 * GiB])
@pytest.mark.parametrize("version", [1, 0])
def test_memory_map_is_the_configs(memory, version):
    config = MachineConfig(memory=memory)
    _, report = boot(probe_path("elf"), config, start_info_version=version)
    assert report.memmap == expected_memmap(config)


@pytest.mark.parametrize("cmdline", ["", "console=hvc0 root=/dev/vda1  ro quiet", "  edge  ",
                                     "path=C:\\boot\\vmlinuz \\x41 end\\", "tab\there"])
def test_command_line_reaches_the_guest_unchanged(cmdline):
    _, report = boot(probe_path("elf"), MachineConfig(cmdline=cmdline))
    assert report.cmdline == cmdline


@pytest.mark.parametrize("smp", [1, 4])
def test_no_initrd_and_cpu_count(smp):
    _, report = boot(probe_path("elf"), MachineConfig(smp=smp))
    assert report.initrd is None and report.cpus == smp


def test_start_info_lies_clear_of_the_image_and_the_initrd(tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"x" * 5000)
    prepared = Run("xen_pvh", probe_path("elf"), MachineConfig(initrd=initrd))
    result = prepared.execute()
    start_info = int(result.entry.split(" at ")[-1], 16)
    report = parse_probe_report(result.console())
    image_end = max(s.paddr + s.memsz for s in prepared.image.elf.segments)
    assert image_end <= report.initrd[0] and report.initrd[0] + 5000 <= start_info


def test_an_unknown_start_info_version_is_refused():
    from hvsim.core.errors import LoadError

    with pytest.raises(LoadError, match="start info version 2"):
        run("xen_pvh", probe_path("elf"), MachineConfig(), options={"start_info_version": 2})
