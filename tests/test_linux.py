"""Debian's unmodified Linux 6.1 reaches its banner under bare_metal and xen_pvh, as a bzImage and as
the ELF vmlinux hvsim extracts from it, and reports the command line and memory map it was given."""

from __future__ import annotations

import pytest

from hvsim import MachineConfig, hookimpl
from hvsim.core.result import StopReason
from hvsim.api import Run
from hvsim.core.layout import PhysicalLayout
from hvsim.image import load_image

from linux_kernel import StopAfterMemoryMap, debian_vmlinuz, e820_from_console

pytestmark = pytest.mark.linux

CMDLINE = "earlyprintk=serial,ttyS0 console=ttyS0 nokaslr hvsim.test=bare-metal"


@pytest.fixture(scope="module")
def vmlinuz():
    return load_image(debian_vmlinuz())


def boot(kernel, config: MachineConfig):
    prepared = Run("bare_metal", kernel, config, observers=[StopAfterMemoryMap()])
    return prepared.execute()


def assert_saw_its_world(result, config: MachineConfig):
    console = result.console("serial0")
    assert "Linux version 6.1" in console, (result.stop, console[-2000:])
    assert f"Command line: {config.cmdline}\n" in console.replace("\r\n", "\n")
    expected = [r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map]
    assert e820_from_console(console) == expected
    assert result.stop.detail == "test observer: memory map printed", result.stop


@pytest.mark.parametrize("memory", ["512M", "6G"])
def test_vmlinux_extracted_by_hvsim_reaches_banner(vmlinuz, memory):
    config = MachineConfig(memory=memory, cmdline=CMDLINE, timeout=120)
    vmlinux = vmlinuz.payload_elf()
    assert vmlinux.xen_notes is not None and vmlinux.xen_notes.phys32_entry
    result = boot(vmlinux.data, config)
    assert_saw_its_world(result, config)
    # Linux's early page-fault handler built its own mappings: the faults went through its IDT.
    faults = [e for e in result.events if e.kind == "Fault"]
    assert faults and all(f.delivered and f.vector == 14 for f in faults)


def test_bzimage_reaches_banner_through_its_own_decompressor(vmlinuz):
    config = MachineConfig(memory="512M", cmdline=CMDLINE, timeout=240)
    result = boot(vmlinuz, config)
    assert_saw_its_world(result, config)
    # The decompressor maps its output on demand, one #PF per 2 MiB, through its own IDT.
    decompressor_faults = [e for e in result.events if e.kind == "Fault" and e.rip < (1 << 32)]
    assert len(decompressor_faults) > 10


# -- xen_pvh ------------------------------------------------------------------------------------------

PVH_CMDLINE = "earlyprintk=xen console=hvc0 nokaslr hvsim.test=pvh"
ISA_RANGE = (0xA0000, 0x100000)        # Linux's PVH entry adds it as reserved (platform/pvh/enlighten.c)


def linux_pvh_view(config: MachineConfig) -> list[tuple[int, int, int]]:
    """The configured map as Linux under PVH prints it: Linux adds the ISA range [0xa0000, 0x100000)
    as reserved (an inevitable difference: the PVH ABI has no BIOS to say so), then its sanitiser
    merges adjacent ranges of one type."""
    ranges = sorted([r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map]
                    + [(ISA_RANGE[0], ISA_RANGE[1] - ISA_RANGE[0], 2)])
    merged: list[list[int]] = []
    for start, size, kind in ranges:
        if merged and merged[-1][2] == kind and merged[-1][0] + merged[-1][1] >= start:
            merged[-1][1] = max(merged[-1][0] + merged[-1][1], start + size) - merged[-1][0]
        else:
            merged.append([start, size, kind])
    return [tuple(r) for r in merged]


def pvh_boot(kernel, config: MachineConfig, **options):
    prepared = Run("xen_pvh", kernel, config, options=options, observers=[StopAfterMemoryMap()])
    result = prepared.execute()
    console = result.console("xen")
    assert "Linux version 6.1" in console, (result.stop, console[-2000:])
    assert f"Command line: {config.cmdline}\n" in console
    assert e820_from_console(console) == linux_pvh_view(config)
    assert result.stop.detail == "test observer: memory map printed", result.stop
    return result


def hypercalls(result) -> list[str]:
    return [e.name for e in result.events if e.kind == "Call" and e.interface == "xen-hypercall"]


@pytest.mark.parametrize("memory,version", [("512M", 1), ("6G", 1), ("512M", 0)])
def test_vmlinux_reaches_banner_under_xen_pvh(vmlinuz, memory, version):
    config = MachineConfig(memory=memory, cmdline=PVH_CMDLINE, timeout=120)
    result = pvh_boot(vmlinuz.payload_elf().data, config, start_info_version=version)
    calls = hypercalls(result)
    # version 1 carries the map in the start info; with version 0 the guest asks Xen first thing
    assert ("memory_op.memory_map" in calls) == (version == 0)
    first_output = calls.index("console_io.write")   # the replayed log, banner included
    assert calls[:first_output] == (["memory_op.memory_map"] if version == 0 else [])


def test_bzimage_payload_reaches_banner_under_xen_pvh_with_start_info_v0(vmlinuz):
    config = MachineConfig(memory="512M", cmdline=PVH_CMDLINE, timeout=120)
    result = pvh_boot(vmlinuz, config, start_info_version=0)
    assert "memory_op.memory_map" in hypercalls(result)   # no map in the start info: it asked Xen


# -- xen_pv -------------------------------------------------------------------------------------------

PV_CMDLINE = "earlyprintk=xen console=hvc0 nokaslr hvsim.test=pv"
PAGE = 0x1000


