"""ACPI tables for a small PC-like VM: build them for a guest, and read them back the way a guest does.

The reader is acpi_read.py.  Built: RSDP (rev 2), XSDT and RSDT (both list FACP and APIC), FADT "FACP" (rev 6.0, 276 bytes), FACS,
MADT "APIC" (rev 5) and a hand-encoded DSDT (``acpi_aml``: \\_S5, and the 8042's ports when
the platform has one).  Layouts are ACPI 6.5: §5.2.5.3 RSDP,
§5.2.6 table header, §5.2.7 RSDT, §5.2.8 XSDT, §5.2.9 FADT, §5.2.10 FACS, §5.2.12 MADT, §5.2.3.2 GAS.

What the devices behind these tables must do (they live elsewhere):

- **PM1a_EVT** (``pm1a_evt_port``, 4 bytes): PM1_STS (16-bit, write-1-to-clear) then PM1_EN (16-bit).
- **PM1a_CNT** (``pm1a_cnt_port``, 2 bytes): SMI_CMD is 0, so the platform is always in ACPI mode and the
  register must read with **SCI_EN (bit 0) = 1**.  Writing SLP_EN (bit 13) with SLP_TYP (bits 10-12) equal
  to ``s5_sleep_type`` means "power off" (Linux writes SLP_TYP first, then SLP_TYP | SLP_EN).
- **PM_TMR** (``pm_tmr_port``, 4 bytes): a 24-bit counter at 3.579545 MHz (TMR_VAL_EXT is clear).
- **RESET_REG**: FADT flag RESET_REG_SUP is set with RESET_REG = I/O port 0xCF9, value 0x06.
- **SCI**: ISA IRQ ``sci_irq``, wired to the same GSI, level-triggered, active-high.
- **I/O APIC** at ``ioapic_address`` with ID ``ioapic_id``, GSIs from 0; the PIT's IRQ 0 arrives on GSI 2.
- **8042** (``i8042``): data port 0x60, status/command 0x64, the keyboard on ISA IRQ 1 and the aux
  port on IRQ 12, both edge-triggered, active-high on the GSI of the same number.
"""

from __future__ import annotations

import struct
from typing import Callable

import attrs

from hvsim.core import acpi_aml
from hvsim.core.cstruct import cstruct, field
from hvsim.core.errors import UsageError

ReadFn = Callable[[int, int], bytes]

BIOS_AREA_START = 0xE0000  # §5.2.5.1: OSPM scans 0xE0000-0xFFFFF on 16-byte boundaries for the RSDP
BIOS_AREA_END = 0x100000
TABLE_ALIGN = 16
FACS_ALIGN = 64  # §5.2.10: the FACS must be aligned on a 64-byte boundary
MAX_TABLE_LENGTH = 4 << 20  # a reader's sanity bound on a header's Length field, not a spec limit


@cstruct
class Rsdp:
    """§5.2.5.3 Root System Description Pointer, revision 2."""

    signature: bytes = field("8s", b"RSD PTR ")
    checksum: int = field("B")  # over the first 20 bytes (the ACPI 1.0 structure)
    oem_id: bytes = field("6s", b"")
    revision: int = field("B", 2)
    rsdt_address: int = field("I")
    length: int = field("I", 36)
    xsdt_address: int = field("Q")
    extended_checksum: int = field("B")  # over all 36 bytes
    reserved: None = field("3x", None)


RSDP_SIGNATURE, RSDP_REVISION, RSDP_V1_LENGTH, RSDP_LENGTH = b"RSD PTR ", 2, 20, Rsdp.SIZE


@cstruct
class SdtHeader:
    """§5.2.6 System Description Table header; the byte sum of the whole table is 0."""

    signature: bytes = field("4s", b"")
    length: int = field("I")
    revision: int = field("B")
    checksum: int = field("B")
    oem_id: bytes = field("6s", b"")
    oem_table_id: bytes = field("8s", b"")
    oem_revision: int = field("I", 1)
    creator_id: bytes = field("4s", b"HVSM")
    creator_revision: int = field("I", 1)


HEADER_LENGTH = SdtHeader.SIZE  # 36
XSDT_REVISION = RSDT_REVISION = 1
DSDT_REVISION = 2  # 2+: AML integers are 64-bit


@cstruct
class Gas:
    """§5.2.3.2 Generic Address Structure."""

    space_id: int = field("B")
    bit_width: int = field("B")
    bit_offset: int = field("B")
    access_size: int = field("B")  # 1 byte, 2 word, 3 dword, 4 qword
    address: int = field("Q")


