"""ACPI tables: build them for a machine, put them in guest memory, and read them back as a guest would."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvsim.core import acpi, acpi_aml, acpi_read
from hvsim.core.acpi import AcpiPlatform, build_acpi_tables
from hvsim.core.acpi_read import find_rsdp, read_acpi
from hvsim.core.errors import GuestMemoryError, UsageError

BIOS_AREA = acpi.BIOS_AREA_START
BIOS_AREA_SIZE = acpi.BIOS_AREA_END - acpi.BIOS_AREA_START


class GuestMemory:
    """A bytearray standing in for guest RAM at [base, base + size); reads elsewhere raise."""

    def __init__(self, base: int, size: int):
        self.base = base
        self.ram = bytearray(size)
        self.reads = 0

    def write(self, address: int, data: bytes) -> None:
        self.ram[address - self.base : address - self.base + len(data)] = data

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        if size < 0 or address < self.base or address + size > self.base + len(self.ram):
            raise GuestMemoryError(address, size)
        return bytes(self.ram[address - self.base : address - self.base + size])


def boot_memory(tables: acpi.AcpiTables) -> GuestMemory:
    memory = GuestMemory(BIOS_AREA, BIOS_AREA_SIZE)
    memory.write(tables.base, tables.blob)
    return memory


def table_bytes(tables: acpi.AcpiTables, signature: str) -> bytes:
    offset = tables.addresses[signature] - tables.base
    if signature == "RSDP":
        return tables.blob[offset : offset + acpi.RSDP_LENGTH]
    (length,) = struct.unpack_from("<I", tables.blob, offset + 4)
    return tables.blob[offset : offset + length]


def madt_structures(tables: acpi.AcpiTables) -> list[bytes]:
    madt, structures, offset = table_bytes(tables, "APIC"), [], acpi.HEADER_LENGTH + 8
    while offset < len(madt):
        structures.append(madt[offset : offset + madt[offset + 1]])
        offset += madt[offset + 1]
    return structures


def refresh_checksum(blob: bytearray, table_offset: int) -> None:
    (length,) = struct.unpack_from("<I", blob, table_offset + 4)
    blob[table_offset + 9] = 0
    blob[table_offset + 9] = -sum(blob[table_offset : table_offset + length]) & 0xFF


# --- a clean build reads back as built -------------------------------------------------------------


@pytest.mark.parametrize("cpus", [1, 2, 4, 64, 255])
def test_guest_sees_every_vcpu_and_clean_tables(cpus):
    tables = build_acpi_tables(AcpiPlatform(cpus=cpus), base=BIOS_AREA)
    info = read_acpi(boot_memory(tables).read, tables.rsdp_address)

    assert info.errors == ()
    assert info.cpus == cpus
    assert info.lapic_ids == tuple(range(cpus))
    assert info.oem_id == "HVSIM "
    assert info.revision == 2
    assert {t.signature for t in info.tables} == {"RSDP", "XSDT", "RSDT", "FACP", "APIC", "FACS", "DSDT"}
    assert {(t.signature, t.address) for t in info.tables} == set(tables.addresses.items())


@pytest.mark.parametrize("signature", ["XSDT", "RSDT", "FACP", "DSDT", "APIC"])
def test_every_table_sums_to_zero_and_carries_the_standard_header(signature):
    tables = build_acpi_tables(AcpiPlatform(cpus=4), base=BIOS_AREA)
    data = table_bytes(tables, signature)
    header = acpi.SdtHeader.unpack(data)

    assert sum(data) & 0xFF == 0
    assert (header.signature.decode(), header.length) == (signature, len(data))
    assert (header.oem_id, header.oem_table_id, header.creator_id) == (b"HVSIM ", b"HVSIMPC ", b"HVSM")
    assert header.revision == {"XSDT": 1, "RSDT": 1, "FACP": 6, "DSDT": 2, "APIC": 5}[signature]


def test_rsdp_checksums_and_layout():
    tables = build_acpi_tables(AcpiPlatform(cpus=2), base=0xF0000)
    rsdp = table_bytes(tables, "RSDP")
    fields = acpi.Rsdp.unpack(rsdp)

    assert tables.rsdp_address == tables.base == 0xF0000
    assert sum(rsdp[:20]) & 0xFF == 0 and sum(rsdp) & 0xFF == 0
    assert (fields.signature, fields.oem_id) == (b"RSD PTR ", b"HVSIM ")
    assert (fields.revision, fields.length) == (2, 36)
    assert (fields.rsdt_address, fields.xsdt_address) == (tables.addresses["RSDT"], tables.addresses["XSDT"])


def test_tables_are_aligned_and_facs_is_64_byte_aligned():
    tables = build_acpi_tables(AcpiPlatform(cpus=3), base=0xE0010)

    assert all(address % 16 == 0 for address in tables.addresses.values())
    assert tables.addresses["FACS"] % 64 == 0
    facs = table_bytes(tables, "FACS")
    assert facs[:4] == b"FACS" and len(facs) == 64
    assert tables.end == tables.base + len(tables.blob)


@pytest.mark.parametrize("cpus", [1, 4, 300])
def test_a_facs_placed_apart_is_what_the_fadt_names_and_the_blob_leaves_it_out(cpus):
    """A UEFI firmware's layout: tables from one page, the FACS in another (ACPI NVS) page."""
    platform = AcpiPlatform(cpus=cpus)
    tables_size, facs_size = acpi.acpi_sizes(platform)
    base, facs_base = 0x7F00_0000, 0x7F10_0040
    tables = build_acpi_tables(platform, base, facs_base=facs_base)
    assert len(tables.blob) == tables_size and len(tables.facs) == facs_size == 64
    assert tables.addresses["FACS"] == facs_base
    assert [address for address, _ in tables.writes()] == [base, facs_base]
    assert all(base <= a < tables.end for name, a in tables.addresses.items() if name != "FACS")
    together = build_acpi_tables(platform, base)
    assert len(tables.blob) < len(together.blob) and together.facs == b"" and len(together.writes()) == 1
    memory = GuestMemory(base, facs_base + 0x1000 - base)
    for address, data in tables.writes():
        memory.write(address, data)
    info = read_acpi(memory.read, tables.rsdp_address)
    assert not info.errors and info.cpus == cpus
    assert {t.signature: t.address for t in info.tables}["FACS"] == facs_base
    fadt = table_bytes(tables, "FACP")
    assert struct.unpack_from("<I", fadt, acpi.FADT_FIRMWARE_CTRL)[0] == facs_base
    assert struct.unpack_from("<Q", fadt, acpi.FADT_X_FIRMWARE_CTRL)[0] == facs_base


