"""BLOCK_IO on the boot disk and the ESP (``--esp DIR``): an EFI application reads the GPT and the
FAT32 volume as a loader with its own file system drivers (GRUB) does; a FAT32 reader here checks
that the volume holds the directory's files under their names."""

from __future__ import annotations

import struct

from hvsim.abi import efi
from hvsim_efi import esp, fat_image, gpt_disk
from hvsim_efi.file_system import ESP_FIRST_LBA, ESP_PARTITION_GUID

from efi_apps import BS, THIS, bs, interface_at, script, scratch, scratch_value

BLOCK_IO_GUID = efi.guid_bytes("964e5b21-6459-11d2-8e39-00a0c969723b")
READ, WRITE = 0x18, 0x20                  # EFI_BLOCK_IO_PROTOCOL slots
HANDLES, DISK, PART, MEDIA_PTR, BUF = 0x40, 0x80, 0x88, 0x90, 0x1000


def esp_dir(tmp_path):
    root = tmp_path / "esp"
    (root / "EFI" / "BOOT").mkdir(parents=True)
    (root / "EFI" / "BOOT" / "grub.cfg").write_text("set timeout=0\n")
    (root / "a long file name with spaces.txt").write_bytes(b"x" * 5000 + b"end")
    (root / "README").write_bytes(b"")
    return root


def test_block_io_reads_the_gpt_and_the_fat_volume_and_refuses_bad_requests(tmp_path):
    size_probe = struct.pack("<Q", 0x40)
    data = BLOCK_IO_GUID + bytes(16) + size_probe
    last_disk_lba = gpt_disk.GptDisk(esp.EspVolume(esp_dir(tmp_path)), ESP_FIRST_LBA, ESP_PARTITION_GUID).total_sectors - 1
    calls = [
        (BS, bs("LocateHandle"), efi.BY_PROTOCOL, scratch(0), 0, scratch(0x20), scratch(HANDLES)),
        (BS, bs("HandleProtocol"), scratch_value(HANDLES), scratch(0), scratch(DISK)),
        (BS, bs("HandleProtocol"), scratch_value(HANDLES + 8), scratch(0), scratch(PART)),
        (interface_at(DISK), READ, THIS, 1, 1, 512, scratch(BUF)),                       # GPT header
        (interface_at(PART), READ, THIS, 1, 0, 1024, scratch(BUF + 0x200)),               # boot sector, FSInfo
        (interface_at(DISK), READ, THIS, 1, ESP_FIRST_LBA, 512, scratch(BUF + 0x600)),    # the same sector
        (interface_at(DISK), READ, THIS, 1, last_disk_lba, 512, scratch(BUF + 0x800)),    # backup header
        (interface_at(DISK), READ, THIS, 1, 5, 0, scratch(BUF)),                          # nothing: success
        (interface_at(DISK), READ, THIS, 2, 1, 512, scratch(BUF)),                        # wrong MediaId
        (interface_at(DISK), READ, THIS, 1, 1, 100, scratch(BUF)),                        # not whole blocks
        (interface_at(DISK), READ, THIS, 1, last_disk_lba, 1024, scratch(BUF)),           # past the end
        (interface_at(DISK), READ, THIS, 1, 1, 512, 0),                                   # no buffer
        (interface_at(PART), WRITE, THIS, 1, 0, 512, scratch(BUF)),                       # read-only medium
    ]
    prepared, result, traced, symbols = script(calls, data=data, esp=str(tmp_path / "esp"))
    assert result.exit_status == 0, result.stop
    assert [c.result for c in traced] == ["EFI_SUCCESS"] * 8 + [
        "EFI_MEDIA_CHANGED", "EFI_BAD_BUFFER_SIZE", "EFI_INVALID_PARAMETER", "EFI_INVALID_PARAMETER",
        "EFI_WRITE_PROTECTED"]
    memory, base = prepared.machine.memory, symbols["scratch"]
    header = memory.read(base + BUF, 92)
    assert header[:8] == b"EFI PART"
    _, _, _, _, _, my_lba, alternate, _, _, _, entries_lba = struct.unpack_from("<8sIIIIQQQQ16sQ", header)
    assert (my_lba, alternate, entries_lba) == (1, last_disk_lba, 2)
    boot = memory.read(base + BUF + 0x200, 512)
    assert boot[82:90] == b"FAT32   " and boot[510:512] == b"\x55\xaa"
    assert struct.unpack_from("<I", boot, 28)[0] == ESP_FIRST_LBA                         # BPB_HiddSec
    assert memory.read(base + BUF + 0x600, 512) == boot
    assert memory.read(base + BUF + 0x800, 8) == b"EFI PART"
    # the partition's media says so, the disk's does not
    disk_media = memory.read(memory.read_u64(memory.read_u64(base + DISK) + 8), 32)
    part_media = memory.read(memory.read_u64(memory.read_u64(base + PART) + 8), 32)
    assert (disk_media[6], part_media[6], part_media[7]) == (0, 1, 1)     # LogicalPartition, ReadOnly
    assert struct.unpack_from("<Q", part_media, 24)[0] == esp.VOLUME_SIZE // 512 - 1


