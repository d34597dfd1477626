"""efi acceptance: the probe's EFI build reads the MachineConfig back through the firmware's services
(GetMemoryMap, LoadedImage, the configuration table, LoadFile2), and the firmware's tables are what
the UEFI specification describes."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from hvsim import MachineConfig
from hvsim.abi import efi
from hvsim.api import Run
from hvsim.core.layout import PhysicalLayout
from hvsim.kernels import probe_path
from hvsim.probe_report import parse_probe_report

from efi_apps import efi_app

MiB, GiB = 1 << 20, 1 << 30


def boot(kernel, config: MachineConfig, **options):
    prepared = Run("efi", kernel, config, options=options)
    result = prepared.execute()
    return prepared, result


def boot_probe(config: MachineConfig, **options):
    prepared, result = boot(probe_path("efi"), config, **options)
    assert result.stop.kind == "poweroff", (result.stop.describe(), result.console())
    assert result.exit_status == 0
    return prepared, result, parse_probe_report(result.console())


def calls(result, prefix: str = "") -> list[str]:
    return [e.name for e in result.events if e.kind == "Call" and e.name.startswith(prefix)]


def e820_of(descriptors) -> tuple:
    """A firmware memory map (as hvsim_finish reports it) converted to E820 as Linux's stub does:
    each EFI type to its E820 type, adjacent ranges of one type merged."""
    out: list[list[int]] = []
    for d in descriptors:
        kind = efi.E820_OF_EFI_TYPE[efi.MEMORY_TYPE_NAMES.index(d["type"])]
        start, size = d["start"], d["pages"] * 0x1000
        if out and out[-1][2] == kind and out[-1][0] + out[-1][1] == start:
            out[-1][1] += size
        else:
            out.append([start, size, kind])
    return tuple(tuple(r) for r in out)


def config_view(memmap, firmware_ranges) -> tuple:
    """The probe's E820 view with what firmware makes inevitable undone: the ranges the firmware
    keeps for itself after ExitBootServices (runtime services code and data: E820 reserved; its
    ACPI tables and FACS: E820 ACPI and NVS) go back to RAM, and below 1 MiB the BIOS PC's ranges
    replace OVMF's (all of [0, 0xA0000) RAM, nothing described from there to 1 MiB): the EBDA and
    the BIOS area reserved again."""
    ranges = []
    for start, size, kind in memmap:
        if kind in (2, 3, 4) and any(s <= start and start + size <= s + n for s, n in firmware_ranges):
            kind = 1
        ranges.append([start, size, kind])
    merged: list[list[int]] = []
    for start, size, kind in ranges:
        if merged and merged[-1][2] == kind and merged[-1][0] + merged[-1][1] == start:
            merged[-1][1] += size
        else:
            merged.append([start, size, kind])
    if merged[0] == [0, 0xA0000, 1]:
        merged[:1] = [[0, 0x9FC00, 1], [0x9FC00, 0x400, 2], [0xE0000, 0x20000, 2]]
    return tuple(tuple(r) for r in merged)


FIRMWARE_TYPES = {"RuntimeServicesCode": 2, "RuntimeServicesData": 2, "ACPIReclaim": 3, "ACPIMemoryNVS": 4,
                  "Reserved": 2}


def firmware_ranges(result) -> list[tuple[int, int]]:
    """The ranges the firmware keeps past ExitBootServices, as the map at ExitBootServices gives
    them: runtime-services code and data, the ACPI tables (reclaim) and the FACS (NVS), and the bin
    of reserved memory; adjacent ones of one E820 type merged."""
    out: list[list[int]] = []
    for d in result.extra["efi"]["memory_map_at_exit_boot_services"]:
        if (kind := FIRMWARE_TYPES.get(d["type"])) is None:
            continue
        if out and out[-1][0] + out[-1][1] == d["start"] and out[-1][2] == kind:
            out[-1][1] += d["pages"] * 0x1000
        else:
            out.append([d["start"], d["pages"] * 0x1000, kind])
    return [(start, size) for start, size, _ in out]


def expected_memmap(config):
    return tuple(r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map)


# -- the probe sees the MachineConfig ---------------------------------------------------------------

def test_probe_reports_the_whole_machine_config(tmp_path):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(random.Random(5).randbytes(2 * MiB + 3))
    cmdline = "console=efi café ünïcode ✓ probe.spin=10"
    config = MachineConfig(memory="6G", cmdline=cmdline, initrd=initrd, smp=4)

    _, result, report = boot_probe(config)

    assert report.entry == "efi"
    assert report.cmdline == cmdline
    assert report.initrd[1:] == (2 * MiB + 3, zlib.crc32(initrd.read_bytes()))
    assert report.cpus == 4 and {"FACP", "APIC"} <= set(report.acpi_tables)
    # the map is what GetMemoryMap said at ExitBootServices, and the config's once the firmware's
    # own reservations are named
    assert report.memmap == e820_of(result.extra["efi"]["memory_map_at_exit_boot_services"])
    assert config_view(report.memmap, firmware_ranges(result)) == expected_memmap(config)
    # how: LoadedImage for the command line, LoadFile2 for the initrd, the map, then out
    names = calls(result)
    assert names[:2] == ["BS.HandleProtocol", "BS.LocateDevicePath"]
    assert "LoadFile2.LoadFile" in names and names[-2:] == ["BS.ExitBootServices", "RT.ResetSystem"]
    assert result.console("efi-conout").startswith("hvsim-probe: begin v1\r\n")
    assert [e.source for e in result.events if e.kind == "Shutdown"] == ["EFI ResetSystem(EfiResetShutdown)"]


@pytest.mark.parametrize("memory", [64 * MiB, 512 * MiB, 3 * GiB + 512 * MiB, 6 * GiB])
def test_memory_map_is_the_configs_less_the_firmwares_reservations(memory):
    config = MachineConfig(memory=memory)
    _, result, report = boot_probe(config)
    assert config_view(report.memmap, firmware_ranges(result)) == expected_memmap(config)
    reserved = firmware_ranges(result)
    assert reserved and all(start + size <= min(memory, 3 * GiB) for start, size in reserved)


@pytest.mark.parametrize("cmdline", ["", "root=/dev/vda1  ro quiet", "  edge  ", "path=C:\\boot\\x \\x41 end\\",
                                     "tab\there", "emoji 🐧 astral", "é" * 300 + "🐧" * 100])
def test_command_line_reaches_the_guest_through_load_options(cmdline):
    _, _, report = boot_probe(MachineConfig(cmdline=cmdline))
    assert report.cmdline == cmdline


def test_no_initrd_means_locate_device_path_not_found():
    _, result, report = boot_probe(MachineConfig(smp=2))
    assert report.initrd is None and report.cpus == 2
    (locate,) = [e for e in result.events if e.kind == "Call" and e.name == "BS.LocateDevicePath"]
    assert locate.result == "EFI_NOT_FOUND"


def test_probe_fault_during_boot_services_reaches_the_firmwares_handler():
    # The probe keeps the firmware's IDT while boot services run (UEFI 2.10 §2.3.4.1), so its #PF
    # is the firmware's to report, as OVMF's exception handler dumps it.
    _, result = boot(probe_path("efi"), MachineConfig(cmdline="probe.fault=pf"))
    assert result.stop.kind == "crash"
    assert "#PF" in result.stop.detail and "cr2 0x7fff00000000" in result.stop.detail
    assert "the firmware's exception handler" in result.stop.detail


# -- the firmware's tables -----------------------------------------------------------------------------

def test_system_boot_and_runtime_tables_have_their_signatures_and_crc32():
    from hvsim_efi.tables import header_crc_ok

    prepared, result = boot(efi_app("xor %eax, %eax\njmp done"), MachineConfig())
    fw, memory = prepared.machine.plugin_state["efi"], prepared.machine.memory
    st = memory.read(fw.system_table, efi.SYSTEM_TABLE_SIZE)
    signature, revision, size, _, _ = struct.unpack_from(efi.TABLE_HEADER_FORMAT, st)
    assert (signature, revision, size) == (efi.SYSTEM_TABLE_SIGNATURE, efi.SPECIFICATION_REVISION, 0x78)
    assert header_crc_ok(st)
    boot_table = memory.read(struct.unpack_from("<Q", st, efi.ST_BOOT_SERVICES)[0], efi.BOOT_SERVICES_SIZE)
    runtime_table = memory.read(struct.unpack_from("<Q", st, efi.ST_RUNTIME_SERVICES)[0], efi.RUNTIME_SERVICES_SIZE)
    assert struct.unpack_from("<QII", boot_table) == (efi.BOOT_SERVICES_SIGNATURE, efi.SPECIFICATION_REVISION, 0x178)
    assert struct.unpack_from("<QII", runtime_table) == (efi.RUNTIME_SERVICES_SIGNATURE, efi.SPECIFICATION_REVISION, 0x88)
    assert header_crc_ok(boot_table) and header_crc_ok(runtime_table)
    # a damaged table fails the check the guest would make
    assert not header_crc_ok(st[:0x20] + b"x" + st[0x21:])
    vendor = memory.read(struct.unpack_from("<Q", st, efi.ST_FIRMWARE_VENDOR)[0], 12)
    assert vendor == "hvsim".encode("utf-16-le") + b"\0\0"


def test_configuration_tables_hold_the_acpi_rsdp_and_smbios3():
    prepared, _ = boot(efi_app("xor %eax, %eax\njmp done"), MachineConfig())
    m = prepared.machine
    fw = m.plugin_state["efi"]
    st = m.memory.read(fw.system_table, efi.SYSTEM_TABLE_SIZE)
    count, array = struct.unpack_from("<QQ", st, efi.ST_NUMBER_OF_TABLE_ENTRIES)
    entries = {m.memory.read(array + 24 * i, 16): m.memory.read_u64(array + 24 * i + 16) for i in range(count)}
    assert entries[efi.ACPI_20_TABLE_GUID] == m.acpi_tables.rsdp_address
    assert m.memory.read(entries[efi.ACPI_20_TABLE_GUID], 8) == b"RSD PTR "
    smbios = m.memory.read(entries[efi.SMBIOS3_TABLE_GUID], 24)
    assert smbios[:5] == b"_SM3_" and sum(smbios) % 256 == 0 and smbios[7] == 3
    structures_at, = struct.unpack_from("<Q", smbios, 16)
    assert m.memory.read(structures_at, 1) == b"\x00"          # type 0: BIOS information first


def test_entry_state_is_what_uefi_promises():
    app = efi_app("mov %rsp, %rax\nadd $0x88, %rax\nand $0xf, %rax\njmp done")
    _, result = boot(app, MachineConfig())
    # the prelude pushed 5 registers and reserved 0x60 bytes: entry RSP = that + 0x88; 8 mod 16
    assert result.stop.code == 8
    prepared = Run("efi", app, MachineConfig())
    state = prepared.machine.entry_state
    assert (state.cr0, state.cr4, state.efer, state.cs, state.ds) == (0x80010033, 0x620, 0xD00, 0x38, 0x30)


@pytest.mark.parametrize("status,kind,exit_status", [(0, "poweroff", 0), (efi.NOT_FOUND, "exit", 1)])
def test_the_applications_status_ends_the_run(status, kind, exit_status):
    _, result = boot(efi_app(f"mov ${status:#x}, %rax\njmp done"), MachineConfig())
    assert (result.stop.kind, result.exit_status, result.stop.code) == (kind, exit_status, status)
    assert efi.status_name(status) in result.stop.detail


def test_cli_runs_the_probe_under_efi_with_its_options(tmp_path, capsys):
    from hvsim.cli import main

    keys = tmp_path / "keys.txt"
    keys.write_text("y\n")
    png, store = tmp_path / "screen.png", tmp_path / "vars.json"
    status = main(["run", "--env", "efi", str(probe_path("efi")), "--cmdline", "from the cli ✓",
                   "--keys", "{esc}", "--keys-file", str(keys), "--framebuffer-png", str(png),
                   "--efi-vars", str(store), "--json", str(tmp_path / "run.json")])
    out = capsys.readouterr().out
    assert status == 0
    assert "cmdline: from the cli ✓" in out
    assert png.read_bytes().startswith(b"\x89PNG")          # GOP offered and saved, though unused
    import json
    extra = json.loads((tmp_path / "run.json").read_text())["extra"]["efi"]
    assert extra["boot_services_exited"] and extra["framebuffer_png"] == str(png)


def test_cli_rejects_an_unknown_key_name(capsys):
    from hvsim.cli import main

    status = main(["run", "--env", "efi", str(probe_path("efi")), "--keys", "{nosuchkey}"])
    err = capsys.readouterr().err
    assert status != 0 and "unknown key {nosuchkey}" in err and "Traceback" not in err