GAS_SYSTEM_IO = 1
GAS_ACCESS_BYTE, GAS_ACCESS_WORD, GAS_ACCESS_DWORD = 1, 2, 3

# §5.2.9 FADT, revision 6 minor 0 (the ACPI 6.0 layout): byte offsets of the fields used here
FADT_REVISION, FADT_MINOR_VERSION, FADT_LENGTH = 6, 0, 276
FADT_FIRMWARE_CTRL, FADT_DSDT, FADT_SCI_INT, FADT_SMI_CMD = 36, 40, 46, 48
FADT_PM1A_EVT_BLK, FADT_PM1A_CNT_BLK, FADT_PM_TMR_BLK = 56, 64, 76
FADT_PM1_EVT_LEN, FADT_PM1_CNT_LEN, FADT_PM_TMR_LEN = 88, 89, 91
FADT_P_LVL2_LAT, FADT_P_LVL3_LAT = 96, 98
FADT_IAPC_BOOT_ARCH, FADT_FLAGS, FADT_RESET_REG, FADT_RESET_VALUE = 109, 112, 116, 128
FADT_MINOR, FADT_X_FIRMWARE_CTRL, FADT_X_DSDT = 131, 132, 140
FADT_X_PM1A_EVT_BLK, FADT_X_PM1A_CNT_BLK, FADT_X_PM_TMR_BLK = 148, 172, 208
PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN = 4, 2, 4
P_LVL2_LAT_NONE, P_LVL3_LAT_NONE = 101, 1001  # > 100 / > 1000 µs: C2 / C3 not supported
IAPC_LEGACY_DEVICES, IAPC_8042, IAPC_VGA_NOT_PRESENT, IAPC_MSI_NOT_SUPPORTED = 1 << 0, 1 << 1, 1 << 2, 1 << 3
IAPC_PCIE_ASPM_CONTROLS, IAPC_CMOS_RTC_NOT_PRESENT = 1 << 4, 1 << 5
FADT_WBINVD, FADT_PROC_C1, FADT_SLP_BUTTON, FADT_TMR_VAL_EXT = 1 << 0, 1 << 2, 1 << 5, 1 << 8
FADT_RESET_REG_SUP = 1 << 10
FADT_FLAG_BITS = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_RESET_REG_SUP
RESET_PORT, RESET_VALUE = 0xCF9, 0x06  # PCI reset control register: full reset | reset CPU

# §5.2.10 FACS: signature, length, hardware signature, waking vector, global lock, flags,
# X_ waking vector, version, 31 reserved bytes (no checksum)
FACS_STRUCT = struct.Struct("<4sIIIIIQB31x")
FACS_SIGNATURE, FACS_LENGTH, FACS_VERSION = b"FACS", FACS_STRUCT.size, 2

# §5.2.12 MADT: header, Local APIC Address, Flags, then interrupt controller structures
MADT_REVISION = 5
MADT_PCAT_COMPAT = 1 << 0
MADT_LOCAL_APIC, MADT_IO_APIC, MADT_INTERRUPT_OVERRIDE, MADT_LOCAL_APIC_NMI = 0, 1, 2, 4
MADT_LOCAL_X2APIC, MADT_LOCAL_X2APIC_NMI = 9, 0xA
LOCAL_APIC_STRUCT = struct.Struct("<BBBBI")  # type, length, processor UID, APIC ID, flags
IO_APIC_STRUCT = struct.Struct("<BBBxII")  # type, length, I/O APIC ID, reserved, address, GSI base
INTERRUPT_OVERRIDE_STRUCT = struct.Struct("<BBBBIH")  # type, length, bus, source IRQ, GSI, MPS INTI flags
LOCAL_APIC_NMI_STRUCT = struct.Struct("<BBBHB")  # type, length, processor UID, MPS INTI flags, LINT#
LOCAL_X2APIC_STRUCT = struct.Struct("<BBxxIII")  # type, length, reserved, x2APIC ID, flags, processor UID
LOCAL_X2APIC_NMI_STRUCT = struct.Struct("<BBHIB3x")  # type, length, MPS INTI flags, processor UID, LINT#
LAPIC_ENABLED, LAPIC_ONLINE_CAPABLE = 1 << 0, 1 << 1
XAPIC_MAX_ID = 0xFE  # 0xFF is the xAPIC broadcast ID: IDs from 255 up need x2APIC structures (§5.2.12.12)
ALL_PROCESSORS_UID, ALL_X2APIC_PROCESSORS_UID = 0xFF, 0xFFFFFFFF
ISA_BUS = 0
MPS_INTI_CONFORMS = 0x0000
MPS_INTI_LEVEL_ACTIVE_HIGH = 0x000D  # polarity 01 = active high, trigger mode 11 = level
NMI_LINT = 1
PIT_IRQ, PIT_GSI = 0, 2