# -- a small FAT32 reader, after the Microsoft FAT specification -----------------------------------------
class Fat32:
    def __init__(self, image: fat_image.FatImage):
        self.image = image
        boot = image.read(0, 1)
        (self.per_cluster, reserved, fats, self.fat_size, self.root) = (
            boot[13], *struct.unpack_from("<H", boot, 14), boot[16], *struct.unpack_from("<I", boot, 36),
            *struct.unpack_from("<I", boot, 44))
        self.data = reserved + fats * self.fat_size
        self.fat = image.read(reserved, self.fat_size)

    def chain(self, cluster: int) -> bytes:
        out = b""
        while 2 <= cluster < 0x0FFFFFF8:
            out += self.image.read(self.data + (cluster - 2) * self.per_cluster, self.per_cluster)
            cluster = struct.unpack_from("<I", self.fat, cluster * 4)[0] & 0x0FFFFFFF
        return out

    def listing(self, cluster: int) -> dict[str, tuple[int, int, int]]:
        """long (else short) name -> (attributes, first cluster, size)"""
        out, long_parts = {}, []
        raw = self.chain(cluster)
        for at in range(0, len(raw), 32):
            entry = raw[at:at + 32]
            if entry[0] == 0:
                break
            if entry[11] == 0x0F:
                units = entry[1:11] + entry[14:26] + entry[28:32]
                long_parts.insert(0, units.decode("utf-16-le").split("\0")[0])
                continue
            short = entry[:8].decode().rstrip() + ("." + entry[8:11].decode().rstrip() if entry[8:11].strip() else "")
            if entry[11] == fat_image.ATTR_VOLUME_ID:
                short = entry[:11].decode().rstrip()
            name = "".join(long_parts) or short
            long_parts = []
            hi, lo, size = struct.unpack_from("<H", entry, 20)[0], struct.unpack_from("<H", entry, 26)[0], \
                struct.unpack_from("<I", entry, 28)[0]
            out[name] = (entry[11], hi << 16 | lo, size)
        return out


def test_the_fat_volume_holds_the_directory_under_its_names(tmp_path):
    root = esp_dir(tmp_path)
    volume = esp.EspVolume(root)
    reader = Fat32(fat_image.FatImage(volume))
    top = reader.listing(reader.root)
    assert top["HVSIM ESP"][0] == fat_image.ATTR_VOLUME_ID
    attributes, cluster, size = top["a long file name with spaces.txt"]
    assert size == 5003 and reader.chain(cluster)[:size] == b"x" * 5000 + b"end"
    assert top["README"][1:] == (0, 0)                                      # empty: no cluster
    efi_dir = top["EFI"]
    assert efi_dir[0] == fat_image.ATTR_DIRECTORY
    boot_dir = reader.listing(reader.listing(efi_dir[1])["BOOT"][1])
    assert set(boot_dir) == {".", "..", "grub.cfg"}
    assert boot_dir[".."][1] == efi_dir[1]
    _, cluster, size = boot_dir["grub.cfg"]
    assert reader.chain(cluster)[:size] == b"set timeout=0\n"
    # a change through the file system is seen at the next read
    volume.writable = True
    entry = volume.resolve((), "README")
    volume.write(entry, 0, b"now with text")
    again = Fat32(reader.image)
    _, cluster, size = again.listing(again.root)["README"]
    assert again.chain(cluster)[:size] == b"now with text"
