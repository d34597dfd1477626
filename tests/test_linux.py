"""Debian's unmodified Linux 6.1 reaches its banner under bare_metal, as a bzImage and as the ELF
vmlinux hvsim extracts from it, and reports the command line and memory map it was given."""

from __future__ import annotations

import pytest

from hvsim import MachineConfig
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