def _in_range(low: int, high: int):
    def check(instance, attribute, value):
        if not isinstance(value, int) or not low <= value <= high:
            raise UsageError(f"ACPI platform {attribute.name} = {value!r}: must be in {low:#x}..{high:#x}")

    return check


def _oem_text(size: int):
    def check(instance, attribute, value):
        if not isinstance(value, str) or len(value) != size or not value.isascii():
            raise UsageError(f"ACPI platform {attribute.name} = {value!r}: must be up to {size} ASCII chars")

    return check


def _pad(size: int):
    return lambda value: value.ljust(size) if isinstance(value, str) else value


def _default_ioapic_id(platform: AcpiPlatform) -> int:
    """The I/O APIC ID follows the processors' (MP spec habit); 0 once they need x2APIC IDs."""
    return platform.cpus if isinstance(platform.cpus, int) and platform.cpus <= XAPIC_MAX_ID else 0


def _default_boot_arch(platform: AcpiPlatform) -> int:
    return IAPC_LEGACY_DEVICES | IAPC_VGA_NOT_PRESENT | (IAPC_8042 if platform.i8042 else 0)


@attrs.frozen
class AcpiPlatform:
    """The machine the tables describe.  Invalid values raise ``UsageError`` naming the field."""

    cpus: int = attrs.field(validator=_in_range(1, 0xFFFF))
    pm1a_evt_port: int = attrs.field(default=0x600, validator=_in_range(0, 0x10000 - PM1_EVT_LEN))
    pm1a_cnt_port: int = attrs.field(default=0x604, validator=_in_range(0, 0x10000 - PM1_CNT_LEN))
    pm_tmr_port: int = attrs.field(default=0x608, validator=_in_range(0, 0x10000 - PM_TMR_LEN))
    sci_irq: int = attrs.field(default=9, validator=_in_range(3, 15))  # an ISA IRQ, not the PIT's or cascade
    s5_sleep_type: int = attrs.field(default=5, validator=_in_range(0, acpi_aml.SLEEP_TYPE_MAX))
    lapic_address: int = attrs.field(default=0xFEE00000, validator=_in_range(0, 0xFFFFFFFF))
    ioapic_address: int = attrs.field(default=0xFEC00000, validator=_in_range(0, 0xFFFFFFFF))
    ioapic_id: int = attrs.field(
        default=attrs.Factory(_default_ioapic_id, takes_self=True), validator=_in_range(0, 0xFF)
    )
    # False: a machine with local APICs only (Xen's PVH guests): no I/O APIC, no ISA interrupt
    # overrides, no 8259s (MADT flag PCAT_COMPAT clear), as libxl builds a PVH guest's MADT.
    io_apic: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    oem_id: str = attrs.field(default="HVSIM ", converter=_pad(6), validator=_oem_text(6))
    oem_table_id: str = attrs.field(default="HVSIMPC ", converter=_pad(8), validator=_oem_text(8))
    # True: the machine has the 8042 keyboard controller (a PC's chipset): the FADT says so and the
    # DSDT declares its keyboard and aux ports (``acpi_aml.i8042_devices``), so an OS finds it.
    i8042: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    # Legacy devices, the 8042 when there is one, no VGA; add IAPC_CMOS_RTC_NOT_PRESENT if there is no RTC.
    iapc_boot_arch: int = attrs.field(
        default=attrs.Factory(_default_boot_arch, takes_self=True), validator=_in_range(0, 0xFFFF)
    )


@attrs.frozen
class AcpiTables:
    """The tables laid out contiguously from ``base`` (RSDP first), each at least 16-byte aligned;
    the FACS among them, or on its own at ``addresses["FACS"]`` (``facs``) when the builder was
    given a separate place for it (a UEFI firmware keeps it in ACPI NVS memory, the rest in ACPI
    reclaim memory: the OS may reuse the latter, never the former)."""

    base: int
    blob: bytes
    rsdp_address: int
    addresses: dict[str, int]  # "RSDP", "XSDT", "RSDT", "FACP", "FACS", "DSDT", "APIC" -> address
    facs: bytes = b""  # the FACS when it lies apart from ``blob``; empty when ``blob`` holds it

    @property
    def end(self) -> int:
        """First guest-physical address after the tables (what an E820 ACPI range must cover)."""
        return self.base + len(self.blob)

    def writes(self) -> tuple[tuple[int, bytes], ...]:
        """(address, bytes) runs to store in guest memory: the blob, then the FACS if apart."""
        return ((self.base, self.blob),) + (((self.addresses["FACS"], self.facs),) if self.facs else ())