@pytest.mark.parametrize("facs_base", [0x1000_0010, -64, 1 << 32])
def test_a_facs_address_that_is_not_64_byte_aligned_below_4_gib_is_refused(facs_base):
    with pytest.raises(UsageError, match="FACS address"):
        build_acpi_tables(AcpiPlatform(cpus=1), 0x1000_0000, facs_base=facs_base)


def test_fadt_advertises_the_pm_blocks_reset_register_and_acpi_mode():
    platform = AcpiPlatform(
        cpus=1, pm1a_evt_port=0xB000, pm1a_cnt_port=0xB004, pm_tmr_port=0xB008, sci_irq=10
    )
    tables = build_acpi_tables(platform, base=BIOS_AREA)
    fadt = table_bytes(tables, "FACP")

    def field(fmt, offset):
        return struct.unpack_from(fmt, fadt, offset)[0]

    assert len(fadt) == 276 and field("<B", acpi.FADT_MINOR) == 0
    facs = tables.addresses["FACS"]
    assert field("<I", acpi.FADT_FIRMWARE_CTRL) == field("<Q", acpi.FADT_X_FIRMWARE_CTRL) == facs
    assert field("<I", acpi.FADT_DSDT) == field("<Q", acpi.FADT_X_DSDT) == tables.addresses["DSDT"]
    assert field("<H", acpi.FADT_SCI_INT) == 10 and field("<I", acpi.FADT_SMI_CMD) == 0
    for offset32, len_offset, x_offset, port, length in [
        (acpi.FADT_PM1A_EVT_BLK, acpi.FADT_PM1_EVT_LEN, acpi.FADT_X_PM1A_EVT_BLK, 0xB000, 4),
        (acpi.FADT_PM1A_CNT_BLK, acpi.FADT_PM1_CNT_LEN, acpi.FADT_X_PM1A_CNT_BLK, 0xB004, 2),
        (acpi.FADT_PM_TMR_BLK, acpi.FADT_PM_TMR_LEN, acpi.FADT_X_PM_TMR_BLK, 0xB008, 4),
    ]:
        gas = acpi.Gas.unpack(fadt, x_offset)
        assert (field("<I", offset32), field("<B", len_offset)) == (port, length)
        assert (gas.space_id, gas.bit_width, gas.bit_offset) == (acpi.GAS_SYSTEM_IO, 8 * length, 0)
        assert gas.address == port
    flags = field("<I", acpi.FADT_FLAGS)
    assert flags & acpi.FADT_RESET_REG_SUP and flags & acpi.FADT_WBINVD and flags & acpi.FADT_PROC_C1
    assert not flags & acpi.FADT_TMR_VAL_EXT  # the PM timer is 24 bits
    assert acpi.Gas.unpack(fadt, acpi.FADT_RESET_REG) == acpi.Gas(1, 8, 0, 1, 0xCF9)  # byte write, port 0xCF9
    assert field("<B", acpi.FADT_RESET_VALUE) == 0x06
    boot_arch = field("<H", acpi.FADT_IAPC_BOOT_ARCH)
    assert boot_arch & acpi.IAPC_LEGACY_DEVICES and not boot_arch & acpi.IAPC_8042   # this platform has none


