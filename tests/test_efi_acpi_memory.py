"""efi: a memory map and ACPI shaped like OVMF's, as a guest sees them.  The probe's EFI build finds
the RSDP through the configuration table and the map through GetMemoryMap; walking the tables from
that RSDP in the machine's memory (as the guest would), every table lies in a range the map calls
ACPI reclaim (E820 3) and the FACS in one it calls ACPI NVS (E820 4); the BIOS area that a legacy
OSPM scans holds no RSDP unless --legacy-bios-area asks for one."""

from __future__ import annotations

import struct

from hvsim import MachineConfig
from hvsim.abi import efi
from hvsim.core.acpi import BIOS_AREA_END, BIOS_AREA_START
from hvsim.core.acpi_read import find_rsdp, read_acpi

from test_efi import boot, boot_probe

from efi_apps import efi_app

E820_ACPI, E820_NVS = 3, 4


def e820_type_of(memmap, start: int, size: int) -> int | None:
    """The E820 type of the one range holding all of [start, start + size), or None."""
    return next((kind for s, n, kind in memmap if s <= start and start + size <= s + n), None)


def config_tables(machine, fw) -> dict[bytes, int]:
    st = machine.memory.read(fw.system_table, efi.SYSTEM_TABLE_SIZE)
    count, array = struct.unpack_from("<QQ", st, efi.ST_NUMBER_OF_TABLE_ENTRIES)
    return {machine.memory.read(array + 24 * i, 16): machine.memory.read_u64(array + 24 * i + 16)
            for i in range(count)}


def test_the_probe_finds_the_rsdp_in_acpi_memory_and_the_facs_in_nvs():
    prepared, _, report = boot_probe(MachineConfig(memory="512M", smp=2))
    read = prepared.machine.memory.read
    assert report.rsdp is not None and not BIOS_AREA_START <= report.rsdp < BIOS_AREA_END
    info = read_acpi(read, report.rsdp)
    assert not info.errors and info.cpus == 2 and report.acpi_tables == ("FACP", "APIC")
    places = {t.signature: e820_type_of(report.memmap, t.address, t.length) for t in info.tables}
    assert set(places) == {"RSDP", "XSDT", "RSDT", "FACP", "APIC", "FACS", "DSDT"}
    assert places.pop("FACS") == E820_NVS
    assert set(places.values()) == {E820_ACPI}
    # below 4 GiB (RSDT and FADT hold 32-bit pointers), and no RSDP where a BIOS keeps one
    assert all(t.address + t.length <= 1 << 32 for t in info.tables)
    assert find_rsdp(read) is None


def test_the_map_names_the_acpi_ranges_and_the_firmware_allocated_them():
    prepared, result, report = boot_probe(MachineConfig(memory="256M"))
    m, fw = prepared.machine, prepared.machine.plugin_state["efi"]
    exit_map = result.extra["efi"]["memory_map_at_exit_boot_services"]
    types = [d["type"] for d in exit_map]
    assert types.count("ACPIReclaim") >= 1 and types.count("ACPIMemoryNVS") == 1
    nvs = next(d for d in exit_map if d["type"] == "ACPIMemoryNVS")
    facs = m.acpi_tables.addresses["FACS"]
    assert nvs["start"] <= facs < nvs["start"] + nvs["pages"] * 0x1000
    assert nvs["attribute"] & efi.MEMORY_WB and not nvs["attribute"] & efi.MEMORY_RUNTIME
    # the firmware's own allocation (top-down, like its other memory), not a pool block of the probe's
    assert fw.map.type_at(m.acpi_tables.rsdp_address) == efi.ACPI_RECLAIM_MEMORY
    assert m.acpi_tables.base % efi.PAGE_SIZE == 0 and m.acpi_tables.base > 128 << 20
    # the probe's E820 shows the same ranges with their E820 types, in GetMemoryMap's order
    assert (nvs["start"], nvs["pages"] * 0x1000, E820_NVS) in report.memmap


def test_the_configuration_table_is_the_only_way_to_the_rsdp():
    prepared, _ = boot(efi_app("xor %eax, %eax\njmp done"), MachineConfig())
    m = prepared.machine
    entries = config_tables(m, m.plugin_state["efi"])
    rsdp = entries[efi.ACPI_20_TABLE_GUID]
    assert entries[efi.ACPI_10_TABLE_GUID] == rsdp == m.acpi_tables.rsdp_address
    assert m.memory.read(rsdp, 8) == b"RSD PTR "
    assert find_rsdp(m.memory.read) is None
    assert m.memory.read(BIOS_AREA_START, BIOS_AREA_END - BIOS_AREA_START) == bytes(BIOS_AREA_END - BIOS_AREA_START)