def _checksum(data: bytes) -> int:
    """The value that makes ``data``'s byte sum 0 when stored in a checksum byte that now holds 0."""
    return -sum(data) & 0xFF


def _sdt(signature: bytes, revision: int, body: bytes, platform: AcpiPlatform) -> bytes:
    header = SdtHeader(
        signature=signature, length=HEADER_LENGTH + len(body), revision=revision,
        oem_id=platform.oem_id.encode("ascii"), oem_table_id=platform.oem_table_id.encode("ascii"),
    )  # fmt: skip
    table = bytearray(header.pack() + body)
    table[9] = _checksum(table)
    return bytes(table)


def _io_gas(port: int, length: int, access_size: int) -> bytes:
    return Gas(GAS_SYSTEM_IO, 8 * length, 0, access_size, port).pack()


def _madt_body(p: AcpiPlatform) -> bytes:
    parts = [struct.pack("<II", p.lapic_address, MADT_PCAT_COMPAT if p.io_apic else 0)]
    for cpu in range(p.cpus):  # processor UID = APIC ID = cpu
        if cpu <= XAPIC_MAX_ID:
            parts.append(LOCAL_APIC_STRUCT.pack(MADT_LOCAL_APIC, 8, cpu, cpu, LAPIC_ENABLED))
        else:
            parts.append(LOCAL_X2APIC_STRUCT.pack(MADT_LOCAL_X2APIC, 16, cpu, LAPIC_ENABLED, cpu))
    override = INTERRUPT_OVERRIDE_STRUCT.pack
    if p.io_apic:
        parts += [
            IO_APIC_STRUCT.pack(MADT_IO_APIC, 12, p.ioapic_id, p.ioapic_address, 0),
            override(MADT_INTERRUPT_OVERRIDE, 10, ISA_BUS, PIT_IRQ, PIT_GSI, MPS_INTI_CONFORMS),
            override(MADT_INTERRUPT_OVERRIDE, 10, ISA_BUS, p.sci_irq, p.sci_irq, MPS_INTI_LEVEL_ACTIVE_HIGH),
        ]
    parts.append(LOCAL_APIC_NMI_STRUCT.pack(MADT_LOCAL_APIC_NMI, 6, ALL_PROCESSORS_UID, MPS_INTI_CONFORMS, NMI_LINT))
    if p.cpus > XAPIC_MAX_ID + 1:
        nmi = (MADT_LOCAL_X2APIC_NMI, 12, MPS_INTI_CONFORMS, ALL_X2APIC_PROCESSORS_UID, NMI_LINT)
        parts.append(LOCAL_X2APIC_NMI_STRUCT.pack(*nmi))
    return b"".join(parts)


def _fadt_body(p: AcpiPlatform, facs: int, dsdt: int) -> bytes:
    fadt = bytearray(FADT_LENGTH)
    for offset, fmt, value in [
        (FADT_FIRMWARE_CTRL, "<I", facs), (FADT_DSDT, "<I", dsdt), (FADT_SCI_INT, "<H", p.sci_irq),
        (FADT_SMI_CMD, "<I", 0), (FADT_PM1A_EVT_BLK, "<I", p.pm1a_evt_port),
        (FADT_PM1A_CNT_BLK, "<I", p.pm1a_cnt_port), (FADT_PM_TMR_BLK, "<I", p.pm_tmr_port),
        (FADT_PM1_EVT_LEN, "<B", PM1_EVT_LEN), (FADT_PM1_CNT_LEN, "<B", PM1_CNT_LEN),
        (FADT_PM_TMR_LEN, "<B", PM_TMR_LEN), (FADT_P_LVL2_LAT, "<H", P_LVL2_LAT_NONE),
        (FADT_P_LVL3_LAT, "<H", P_LVL3_LAT_NONE), (FADT_IAPC_BOOT_ARCH, "<H", p.iapc_boot_arch),
        (FADT_FLAGS, "<I", FADT_FLAG_BITS), (FADT_RESET_VALUE, "<B", RESET_VALUE),
        (FADT_MINOR, "<B", FADT_MINOR_VERSION), (FADT_X_FIRMWARE_CTRL, "<Q", facs), (FADT_X_DSDT, "<Q", dsdt),
    ]:  # fmt: skip
        struct.pack_into(fmt, fadt, offset, value)
    for offset, gas in [
        (FADT_RESET_REG, _io_gas(RESET_PORT, 1, GAS_ACCESS_BYTE)),
        (FADT_X_PM1A_EVT_BLK, _io_gas(p.pm1a_evt_port, PM1_EVT_LEN, GAS_ACCESS_WORD)),
        (FADT_X_PM1A_CNT_BLK, _io_gas(p.pm1a_cnt_port, PM1_CNT_LEN, GAS_ACCESS_WORD)),
        (FADT_X_PM_TMR_BLK, _io_gas(p.pm_tmr_port, PM_TMR_LEN, GAS_ACCESS_DWORD)),
    ]:
        fadt[offset : offset + Gas.SIZE] = gas
    return bytes(fadt[HEADER_LENGTH:])