@pytest.mark.parametrize("i8042", [False, True])
def test_the_fadt_and_the_dsdt_declare_the_8042_when_the_platform_has_one(i8042):
    tables = build_acpi_tables(AcpiPlatform(cpus=1, i8042=i8042), base=BIOS_AREA)
    (boot_arch,) = struct.unpack_from("<H", table_bytes(tables, "FACP"), acpi.FADT_IAPC_BOOT_ARCH)
    dsdt = table_bytes(tables, "DSDT")
    assert bool(boot_arch & acpi.IAPC_8042) == i8042 and boot_arch & acpi.IAPC_LEGACY_DEVICES
    # EisaId ("PNP0303") and EisaId ("PNP0F13") as DWORD consts, as iasl compiles them
    assert (b"KBD_\x08_HID\x0c\x41\xd0\x03\x03" in dsdt) == (b"MOU_\x08_HID\x0c\x41\xd0\x0f\x13" in dsdt) == i8042
    assert acpi_aml.find_sleep_type_a(dsdt[acpi.HEADER_LENGTH:]) == 5


def test_madt_interrupt_model():
    tables = build_acpi_tables(AcpiPlatform(cpus=2), base=BIOS_AREA)
    madt = table_bytes(tables, "APIC")

    assert struct.unpack_from("<II", madt, 36) == (0xFEE00000, 1)
    assert madt_structures(tables) == [
        bytes([0, 8, 0, 0, 1, 0, 0, 0]),
        bytes([0, 8, 1, 1, 1, 0, 0, 0]),
        acpi.IO_APIC_STRUCT.pack(1, 12, 2, 0xFEC00000, 0),  # I/O APIC ID after the processors'
        acpi.INTERRUPT_OVERRIDE_STRUCT.pack(2, 10, 0, 0, 2, 0),  # PIT IRQ0 -> GSI 2
        acpi.INTERRUPT_OVERRIDE_STRUCT.pack(2, 10, 0, 9, 9, 0x000D),  # SCI: level, active high
        bytes([4, 6, 0xFF, 0, 0, 1]),  # NMI on LINT1 of every processor
    ]