def linux_pv_view(config: MachineConfig, dom0: bool) -> list[tuple[int, int, int]]:
    """The map a PV Linux prints: what Xen handed it (dom0: the configured machine map with the I/O
    memory Xen keeps from dom0 reserved in its holes; a domU: one RAM range of the configured size, as
    libxl gives it -- the pseudo-physical map), with RAM ranges shrunk to whole pages
    (xen_align_and_add_e820_region) and the ISA range added as reserved."""
    if dom0:
        from hvsim_xen_pv import machine_memory_map

        ranges = machine_memory_map(PhysicalLayout.for_config(config).memory_map)
    else:
        ranges = [(0, config.memory, 1)]
    aligned = []
    for start, size, kind in ranges:
        if kind == 1:
            first, end = (start + PAGE - 1) // PAGE * PAGE, (start + size) // PAGE * PAGE
            start, size = first, end - first
        aligned.append((start, size, kind))
    ram_cut = []
    for start, size, kind in aligned:          # the ISA range wins over RAM (e820__range_add + sanitise)
        if kind == 1 and start < ISA_RANGE[1] and ISA_RANGE[0] < start + size:
            if start < ISA_RANGE[0]:
                ram_cut.append((start, ISA_RANGE[0] - start, 1))
            if start + size > ISA_RANGE[1]:
                ram_cut.append((ISA_RANGE[1], start + size - ISA_RANGE[1], 1))
        else:
            ram_cut.append((start, size, kind))
    merged: list[list[int]] = []
    for start, size, kind in sorted(ram_cut + [(ISA_RANGE[0], ISA_RANGE[1] - ISA_RANGE[0], 2)]):
        if merged and merged[-1][2] == kind and merged[-1][0] + merged[-1][1] >= start:
            merged[-1][1] = max(merged[-1][0] + merged[-1][1], start + size) - merged[-1][0]
        else:
            merged.append([start, size, kind])
    return [tuple(r) for r in merged]


def pv_boot(kernel, config: MachineConfig, dom0: bool):
    prepared = Run("xen_pv", kernel, config, options={"dom0": dom0}, observers=[StopAfterMemoryMap()])
    result = prepared.execute()
    console = result.console("xen" if dom0 else "hvc0").replace("\r\n", "\n")   # the ring driver sends CRLF
    assert "Linux version 6.1" in console, (result.stop, console[-2000:])
    assert f"Command line: {config.cmdline}\n" in console
    assert e820_from_console(console) == linux_pv_view(config, dom0)
    assert result.stop.detail == "test observer: memory map printed", result.stop
    return result, console


@pytest.mark.parametrize("memory", ["512M", "6G"])
def test_vmlinux_reaches_banner_as_xen_pv_domu(vmlinuz, memory):
    config = MachineConfig(memory=memory, cmdline=PV_CMDLINE, timeout=120)
    result, console = pv_boot(vmlinuz.payload_elf().data, config, dom0=False)
    calls = hypercalls(result)
    # A domU is not the console domain: console_io is refused and the kernel writes the ring instead.
    refused = [e for e in result.events if e.kind == "Call" and e.name == "console_io.write"]
    assert refused and all(e.result == -1 for e in refused)
    assert "(early) " in console and "event_channel_op.send" in calls
    assert "memory_op.memory_map" in calls and "memory_op.machine_memory_map" not in calls
    assert "ACPI in unprivileged domain disabled" in console


@pytest.mark.parametrize("memory", ["512M", "6G"])
def test_vmlinux_reaches_banner_as_xen_pv_dom0(vmlinuz, memory):
    config = MachineConfig(memory=memory, cmdline=PV_CMDLINE, timeout=120)
    result, console = pv_boot(vmlinuz.payload_elf().data, config, dom0=True)
    calls = hypercalls(result)
    assert "memory_op.machine_memory_map" in calls
    # The PV MMU did the work: the kernel's own page tables were pinned and switched to.
    assert {"mmuext_op.pin_l4_table", "mmuext_op.new_baseptr", "update_va_mapping", "set_trap_table"} <= {
        c.split(",")[0] for c in calls}
    assert result.extra["xen_pv"]["dom0"] is True


class StopAt:
    """Observer: stop the run once the console printed ``text``."""

    def __init__(self, text: str):
        self.text = text

    @hookimpl
    def hvsim_event(self, machine, event):
        if event.kind == "ConsoleOutput" and self.text in event.text:
            machine.stop(StopReason("poweroff", detail=f"test observer: {self.text!r} printed"))


def test_an_initrd_reaches_a_pv_linux_unmapped_by_its_pfn(vmlinuz, tmp_path):
    # Linux has the MOD_START_PFN note, so the builder leaves the initrd out of the bootstrap
    # mappings and start_info names its pfn (SIF_MOD_START_PFN), as libxc does.
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 12289)
    config = MachineConfig(memory="512M", cmdline=PV_CMDLINE, initrd=initrd, timeout=120)
    prepared = Run("xen_pv", vmlinuz.payload_elf().data, config, observers=[StopAt("RAMDISK:")])
    result = prepared.execute()
    layout = prepared.machine.plugin_state["xen_pv"].layout
    pfn, size = layout.initrd
    assert size == initrd.stat().st_size and pfn * PAGE == layout.v_end - layout.virt_base
    console = result.console("hvc0").replace("\r\n", "\n")
    end = (pfn * PAGE + size + PAGE - 1) // PAGE * PAGE - 1
    assert f"RAMDISK: [mem {pfn * PAGE:#010x}-{end:#010x}]" in console