def test_legacy_bios_area_adds_a_copy_a_bios_scan_finds():
    prepared, _, report = boot_probe(MachineConfig(), legacy_bios_area=True)
    read = prepared.machine.memory.read
    copy = find_rsdp(read)
    assert copy == BIOS_AREA_START and report.rsdp != copy       # the probe still uses the configuration table
    assert read(copy, 36) == read(report.rsdp, 36)
    legacy, firmware = read_acpi(read, copy), read_acpi(read, report.rsdp)
    assert not legacy.errors and legacy.tables[1:] == firmware.tables[1:]


def test_the_map_has_ovmfs_memory_type_bins_in_ovmfs_order_and_sizes():
    """As OVMF 2022.11 hands them over (QEMU 7.2 pc, 512 MiB; tests/test_firmware_diff.py compares
    the rest): runtime data 1 MiB, runtime code 1 MiB, reserved 512 KiB, ACPI reclaim 72 KiB and ACPI
    NVS 512 KiB, one above the other, whole in the map however much of each is used."""
    prepared, result, report = boot_probe(MachineConfig(memory="512M"))
    fw = prepared.machine.plugin_state["efi"]
    exit_map = result.extra["efi"]["memory_map_at_exit_boot_services"]
    kept = [(d["type"], d["pages"]) for d in exit_map
            if d["type"] in ("RuntimeServicesData", "RuntimeServicesCode", "Reserved", "ACPIReclaim", "ACPIMemoryNVS")
            and d["start"] >= 1 << 20]
    assert kept == [("RuntimeServicesData", 0x100), ("RuntimeServicesCode", 0x100), ("Reserved", 0x80),
                    ("ACPIReclaim", 0x12), ("ACPIMemoryNVS", 0x80)]
    starts = [d["start"] for d in exit_map if d["type"] in ("RuntimeServicesData", "ACPIMemoryNVS")]
    assert starts[-1] + 0x80 * 0x1000 == 512 << 20           # the bins end at the top of RAM, NVS highest
    for d in exit_map:
        if d["type"] in ("RuntimeServicesData", "RuntimeServicesCode"):
            assert d["attribute"] & efi.MEMORY_RUNTIME
    # the firmware's own runtime data and the ACPI tables are inside their bins, which are mostly free
    bins = fw.map.bins
    assert bins[efi.RUNTIME_SERVICES_DATA][0] <= fw.system_table < bins[efi.RUNTIME_SERVICES_DATA][1]
    assert bins[efi.ACPI_RECLAIM_MEMORY][0] <= prepared.machine.acpi_tables.rsdp_address < bins[efi.ACPI_RECLAIM_MEMORY][1]
    assert fw.map.type_at(bins[efi.RESERVED_MEMORY][0]) == efi.CONVENTIONAL_MEMORY
    # the E820 view: one reserved range for the runtime and reserved bins, then ACPI, then NVS
    assert report.memmap[-3:] == ((bins[efi.RUNTIME_SERVICES_DATA][0], 0x280000, 2),
                                  (bins[efi.ACPI_RECLAIM_MEMORY][0], 0x12000, E820_ACPI),
                                  (bins[efi.ACPI_MEMORY_NVS][0], 0x80000, E820_NVS))


def test_allocations_of_a_binned_type_come_from_its_bin_and_others_from_below_the_bins():
    prepared, _ = boot(efi_app("xor %eax, %eax\njmp done"), MachineConfig(memory="256M"))
    memory_map = prepared.machine.plugin_state["efi"].map
    nvs_start, nvs_end = memory_map.bins[efi.ACPI_MEMORY_NVS]
    nvs = memory_map.allocate(efi.ALLOCATE_ANY_PAGES, efi.ACPI_MEMORY_NVS, 4)
    assert nvs_start <= nvs and nvs + 4 * 0x1000 <= nvs_end
    loader = memory_map.allocate(efi.ALLOCATE_ANY_PAGES, efi.LOADER_DATA, 4)
    assert loader + 4 * 0x1000 <= memory_map.bins_floor()
    # a bin that is full sends its type below the bins, as edk2 does
    big = memory_map.allocate(efi.ALLOCATE_ANY_PAGES, efi.ACPI_MEMORY_NVS, 0x100)
    assert big + 0x100 * 0x1000 <= memory_map.bins_floor()
