"""Debian's unmodified Linux 6.1 under efi: the bzImage entered at its PE entry point runs its EFI
stub (decompressing itself in the guest, ~30 s), exits boot services and reaches its banner on COM1;
through the EFI handover entry it goes on to hvsim's /init and powers off.  The command line it prints is the configured one, and the
memory map it prints is what GetMemoryMap reported at ExitBootServices, converted to E820."""

from __future__ import annotations

import pytest

from hvsim import MachineConfig
from hvsim.api import Run
from hvsim.kernels import init_cpio_path
from hvsim.userspace_report import parse_userspace_report

from linux_kernel import StopAfterMemoryMap, debian_vmlinuz, e820_from_console
from test_efi import e820_of

pytestmark = pytest.mark.linux

CMDLINE = "earlyprintk=serial,ttyS0 console=ttyS0 nokaslr hvsim.test=efi"


def boot(entry: str, initrd=None, *, to_userspace: bool = False):
    config = MachineConfig(memory="512M", cmdline=CMDLINE, timeout=300, initrd=initrd)
    observers = [] if to_userspace else [StopAfterMemoryMap()]
    result = Run("efi", debian_vmlinuz(), config, options={"entry": entry}, observers=observers).execute()
    return config, result


def assert_saw_its_world(config, result):
    console = result.console("serial0")
    assert "Linux version 6.1" in console, (result.stop, console[-2000:])
    assert f"Command line: {config.cmdline}\n" in console.replace("\r\n", "\n")
    efi = result.extra["efi"]
    assert efi["boot_services_exited"]
    assert e820_from_console(console) == list(e820_of(efi["memory_map_at_exit_boot_services"]))


def names(result) -> list[str]:
    return [e.name for e in result.events if e.kind == "Call"]


def test_bzimage_pe_entry_runs_the_efi_stub_to_the_banner(tmp_path):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 4096)
    config, result = boot("pe", initrd)
    assert_saw_its_world(config, result)
    assert result.stop.detail == "test observer: memory map printed", result.stop
    # the stub took the initrd from LoadFile2 on its initrd media device path, and said so on ConOut
    assert "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path" in result.console("efi-conout")
    calls = names(result)
    # the stub found its LoadedImage, took the 64 MiB slot at 16 MiB, and exited boot services
    assert calls[0] == "BS.HandleProtocol" and calls[-1] == "BS.ExitBootServices"
    assert calls.count("LoadFile2.LoadFile") == 2          # the size probe, then the load
    slot = [e for e in result.events if e.kind == "Call" and e.name == "BS.AllocatePages" and e.args["Type"] == 2]
    assert slot and slot[0].args["address"] == 16 << 20 and slot[0].result == "EFI_SUCCESS"
    # the map handed to the kernel went into ACPI reclaim pool memory, which Linux prints as ACPI data
    assert any(kind == 3 for _, _, kind in e820_from_console(result.console("serial0")))


def test_bzimage_handover_entry_boots_to_our_init_and_powers_off():
    config, result = boot("handover", init_cpio_path(), to_userspace=True)
    assert_saw_its_world(config, result)
    calls = names(result)
    assert calls[0] != "BS.HandleProtocol"           # the handover entry never asks for LoadedImage first
    after_exit = calls[calls.index("BS.ExitBootServices") + 1:]
    assert all(name.startswith("RT.") for name in after_exit), after_exit   # only runtime services after it
    assert result.entry.startswith("handover:")
    # userspace: /init's report, then ACPI S5 (the chipset serves the kernel after the firmware)
    assert result.stop.kind == "poweroff", (result.stop, result.console()[-2000:])
    report = parse_userspace_report(result.console("serial0"))
    assert report is not None and report["pid"] == 1 and report["cmdline"] == config.cmdline
    assert report["efi"] is not False and report["clockevent"] == "lapic"
