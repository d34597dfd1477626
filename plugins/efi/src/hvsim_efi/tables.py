"""The tables the firmware hands over: EFI table headers with their CRC32, the configuration-table
array, and an SMBIOS 3.0 entry point with a minimal structure table (types 0, 1, 127).

Sources: UEFI 2.10 §4.2 (EFI_TABLE_HEADER, CRC32 over HeaderSize bytes with the CRC field zero),
§4.6 (EFI_CONFIGURATION_TABLE); DMTF SMBIOS 3.6 §5.2.2 (the "_SM3_" 64-bit entry point), §7.1
(BIOS information), §7.2 (system information), §7.46 (end of table).
"""

from __future__ import annotations

import struct
import zlib

from hvsim.abi import efi

CONFIG_TABLE_CAPACITY = 32
SMBIOS3_ENTRY_FORMAT = "<5sBBBBBBBIQ"      # anchor, checksum, length, major, minor, docrev, revision, reserved, max size, address


def table_header(signature: int, revision: int, size: int) -> bytes:
    return struct.pack(efi.TABLE_HEADER_FORMAT, signature, revision, size, 0, 0)


def with_crc(table: bytes) -> bytes:
    """``table`` (which starts with an EFI_TABLE_HEADER) with its CRC32 field computed."""
    size = struct.unpack_from("<I", table, 0x0C)[0]
    body = bytearray(table[:size])
    body[efi.CRC32_OFFSET:efi.CRC32_OFFSET + 4] = bytes(4)
    struct.pack_into("<I", body, efi.CRC32_OFFSET, zlib.crc32(bytes(body)))
    return bytes(body) + table[size:]


def header_crc_ok(table: bytes) -> bool:
    return with_crc(table) == table


def service_table(signature: int, first_slot: int, stubs: list[int]) -> bytes:
    """A service table (boot or runtime): header, then one pointer per service."""
    size = first_slot + 8 * len(stubs)
    body = table_header(signature, efi.SPECIFICATION_REVISION, size).ljust(first_slot, b"\0")
    body += b"".join(struct.pack("<Q", s) for s in stubs)
    return with_crc(body)


def _strings(*texts: str) -> bytes:
    return b"".join(t.encode("ascii") + b"\0" for t in texts) + b"\0"


def smbios3(structures_at: int) -> tuple[bytes, bytes]:
    """(entry point, structure table): BIOS information, system information, end of table."""
    bios = struct.pack("<BBHBBHBBQ", 0, 0x12, 0x0000, 1, 2, 0xE800, 3, 0, 1 << 3) \
        + _strings("hvsim", "hvsim EFI 0.1", "01/01/2026")
    system = struct.pack("<BBHBBBB16sBBB", 1, 0x1B, 0x0001, 1, 2, 3, 4, bytes(16), 6, 5, 6) \
        + _strings("hvsim", "hvsim machine", "0.1", "0", "hvsim", "hvsim")
    end = struct.pack("<BBH", 127, 4, 0x0002) + b"\0\0"
    structures = bios + system + end
    entry = bytearray(struct.pack(SMBIOS3_ENTRY_FORMAT, b"_SM3_", 0, 0x18, 3, 0, 0, 1, 0,
                                  len(structures), structures_at))
    entry[5] = -sum(entry) & 0xFF
    return bytes(entry), structures


def config_entry(guid: bytes, table: int) -> bytes:
    return guid + struct.pack("<Q", table)