def acpi_sizes(platform: AcpiPlatform) -> tuple[int, int]:
    """(bytes from a page-aligned base for every table but the FACS, bytes of the FACS): what a
    firmware allocates before ``build_acpi_tables(platform, base, facs_base)``."""
    return len(build_acpi_tables(platform, 0, facs_base=0).blob), FACS_LENGTH


def build_acpi_tables(platform: AcpiPlatform, base: int, facs_base: int | None = None) -> AcpiTables:
    """Lay out RSDP, XSDT, RSDT, FACP, FACS, DSDT and APIC from ``base`` (16-byte aligned, below 4 GiB);
    with ``facs_base`` (64-byte aligned, below 4 GiB) the FACS goes there instead, outside the blob."""
    if base % TABLE_ALIGN or base < 0:
        raise UsageError(f"ACPI tables base {base:#x}: must be a 16-byte aligned guest-physical address")
    if facs_base is not None and (facs_base % FACS_ALIGN or not 0 <= facs_base <= (1 << 32) - FACS_LENGTH):
        raise UsageError(f"FACS address {facs_base:#x}: must be 64-byte aligned and below 4 GiB")
    madt = _sdt(b"APIC", MADT_REVISION, _madt_body(platform), platform)
    dsdt = _sdt(b"DSDT", DSDT_REVISION, acpi_aml.dsdt_aml(platform.s5_sleep_type, platform.i8042), platform)
    facs = FACS_STRUCT.pack(FACS_SIGNATURE, FACS_LENGTH, 0, 0, 0, 0, 0, FACS_VERSION)
    sizes = {"RSDP": RSDP_LENGTH, "XSDT": HEADER_LENGTH + 16, "RSDT": HEADER_LENGTH + 8, "FACP": FADT_LENGTH}
    sizes |= {"FACS": len(facs), "DSDT": len(dsdt), "APIC": len(madt)}
    a, cursor = {}, base  # a: signature -> address
    if facs_base is not None:
        a["FACS"] = facs_base
        del sizes["FACS"]
    for signature, size in sizes.items():
        align = FACS_ALIGN if signature == "FACS" else TABLE_ALIGN
        a[signature] = cursor = -(-cursor // align) * align
        cursor += size
    if cursor > 1 << 32:
        raise UsageError(f"ACPI tables at {base:#x} end at {cursor:#x}: RSDT and FADT need them below 4 GiB")
    fadt = _sdt(b"FACP", FADT_REVISION, _fadt_body(platform, a["FACS"], a["DSDT"]), platform)
    xsdt = _sdt(b"XSDT", XSDT_REVISION, struct.pack("<QQ", a["FACP"], a["APIC"]), platform)
    rsdt = _sdt(b"RSDT", RSDT_REVISION, struct.pack("<II", a["FACP"], a["APIC"]), platform)
    rsdp = bytearray(
        Rsdp(oem_id=platform.oem_id.encode("ascii"), rsdt_address=a["RSDT"], xsdt_address=a["XSDT"]).pack()
    )
    rsdp[8] = _checksum(rsdp[:RSDP_V1_LENGTH])
    rsdp[32] = _checksum(rsdp)
    blob = bytearray(cursor - base)
    tables = {"RSDP": rsdp, "XSDT": xsdt, "RSDT": rsdt, "FACP": fadt, "DSDT": dsdt, "APIC": madt}
    if facs_base is None:
        tables["FACS"] = facs
    for signature, data in tables.items():
        blob[a[signature] - base : a[signature] - base + len(data)] = data
    return AcpiTables(base=base, blob=bytes(blob), rsdp_address=a["RSDP"], addresses=a,
                      facs=facs if facs_base is not None else b"")