def test_more_than_255_vcpus_use_x2apic_structures():
    tables = build_acpi_tables(AcpiPlatform(cpus=300), base=BIOS_AREA)
    structures = madt_structures(tables)
    info = read_acpi(boot_memory(tables).read, tables.rsdp_address)

    assert info.errors == ()
    assert info.cpus == 300 and info.lapic_ids == tuple(range(300))
    assert sum(s[0] == acpi.MADT_LOCAL_APIC for s in structures) == 255  # APIC IDs 0..254
    x2apic = [acpi.LOCAL_X2APIC_STRUCT.unpack(s) for s in structures if s[0] == acpi.MADT_LOCAL_X2APIC]
    assert [(apic_id, uid) for _, _, apic_id, _, uid in x2apic] == [(i, i) for i in range(255, 300)]
    assert any(s[0] == acpi.MADT_LOCAL_X2APIC_NMI for s in structures)
    assert tables.addresses["APIC"] and AcpiPlatform(cpus=300).ioapic_id == 0


def test_pm1a_port_and_s5_sleep_type_round_trip():
    platform = AcpiPlatform(cpus=1, pm1a_cnt_port=0x404, s5_sleep_type=7)
    tables = build_acpi_tables(platform, base=BIOS_AREA)
    info = read_acpi(boot_memory(tables).read, tables.rsdp_address)

    assert (info.pm1a_cnt_port, info.s5_sleep_type, info.errors) == (0x404, 7, ())


@pytest.mark.parametrize("sleep_type", range(8))
def test_dsdt_aml_encodes_every_s5_sleep_type(sleep_type):
    aml = acpi_aml.dsdt_aml(sleep_type)
    assert aml[:6] == b"\x08_S5_\x12"
    assert acpi_aml.find_sleep_type_a(aml) == sleep_type


def test_dsdt_is_the_documented_aml():
    aml = acpi_aml.dsdt_aml(5)
    assert aml == b"\x08_S5_\x12\x08\x04\x0a\x05\x0a\x05\x00\x00" + b"\x10\x06\\_SB_"
    kbd_crs = bytes.fromhex("4701 6000 6000 0101" "4701 6400 6400 0101" "220200" "7900")
    mou_crs = bytes.fromhex("220010" "7900")
    devices = (b"\x5b\x82\x2dKBD_" + b"\x08_HID\x0c\x41\xd0\x03\x03"
               + b"\x08_CRS\x11\x18\x0a\x15" + kbd_crs
               + b"\x5b\x82\x1dMOU_" + b"\x08_HID\x0c\x41\xd0\x0f\x13" + b"\x08_CRS\x11\x08\x0a\x05" + mou_crs)
    assert acpi_aml.dsdt_aml(5, i8042=True) == aml[:-7] + b"\x10\x45\x05\\_SB_" + devices


@pytest.mark.parametrize("text,encoded", [("PNP0303", 0x0303D041), ("PNP0F13", 0x130FD041), ("PNP0A03", 0x030AD041)])
def test_eisa_ids_are_compressed_as_asl_does(text, encoded):
    assert acpi_aml.eisa_id(text) == b"\x0c" + encoded.to_bytes(4, "little")


@pytest.mark.parametrize("body_length", [0, 0x3E, 0x3F, 0xFFD, 0xFFE, 0xFFFFD, 0xFFFFE])
def test_aml_pkg_length_round_trips(body_length):
    encoded = acpi_aml.pkg_length(body_length)
    value, size = acpi_aml.decode_pkg_length(encoded, 0)
    assert size == len(encoded) and value == body_length + len(encoded)


