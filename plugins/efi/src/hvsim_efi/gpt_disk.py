"""The boot disk holding the ESP, as sectors: a protective MBR, a GPT, and the FAT32 volume.

UEFI 2.10 §5.2.3 (protective MBR: one partition record of type 0xEE from LBA 1 over the disk, the
0xAA55 signature), §5.3.2 (GPT header at LBA 1, its backup at the last LBA, CRC32 of the header and
of the entry array), §5.3.3 (128 entries of 128 bytes from LBA 2, the backup array before the backup
header).  The one partition is the ESP (type C12A7328-F81F-11D2-BA4B-00A0C93EC93B) at
``file_system.ESP_FIRST_LBA``, the same start, size and GUID the ESP handle's hard-drive device path
node gives, followed by 1 MiB of unpartitioned space that holds the backup GPT.
"""

from __future__ import annotations

import struct
import zlib

from hvsim.abi import efi

from . import esp as fat
from .fat_image import SECTOR, FatImage

GPT_SIGNATURE = b"EFI PART"
GPT_REVISION = 0x00010000
GPT_HEADER_FORMAT = "<8sIIIIQQQQ16sQIII"      # §5.3.2 Table 5-5, 92 bytes
GPT_HEADER_SIZE = struct.calcsize(GPT_HEADER_FORMAT)
GPT_ENTRY_FORMAT = "<16s16sQQQ72s"            # §5.3.3 Table 5-6, 128 bytes
GPT_ENTRIES, GPT_ENTRY_SIZE = 128, 128
ENTRY_ARRAY_SECTORS = GPT_ENTRIES * GPT_ENTRY_SIZE // SECTOR          # 32
PROTECTIVE_MBR_TYPE = 0xEE
ESP_TYPE_GUID = efi.guid_bytes("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
DISK_GUID = efi.guid_bytes("6e9b4f3e-7a5c-4c2f-9a1d-68767369d15c")    # hvsim's boot disk
PARTITION_NAME = "EFI System Partition"
TRAILING_SECTORS = 2048


class GptDisk:
    """Sectors of the whole disk; ``partition`` is the ESP's FAT32 volume at ``first_lba``."""

    def __init__(self, volume: fat.EspVolume, first_lba: int, partition_guid: bytes):
        self.first_lba = first_lba
        self.partition = FatImage(volume, hidden_sectors=first_lba)
        self.partition_sectors = self.partition.total_sectors
        self.total_sectors = first_lba + self.partition_sectors + TRAILING_SECTORS
        last = self.total_sectors - 1
        entry = struct.pack(GPT_ENTRY_FORMAT, ESP_TYPE_GUID, partition_guid, first_lba,
                            first_lba + self.partition_sectors - 1, 0,
                            PARTITION_NAME.encode("utf-16-le").ljust(72, b"\0"))
        entries = entry.ljust(GPT_ENTRIES * GPT_ENTRY_SIZE, b"\0")
        first_usable, last_usable = 2 + ENTRY_ARRAY_SECTORS, last - 1 - ENTRY_ARRAY_SECTORS
        primary = self._header(1, last, first_usable, last_usable, 2, zlib.crc32(entries))
        backup = self._header(last, 1, first_usable, last_usable, last - ENTRY_ARRAY_SECTORS, zlib.crc32(entries))
        mbr = bytearray(SECTOR)
        struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\x00\x02\x00", PROTECTIVE_MBR_TYPE, b"\xff\xff\xff", 1,
                         min(last, 0xFFFF_FFFF))
        mbr[510:512] = b"\x55\xAA"
        self.head = bytes(mbr) + primary + entries                     # LBA 0 .. 33
        self.tail_at = last - ENTRY_ARRAY_SECTORS
        self.tail = entries + backup                                   # the last 33 LBAs

    @staticmethod
    def _header(my_lba, alternate, first_usable, last_usable, entries_lba, entries_crc) -> bytes:
        fields = [GPT_SIGNATURE, GPT_REVISION, GPT_HEADER_SIZE, 0, 0, my_lba, alternate, first_usable,
                  last_usable, DISK_GUID, entries_lba, GPT_ENTRIES, GPT_ENTRY_SIZE, entries_crc]
        fields[3] = zlib.crc32(struct.pack(GPT_HEADER_FORMAT, *fields))
        return struct.pack(GPT_HEADER_FORMAT, *fields).ljust(SECTOR, b"\0")

    def read(self, lba: int, count: int) -> bytes:
        """``count`` sectors from ``lba`` (the caller checked the range)."""
        out = bytearray()
        end = lba + count
        while lba < end:
            if lba < len(self.head) // SECTOR:
                n = min(end, len(self.head) // SECTOR) - lba
                piece = self.head[lba * SECTOR:(lba + n) * SECTOR]
            elif self.first_lba <= lba < self.first_lba + self.partition_sectors:
                n = min(end, self.first_lba + self.partition_sectors) - lba
                piece = self.partition.read(lba - self.first_lba, n)
            elif lba >= self.tail_at:
                n = end - lba
                piece = self.tail[(lba - self.tail_at) * SECTOR:(lba - self.tail_at + n) * SECTOR]
            else:
                stop = self.first_lba if lba < self.first_lba else self.tail_at
                n = min(end, stop) - lba
                piece = bytes(n * SECTOR)
            out += piece
            lba += n
        return bytes(out)
