"""xen_pvh acceptance: the probe kernel, entered at its PHYS32_ENTRY with an hvm_start_info, observes
exactly the MachineConfig; and what it observes under xen_pvh agrees with bare_metal field by field,
except where the two ABIs make a difference inevitable (named below)."""

from __future__ import annotations

import random
import zlib

import attrs
import pytest

from hvsim import MachineConfig
from hvsim.api import Run, run
from hvsim.core.layout import PhysicalLayout
from hvsim.kernels import probe_path
from hvsim.probe_report import parse_probe_report

MiB, GiB = 1 << 20, 1 << 30


@pytest.fixture(params=["elf", "bzImage"])
def probe(request):
    """The probe ELF, or the probe bzImage booted through its payload ELF's PVH note."""
    return probe_path(request.param)


def boot(kernel, config: MachineConfig, env: str = "xen_pvh", **options):
    prepared = Run(env, kernel, config, options=options)
    result = prepared.execute()
    assert result.stop.kind == "poweroff", (result.stop.describe(), result.console())
    assert result.exit_status == 0
    return result, parse_probe_report(result.console())


def calls(result, prefix: str = "") -> list[str]:
    return [e.name for e in result.events if e.kind == "Call" and e.name.startswith(prefix)]


def expected_memmap(config):
    return tuple(r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map)


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


# -- bare_metal and xen_pvh agree ---------------------------------------------------------------------

# What the two ABIs make different, each with its reason; every other field must be equal.
INEVITABLE = {
    "entry": "the boot entry itself: the 64-bit boot protocol vs PVH's PHYS32_ENTRY",
    "initrd_address": "each loader chooses where the module goes (bare_metal: high, under "
                      "initrd_addr_max; Xen's builder: right after the kernel)",
}


def comparable(report) -> dict:
    fields = attrs.asdict(report)
    initrd = fields.pop("initrd")
    fields["initrd_address"] = initrd[0] if initrd else None
    fields["initrd"] = initrd[1:] if initrd else None
    return fields


@pytest.mark.parametrize("kernel", ["elf", "bzImage"])
@pytest.mark.parametrize("memory,smp,with_initrd", [("512M", 1, False), ("6G", 4, True)])
def test_bare_metal_and_xen_pvh_reports_agree_field_by_field(tmp_path, kernel, memory, smp, with_initrd):
    initrd = None
    if with_initrd:
        initrd = tmp_path / "initrd"
        initrd.write_bytes(random.Random(3).randbytes(1 * MiB + 17))
    config = MachineConfig(memory=memory, smp=smp, initrd=initrd, cmdline="same world? ✓")
    _, bare = boot(probe_path(kernel), config, env="bare_metal")
    _, pvh = boot(probe_path(kernel), config, env="xen_pvh")
    a, b = comparable(bare), comparable(pvh)
    differing = {k for k in a if a[k] != b[k]}
    assert differing - set(INEVITABLE) == set(), {k: (a[k], b[k]) for k in differing}
    assert (a["entry"], b["entry"]) == ("linux64", "pvh")


def test_an_unknown_start_info_version_is_refused():
    from hvsim.core.errors import LoadError

    with pytest.raises(LoadError, match="start info version 2"):
        run("xen_pvh", probe_path("elf"), MachineConfig(), options={"start_info_version": 2})