@pytest.mark.skipif(shutil.which("iasl") is None, reason="ACPICA iasl not installed")
@pytest.mark.parametrize("i8042", [False, True])
def test_acpica_disassembles_the_dsdt_cleanly(tmp_path, i8042):
    tables = build_acpi_tables(AcpiPlatform(cpus=2, s5_sleep_type=5, i8042=i8042), base=BIOS_AREA)
    for signature in ("DSDT", "FACP", "APIC", "XSDT", "FACS"):
        (tmp_path / f"{signature.lower()}.dat").write_bytes(table_bytes(tables, signature))
    run = subprocess.run(["iasl", "-d", "dsdt.dat"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    asl = (tmp_path / "dsdt.dsl").read_text()
    assert "Name (_S5, Package (0x04)" in asl and "Scope (\\_SB)" in asl
    if i8042:
        for device, hid in (("KBD", "PNP0303"), ("MOU", "PNP0F13")):
            assert f"Device ({device})" in asl and f'Name (_HID, EisaId ("{hid}")' in asl
        assert "IO (Decode16,\n" in asl and "IRQNoFlags ()\n" in asl and "{1}" in asl and "{12}" in asl
    compiled = subprocess.run(["iasl", "dsdt.dsl"], cwd=tmp_path, capture_output=True, text=True)
    assert compiled.returncode == 0 and "0 Errors" in compiled.stdout, compiled.stdout
    for signature in ("facp", "apic", "xsdt", "facs"):
        run = subprocess.run(["iasl", "-d", f"{signature}.dat"], cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Invalid" not in (tmp_path / f"{signature}.dsl").read_text()


@pytest.mark.skipif(shutil.which("acpiexec") is None, reason="ACPICA acpiexec not installed")
@pytest.mark.parametrize("cpus", [1, 300])
def test_acpica_loads_the_tables_without_warnings_and_evaluates_s5(tmp_path, cpus):
    tables = build_acpi_tables(AcpiPlatform(cpus=cpus, s5_sleep_type=6), base=BIOS_AREA)
    files = []
    for signature in ("DSDT", "FACP", "APIC"):
        files.append(tmp_path / f"{signature.lower()}.dat")
        files[-1].write_bytes(table_bytes(tables, signature))
    run = subprocess.run(
        ["acpiexec", "-b", "Evaluate _S5", *map(str, files)], capture_output=True, text=True, timeout=60
    )
    output = run.stdout + run.stderr
    complaints = [
        line for line in output.splitlines()
        if "aetests" not in line  # acpiexec's own GPE self-tests fail on a machine without GPE blocks
        and any(word in line for word in ("Warning", "Error", "BIOS Bug", "Exception"))
    ]  # fmt: skip
    assert complaints == [], output
    assert "Contains 4 Elements" in output and "[Integer] = 0000000000000006" in output, output


# --- finding the RSDP --------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [0xE0000, 0xF5A30, 0xFFF00])
def test_find_rsdp_scans_the_bios_area(base):
    tables = build_acpi_tables(AcpiPlatform(cpus=1), base=base)
    memory = GuestMemory(BIOS_AREA, BIOS_AREA_SIZE + 0x1000)  # room for tables that spill past 1 MiB
    memory.write(base, tables.blob)

    assert find_rsdp(memory.read) == tables.rsdp_address == base


def test_find_rsdp_ignores_a_signature_with_a_bad_checksum():
    memory = GuestMemory(BIOS_AREA, BIOS_AREA_SIZE)
    memory.write(0xE0000, b"RSD PTR " + bytes(28))  # decoy: checksum wrong
    tables = build_acpi_tables(AcpiPlatform(cpus=1), base=0xE4000)
    memory.write(tables.base, tables.blob)

    assert find_rsdp(memory.read) == 0xE4000
    assert find_rsdp(GuestMemory(BIOS_AREA, BIOS_AREA_SIZE).read) is None


def test_find_rsdp_probes_around_unreadable_memory():
    tables = build_acpi_tables(AcpiPlatform(cpus=1), base=0xF0000)
    memory = GuestMemory(0xF0000, 0x10000)  # 0xE0000-0xEFFFF unreadable: a whole-area read fails
    memory.write(tables.base, tables.blob)

    assert find_rsdp(memory.read) == 0xF0000


# --- broken tables are data, not crashes ---------------------------------------------------------------


@pytest.mark.parametrize("signature", ["XSDT", "FACP", "DSDT", "APIC"])
def test_a_corrupted_byte_is_reported_not_raised(signature):
    tables = build_acpi_tables(AcpiPlatform(cpus=4), base=BIOS_AREA)
    memory = boot_memory(tables)
    address = tables.addresses[signature] + acpi.HEADER_LENGTH + 1
    memory.write(address, bytes([memory.read(address, 1)[0] ^ 0x40]))

    info = read_acpi(memory.read, tables.rsdp_address)
    assert any(signature in error and "checksum" in error for error in info.errors), info.errors


def test_a_corrupted_rsdp_is_reported():
    tables = build_acpi_tables(AcpiPlatform(cpus=4), base=BIOS_AREA)
    memory = boot_memory(tables)
    memory.write(tables.rsdp_address + 33, b"\x55")  # reserved byte covered only by the extended checksum

    info = read_acpi(memory.read, tables.rsdp_address)
    assert any("extended checksum" in error for error in info.errors), info.errors
    assert info.cpus == 4  # the rest still decodes


def test_a_pointer_outside_ram_is_recorded():
    tables = build_acpi_tables(AcpiPlatform(cpus=4), base=BIOS_AREA)
    memory = boot_memory(tables)
    blob = bytearray(tables.blob)
    xsdt = tables.addresses["XSDT"] - tables.base
    struct.pack_into("<Q", blob, xsdt + acpi.HEADER_LENGTH + 8, 0x1_2345_6000)  # APIC entry beyond RAM
    refresh_checksum(blob, xsdt)
    memory.write(tables.base, blob)

    info = read_acpi(memory.read, tables.rsdp_address)
    assert any("0x123456000" in error and "cannot read" in error for error in info.errors), info.errors
    assert any("no APIC" in error for error in info.errors)
    assert info.pm1a_cnt_port == 0x604 and info.s5_sleep_type == 5


def test_an_rsdp_address_outside_ram_is_recorded():
    info = read_acpi(GuestMemory(BIOS_AREA, BIOS_AREA_SIZE).read, 0xDEAD0000)
    assert info.cpus == 0 and len(info.errors) == 1 and "RSDP" in info.errors[0]


def test_a_guest_without_an_xsdt_is_read_through_the_rsdt():
    tables = build_acpi_tables(AcpiPlatform(cpus=2), base=BIOS_AREA)
    blob = bytearray(tables.blob)
    struct.pack_into("<Q", blob, 24, 0)  # XsdtAddress
    blob[32] = 0
    blob[32] = -sum(blob[:36]) & 0xFF
    memory = boot_memory(tables)
    memory.write(tables.base, blob)

    info = read_acpi(memory.read, tables.rsdp_address)
    assert info.errors == () and info.cpus == 2
    assert "XSDT" not in {t.signature for t in info.tables}


def test_pm1a_cnt_falls_back_to_the_32_bit_field_and_flags_mismatches():
    tables = build_acpi_tables(AcpiPlatform(cpus=1), base=BIOS_AREA)
    fadt = tables.addresses["FACP"] - tables.base
    blob = bytearray(tables.blob)
    struct.pack_into("<Q", blob, fadt + acpi.FADT_X_PM1A_CNT_BLK + 4, 0)  # no X_PM1a_CNT_BLK
    refresh_checksum(blob, fadt)
    memory = boot_memory(tables)
    memory.write(tables.base, blob)
    assert read_acpi(memory.read, tables.rsdp_address).pm1a_cnt_port == 0x604

    struct.pack_into("<Q", blob, fadt + acpi.FADT_X_PM1A_CNT_BLK + 4, 0x1004)
    refresh_checksum(blob, fadt)
    memory.write(tables.base, blob)
    info = read_acpi(memory.read, tables.rsdp_address)
    assert any("PM1a_CNT_BLK 0x604 and X_PM1a_CNT_BLK 0x1004 differ" in error for error in info.errors)
    assert info.pm1a_cnt_port == 0x1004  # ACPICA prefers the 64-bit field


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), cpus=st.sampled_from([1, 4, 300]))
def test_random_byte_flips_never_make_the_reader_raise(data, cpus):
    tables = build_acpi_tables(AcpiPlatform(cpus=cpus), base=BIOS_AREA)
    blob = bytearray(tables.blob)
    flip = st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255))
    flips = data.draw(st.lists(flip, min_size=1, max_size=8))
    for offset, mask in flips:
        blob[offset] ^= mask
    memory = boot_memory(tables)
    memory.write(tables.base, blob)

    info = read_acpi(memory.read, tables.rsdp_address)
    assert isinstance(info, acpi_read.AcpiInfo)
    assert all(isinstance(error, str) for error in info.errors)
    assert find_rsdp(memory.read) in (None, tables.rsdp_address)


