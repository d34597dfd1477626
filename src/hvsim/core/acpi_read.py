"""Reading ACPI tables the way a guest does: RSDP, XSDT/RSDT, MADT processors, FADT PM1a, \\_S5_.

A broken table is data, not a crash: every problem becomes a string in ``AcpiInfo.errors``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import attrs

from hvsim.core import acpi_aml
from hvsim.core.acpi import (
    BIOS_AREA_END,
    BIOS_AREA_START,
    FACS_ALIGN,
    FACS_LENGTH,
    FACS_SIGNATURE,
    FADT_DSDT,
    FADT_FIRMWARE_CTRL,
    FADT_PM1A_CNT_BLK,
    FADT_X_DSDT,
    FADT_X_FIRMWARE_CTRL,
    FADT_X_PM1A_CNT_BLK,
    GAS_SYSTEM_IO,
    Gas,
    HEADER_LENGTH,
    LAPIC_ENABLED,
    LAPIC_ONLINE_CAPABLE,
    LOCAL_APIC_STRUCT,
    LOCAL_X2APIC_STRUCT,
    MADT_LOCAL_APIC,
    MADT_LOCAL_X2APIC,
    MAX_TABLE_LENGTH,
    RSDP_LENGTH,
    RSDP_REVISION,
    RSDP_SIGNATURE,
    RSDP_V1_LENGTH,
    ReadFn,
    Rsdp,
)


class AcpiTableEntry(NamedTuple):
    signature: str
    address: int
    length: int


@attrs.frozen
class AcpiInfo:
    """What a guest learns from the tables.  ``errors`` lists every problem found; empty means clean."""

    rsdp_address: int
    oem_id: str = ""
    revision: int = 0  # the RSDP's: 0 = ACPI 1.0 (RSDT only), 2 = ACPI 2.0+ (XSDT)
    tables: tuple[AcpiTableEntry, ...] = ()  # every table reached: RSDP, root(s), their entries, FACS, DSDT
    cpus: int = 0  # MADT processor structures (types 0 and 9) flagged enabled or online-capable
    lapic_ids: tuple[int, ...] = ()  # their APIC IDs, in MADT order
    pm1a_cnt_port: int | None = None
    s5_sleep_type: int | None = None  # SLP_TYPa of the DSDT's \_S5_
    errors: tuple[str, ...] = ()


def _unpack(fmt: str, data: bytes, offset: int) -> int | None:
    """A little-endian field of ``data`` at ``offset``, or None when ``data`` is too short to hold it."""
    return struct.unpack_from(fmt, data, offset)[0] if offset + struct.calcsize(fmt) <= len(data) else None


class _Walker:
    """Guest-memory reads that record failures instead of raising, and the tables found."""

    def __init__(self, read: ReadFn):
        self._read = read
        self.errors: list[str] = []
        self.tables: list[AcpiTableEntry] = []

    def fetch(self, address: int, size: int, what: str) -> bytes | None:
        try:
            data = bytes(self._read(address, size))
        except Exception as exc:  # noqa: BLE001 - a guest's bad pointer is data, not a crash
            self.errors.append(f"{what}: cannot read {size} byte(s) at {address:#x}: {exc}")
            return None
        if len(data) != size:
            self.errors.append(f"{what}: read of {size} byte(s) at {address:#x} returned {len(data)}")
            return None
        return data

    def table(self, address: int, expected: bytes | None, what: str) -> bytes | None:
        """A whole table, by its Length; signature and checksum checked (the FACS has no checksum)."""
        if address == 0:
            self.errors.append(f"{what}: null pointer")
            return None
        if (head := self.fetch(address, 8, what)) is None:
            return None
        signature, length = head[:4], _unpack("<I", head, 4)
        name = signature.decode("latin-1")
        where = f"{name} at {address:#x}"
        if expected is not None and signature != expected:
            self.errors.append(f"{what} at {address:#x}: signature {name!r}, expected {expected.decode()!r}")
            return None
        minimum = FACS_LENGTH if signature == FACS_SIGNATURE else HEADER_LENGTH
        if not minimum <= length <= MAX_TABLE_LENGTH:
            self.errors.append(f"{where}: Length {length:#x} not in {minimum}..{MAX_TABLE_LENGTH:#x}")
            return None
        if (data := self.fetch(address, length, where)) is None:
            return None
        self.tables.append(AcpiTableEntry(name, address, length))
        if signature != FACS_SIGNATURE and sum(data) & 0xFF:
            self.errors.append(f"{where}: bad checksum (byte sum {sum(data) & 0xFF:#04x}, not 0)")
        return data

    def root_entries(self, address: int, signature: bytes, fmt: str) -> list[int] | None:
        if (data := self.table(address, signature, signature.decode())) is None:
            return None
        size = struct.calcsize(fmt)
        if (len(data) - HEADER_LENGTH) % size:
            self.errors.append(f"{signature.decode()}: Length {len(data)} is not 36 + a multiple of {size}")
        return [_unpack(fmt, data, offset) for offset in range(HEADER_LENGTH, len(data) - size + 1, size)]


def _read_rsdp(walker: _Walker, address: int) -> Rsdp | None:
    """The RSDP with both checksums checked (over 20 and 36 bytes, as ACPICA does); None if unusable."""
    if (head := walker.fetch(address, RSDP_V1_LENGTH, "RSDP")) is None:
        return None
    if head[:8] != RSDP_SIGNATURE:
        walker.errors.append(f"RSDP at {address:#x}: signature {head[:8]!r}, expected {RSDP_SIGNATURE!r}")
        return None
    if sum(head) & 0xFF:
        walker.errors.append(f"RSDP at {address:#x}: bad checksum (20-byte sum {sum(head) & 0xFF:#04x})")
    rsdp = Rsdp.unpack(head + bytes(RSDP_LENGTH - RSDP_V1_LENGTH))  # ACPI 1.0: no Length, no XSDT
    if rsdp.revision >= RSDP_REVISION and (full := walker.fetch(address, RSDP_LENGTH, "RSDP")) is not None:
        rsdp = Rsdp.unpack(full)
        if sum(full) & 0xFF:
            walker.errors.append(f"RSDP at {address:#x}: bad extended checksum (sum {sum(full) & 0xFF:#04x})")
        if rsdp.length < RSDP_LENGTH:
            walker.errors.append(f"RSDP at {address:#x}: Length {rsdp.length} is less than {RSDP_LENGTH}")
    walker.tables.append(AcpiTableEntry("RSDP", address, RSDP_LENGTH if rsdp.length else RSDP_V1_LENGTH))
    return rsdp


def _read_madt(walker: _Walker, madt: bytes) -> list[int]:
    """APIC IDs of the usable processors; a malformed structure ends the walk with an error."""
    ids, seen, offset = [], set(), HEADER_LENGTH + 8
    while offset + 2 <= len(madt):
        kind, length = madt[offset], madt[offset + 1]
        if length < 2 or offset + length > len(madt):
            walker.errors.append(f"APIC: structure type {kind} at offset {offset:#x} has bad length {length}")
            break
        apic_id = flags = None
        if kind == MADT_LOCAL_APIC and length >= LOCAL_APIC_STRUCT.size:
            _, _, _, apic_id, flags = LOCAL_APIC_STRUCT.unpack_from(madt, offset)
        elif kind == MADT_LOCAL_X2APIC and length >= LOCAL_X2APIC_STRUCT.size:
            _, _, apic_id, flags, _ = LOCAL_X2APIC_STRUCT.unpack_from(madt, offset)
        if flags is not None and flags & (LAPIC_ENABLED | LAPIC_ONLINE_CAPABLE):
            if apic_id in seen:
                walker.errors.append(f"APIC: APIC ID {apic_id} appears twice")
            ids.append(apic_id)
            seen.add(apic_id)
        offset += length
    return ids


def _fadt_pointer(walker: _Walker, fadt: bytes, offset32: int, offset64: int, what: str) -> int:
    """The X_ field when nonzero, else the 32-bit one (as ACPICA does); a mismatch is an error."""
    low, wide = _unpack("<I", fadt, offset32) or 0, _unpack("<Q", fadt, offset64) or 0
    if low and wide and low != wide:
        walker.errors.append(f"FACP: {what} {low:#x} and X_{what} {wide:#x} differ; using X_{what}")
    return wide or low


def _pm1a_cnt_port(walker: _Walker, fadt: bytes) -> int | None:
    """X_PM1a_CNT_BLK when it is a nonzero system-I/O address, else PM1a_CNT_BLK (as ACPICA does)."""
    port = _unpack("<I", fadt, FADT_PM1A_CNT_BLK) or 0
    if len(fadt) >= FADT_X_PM1A_CNT_BLK + Gas.SIZE and (gas := Gas.unpack(fadt, FADT_X_PM1A_CNT_BLK)).address:
        if gas.space_id != GAS_SYSTEM_IO:
            walker.errors.append(f"FACP: X_PM1a_CNT_BLK is in address space {gas.space_id}, not system I/O")
        else:
            if port and port != gas.address:
                wide = gas.address
                walker.errors.append(f"FACP: PM1a_CNT_BLK {port:#x} and X_PM1a_CNT_BLK {wide:#x} differ")
            port = gas.address
    if not port:
        walker.errors.append("FACP: no PM1a_CNT_BLK")
    return port or None


def find_rsdp(read: ReadFn, start: int = BIOS_AREA_START, end: int = BIOS_AREA_END) -> int | None:
    """First 16-byte boundary in [start, end) holding a checksum-valid RSDP (as Linux scans), else None."""
    start = -(-start // 16) * 16
    try:
        area = bytes(read(start, end - start))
    except Exception:  # noqa: BLE001 - part of the range is unreadable: probe each paragraph instead
        area = b""
    for address in range(start, end - len(RSDP_SIGNATURE) + 1, 16):
        if len(area) == end - start and area[address - start : address - start + 8] != RSDP_SIGNATURE:
            continue
        walker = _Walker(read)
        if _read_rsdp(walker, address) is not None and not walker.errors:
            return address
    return None


def read_acpi(read: ReadFn, rsdp_address: int) -> AcpiInfo:
    """Walk the tables from the RSDP as a guest would; never raises for anything guest memory holds.

    ``read(address, size)`` returns guest memory and may raise for a bad address.  Failed reads, bad
    signatures, lengths and checksums become ``errors``; a table with a bad checksum is still decoded.
    The XSDT is walked when the RSDP has one (else the RSDT); the other root, if present, is checked too.
    """
    walker = _Walker(read)
    if (rsdp := _read_rsdp(walker, rsdp_address)) is None:
        return AcpiInfo(rsdp_address=rsdp_address, errors=tuple(walker.errors))
    entries = walker.root_entries(rsdp.xsdt_address, b"XSDT", "<Q") if rsdp.xsdt_address else None
    via_rsdt = None
    if rsdp.rsdt_address or entries is None:
        via_rsdt = walker.root_entries(rsdp.rsdt_address, b"RSDT", "<I")
    if entries is None:
        entries = via_rsdt or []
    elif via_rsdt is not None and via_rsdt != entries:
        walker.errors.append("RSDT and XSDT list different tables")
    found: dict[bytes, bytes] = {}
    for index, address in enumerate(entries):
        if (data := walker.table(address, None, f"root table entry {index}")) is None:
            continue
        if data[:4] in found:
            walker.errors.append(f"second {data[:4].decode('latin-1')!r} table at {address:#x} ignored")
        found.setdefault(data[:4], data)
    info = {"oem_id": rsdp.oem_id.decode("latin-1"), "revision": rsdp.revision}
    if (madt := found.get(b"APIC")) is not None:
        info["lapic_ids"] = tuple(_read_madt(walker, madt))
        info["cpus"] = len(info["lapic_ids"])
    else:
        walker.errors.append("no APIC (MADT) table")
    if (fadt := found.get(b"FACP")) is not None:
        info["pm1a_cnt_port"] = _pm1a_cnt_port(walker, fadt)
        facs = _fadt_pointer(walker, fadt, FADT_FIRMWARE_CTRL, FADT_X_FIRMWARE_CTRL, "FIRMWARE_CTRL")
        if walker.table(facs, FACS_SIGNATURE, "FACS") is not None and facs % FACS_ALIGN:
            walker.errors.append(f"FACS at {facs:#x} is not 64-byte aligned")
        dsdt = walker.table(_fadt_pointer(walker, fadt, FADT_DSDT, FADT_X_DSDT, "DSDT"), b"DSDT", "DSDT")
        if dsdt is not None:
            try:
                info["s5_sleep_type"] = acpi_aml.find_sleep_type_a(dsdt[HEADER_LENGTH:])
            except acpi_aml.AmlDecodeError as exc:
                walker.errors.append(f"DSDT: {exc}")
    else:
        walker.errors.append("no FACP (FADT) table")
    info |= {"tables": tuple(walker.tables), "errors": tuple(walker.errors)}
    return AcpiInfo(rsdp_address=rsdp_address, **info)