@given(aml=st.binary(max_size=64))
def test_the_s5_lookup_rejects_garbage_with_its_own_error(aml):
    try:
        acpi_aml.find_sleep_type_a(b"\x08_S5_\x12" + aml)
    except acpi_aml.AmlDecodeError:
        pass


# --- refusing what cannot be described -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"cpus": 0}, "cpus"),
        ({"cpus": 1, "s5_sleep_type": 8}, "s5_sleep_type"),
        ({"cpus": 1, "pm1a_cnt_port": 0xFFFF}, "pm1a_cnt_port"),
        ({"cpus": 1, "sci_irq": 2}, "sci_irq"),
        ({"cpus": 1, "oem_id": "TOOLONGID"}, "oem_id"),
        ({"cpus": 1, "ioapic_id": 256}, "ioapic_id"),
    ],
)
def test_invalid_platforms_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(UsageError, match=field):
        AcpiPlatform(**kwargs)


def test_short_oem_ids_are_padded_and_base_must_be_aligned():
    assert AcpiPlatform(cpus=1, oem_id="ACME").oem_id == "ACME  "
    with pytest.raises(UsageError, match="16-byte"):
        build_acpi_tables(AcpiPlatform(cpus=1), base=0xE0008)


@pytest.mark.parametrize("env,has_8042", [("bare_metal", True), ("kvm_pvh", True), ("efi", True), ("xen_pvh", False)])
def test_the_tables_a_guest_finds_declare_the_8042_of_a_pc_and_none_elsewhere(env, has_8042):
    """Read back from guest memory after the probe ran: a PC environment (its chipset has the 8042)
    says so in the FADT and declares its ports in the DSDT; xen_pvh, with no legacy devices, does not."""
    from hvsim import MachineConfig
    from hvsim.api import Run
    from hvsim.kernels import probe_path

    prepared = Run(env, probe_path("efi" if env == "efi" else "elf"), MachineConfig())
    assert prepared.execute().stop.kind == "poweroff"
    m = prepared.machine
    assert (m.chipset.i8042 is not None) == has_8042
    info = read_acpi(m.memory.read, m.acpi_tables.rsdp_address)
    tables = {t.signature: m.memory.read(t.address, t.length) for t in info.tables}
    (boot_arch,) = struct.unpack_from("<H", tables["FACP"], acpi.FADT_IAPC_BOOT_ARCH)
    assert bool(boot_arch & acpi.IAPC_8042) == has_8042
    assert (acpi_aml.i8042_devices() in tables["DSDT"]) == has_8042
    assert acpi_aml.find_sleep_type_a(tables["DSDT"][acpi.HEADER_LENGTH:]) == 5
