"""bzImage and PE32+ files: setup header by protocol version, payloads, EFI stub detection."""

from __future__ import annotations

import json
import struct

import pytest
from imagegen import (COMPRESSIONS, Load, build_bzimage, build_elf, build_pe, compress_payload,
                      linux_xen_notes)

from hvsim.abi import linux_boot as lb
from hvsim.core.errors import ImageError
from hvsim.image import load_image, payload

VMLINUX = build_elf(bits=64, entry=0x1000000,
                    loads=[Load(0x1000000, b"\xf4" * 256, vaddr=0xFFFFFFFF81000000)],
                    notes=[linux_xen_notes(entry=0xFFFFFFFF81000100, phys32_entry=0x1000850)])

#: Field -> first protocol version that has it (boot.rst), for the fields build_bzimage writes.
GATED = {
    "cmd_line_ptr": 0x0202, "initrd_addr_max": 0x0203, "kernel_alignment": 0x0205,
    "relocatable_kernel": 0x0205, "cmdline_size": 0x0206, "hardware_subarch": 0x0207,
    "payload_offset": 0x0208, "payload_length": 0x0208, "setup_data": 0x0209,
    "pref_address": 0x020A, "init_size": 0x020A, "min_alignment": 0x020A,
    "handover_offset": 0x020B, "xloadflags": 0x020C, "kernel_info_offset": 0x020F,
}


def kinds(img):
    return {e.kind: e for e in img.entries}


@pytest.mark.parametrize("version", [0x0202, 0x020A, 0x020C, 0x020F])
def test_setup_header_fields_follow_the_protocol_version(version):
    img = load_image(build_bzimage(version=version, payload=compress_payload("xz", VMLINUX)))
    hdr = img.bzimage.header
    assert img.format == "bzimage" and hdr.version == version
    for field, since in GATED.items():
        value = getattr(hdr, field)
        assert (value is None) == (version < since), (field, value)
    assert hdr.code32_start == 0x100000 and hdr.boot_flag == 0xAA55


def test_protocol_2_02_has_no_64bit_entry_and_no_payload():
    img = load_image(build_bzimage(version=0x0202, payload=compress_payload("gzip", VMLINUX)),
                     name="old")
    assert img.entries == ()
    assert "no payload fields" in img.bzimage.payload_problem
    with pytest.raises(ImageError, match="old: .*no payload fields"):
        img.payload_elf()
    assert img.describe()["payload_error"]


def test_protocol_2_10_has_payload_but_no_xloadflags_entries():
    img = load_image(build_bzimage(version=0x020A, payload=compress_payload("gzip", VMLINUX)))
    assert img.bzimage.header.pref_address == 0x1000000
    assert img.header_entries == ()
    assert set(kinds(img)) == {"xen_pv", "xen_pvh"}


def test_protocol_2_12_entries():
    img = load_image(build_bzimage(version=0x020C, handover_offset=0x190,
                                   payload=compress_payload("xz", VMLINUX)))
    entries = kinds(img)
    assert entries["linux64"].address == 0x200 and entries["linux64"].mode == "64"
    assert entries["efi_handover64"].address == 0x190 + 0x200
    assert "efi_pe" not in entries


def test_protocol_2_15_full_header():
    img = load_image(build_bzimage(version=0x020F, kernel_info_offset=0x1234,
                                   kernel_version="6.1.0-56-amd64 (debian-kernel)"))
    bz = img.bzimage
    assert bz.header.kernel_info_offset == 0x1234
    assert bz.kernel_version_string == "6.1.0-56-amd64 (debian-kernel)"
    assert bz.header.version_str == "2.15"
    assert bz.setup_sects == 4 and bz.pm_offset == 0xA00
    assert bz.pm_data.startswith(b"\xf4")


def test_setup_sects_zero_means_four():
    bz = load_image(build_bzimage(setup_sects=0)).bzimage
    assert bz.header.setup_sects == 0 and bz.setup_sects == 4 and bz.pm_offset == 5 * 512


def test_old_protocol_reads_16_bit_syssize():
    data = bytearray(build_bzimage(version=0x0203))
    data[0x1F6:0x1F8] = b"\xff\xff"  # upper half of syssize: unusable before 2.04
    assert load_image(bytes(data)).bzimage.header.syssize < 0x10000


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_payload_extraction_for_each_compression(kind):
    img = load_image(build_bzimage(payload=compress_payload(kind, VMLINUX), pe_entry=0x4321))
    assert img.bzimage.compression == kind
    vmlinux = img.payload_elf()
    assert vmlinux.entry == 0x1000000 and vmlinux.xen_notes.guest_os == "linux"
    assert img.payload_elf() is vmlinux  # cached
    entries = kinds(img)
    assert set(entries) == {"linux64", "efi_pe", "efi_handover64", "xen_pv", "xen_pvh"}
    assert entries["xen_pvh"].address == 0x1000850 and entries["xen_pvh"].in_payload
    assert entries["xen_pvh"].source.startswith("payload ELF")
    assert not entries["linux64"].in_payload
    summary = json.loads(json.dumps(img.describe()))
    assert summary["bzimage"]["payload"]["compression"] == kind
    assert summary["payload_elf"]["xen_notes"]["pvh"] is True


def test_load_image_does_not_decompress(monkeypatch):
    calls = []
    real = payload.decompress
    monkeypatch.setattr(payload, "decompress", lambda *a, **k: calls.append(1) or real(*a, **k))
    img = load_image(build_bzimage(payload=compress_payload("xz", VMLINUX)))
    assert img.header_entries and calls == []
    assert img.describe(decompress=False)["entries"] and calls == []
    assert kinds(img)["xen_pvh"] and calls == [1]
    img.payload_elf()
    img.describe()
    assert calls == [1]


def test_corrupt_payload():
    compressed = bytearray(compress_payload("xz", VMLINUX))
    compressed[len(compressed) // 2] ^= 0xFF
    img = load_image(build_bzimage(payload=bytes(compressed)), name="corrupt")
    assert set(kinds(img)) == {"linux64", "efi_handover64"}
    with pytest.raises(ImageError, match="corrupt: payload: corrupt xz data"):
        img.payload_elf()
    assert "xz" in img.payload_error
    assert img.describe()["payload_elf"] is None


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_truncated_payload_is_an_image_error(kind):
    compressed = compress_payload(kind, VMLINUX)
    img = load_image(build_bzimage(payload=compressed[:len(compressed) // 2]), name="cut")
    with pytest.raises(ImageError, match=f"cut: payload: .*{kind}"):
        img.payload_elf()


def test_payload_that_is_not_elf():
    img = load_image(build_bzimage(payload=compress_payload("gzip", b"not an elf" * 50)))
    with pytest.raises(ImageError, match="not an ELF file"):
        img.payload_elf()


def test_unknown_compression_and_payload_past_the_end():
    img = load_image(build_bzimage(payload=b"\x00\x11\x22\x33" * 16))
    assert "unknown compression magic 001122" in img.bzimage.payload_problem
    img = load_image(build_bzimage(payload=compress_payload("xz", VMLINUX), payload_length=1 << 30))
    assert "runs past" in img.bzimage.payload_problem
    with pytest.raises(ImageError, match="runs past"):
        img.payload_elf()


@pytest.mark.parametrize("offset,fmt,value,message", [
    (0x1FE, "H", 0x1234, "not a kernel image"),              # boot_flag
    (0x202, "I", 0x12345678, "not a kernel image"),          # "HdrS"
    (0x1F4, "I", 0x100000, "truncated: syssize"),            # syssize beyond the file
    (0x206, "H", 0x0105, "older than boot protocol 2.00"),   # version
    (0x1F1, "B", 200, "setup_sects 200"),                    # setup beyond the file
])
def test_bad_setup_headers(offset, fmt, value, message):
    data = bytearray(build_bzimage())
    struct.pack_into("<" + fmt, data, offset, value)
    with pytest.raises(ImageError, match=message) as info:
        load_image(bytes(data), name="bz")
    assert str(info.value).startswith("bz: ")


def test_truncated_bzimage_is_an_image_error_at_many_cuts():
    data = build_bzimage(payload=compress_payload("gzip", VMLINUX), pe_entry=0x100)
    for cut in list(range(0, 0x300, 7)) + list(range(0x300, len(data), 97)):
        with pytest.raises(ImageError):
            load_image(data[:cut])


def test_bzimage_with_efi_stub():
    img = load_image(build_bzimage(pe_entry=0x7CDA97))
    assert img.format == "bzimage"
    assert img.pe.is_bzimage and img.pe.is_pe32_plus and img.pe.machine_name == "x86_64"
    efi = kinds(img)["efi_pe"]
    assert efi.address == 0x7CDA97 and efi.mode == "pe" and efi.source == "PE AddressOfEntryPoint"


def test_pe32_plus_efi_application():
    img = load_image(build_pe(entry_rva=0x1010), name="BOOTX64.EFI")
    assert img.format == "pe32+"
    assert not img.pe.is_bzimage and img.pe.subsystem == 10
    assert [s.name for s in img.pe.sections] == [".text"]
    assert img.entries[0].kind == "efi_pe" and img.entries[0].address == 0x1010
    assert json.dumps(img.describe())


@pytest.mark.parametrize("kwargs,message", [
    (dict(magic=0x10B, machine=0x14C), "PE32"),
    (dict(machine=0xAA64), "arm64"),
])
def test_pe_images_an_x64_firmware_cannot_start(kwargs, message):
    with pytest.raises(ImageError, match=message):
        load_image(build_pe(**kwargs), name="x.efi")


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_decompress_ignores_trailing_bytes(kind):
    data = b"kernel" * 1000
    assert payload.decompress(kind, compress_payload(kind, data) + b"\xde\xad\xbe\xef") == data
    assert payload.detect(compress_payload(kind, data)) == kind


def test_decompress_limit_and_unknown_kind():
    with pytest.raises(ImageError, match="more than 1000 bytes"):
        payload.decompress("gzip", compress_payload("gzip", b"\0" * 5000), limit=1000)
    with pytest.raises(ImageError, match="unknown compression 'lzo'"):
        payload.decompress("lzo", b"")


def test_setup_header_pack_round_trip():
    data = build_bzimage(version=0x020C)
    hdr = lb.SetupHeader.parse(data)
    page = bytearray(lb.BOOT_PARAMS_SIZE)
    hdr.pack_into(page)
    assert lb.SetupHeader.parse(bytes(page)) == hdr
    assert struct.unpack_from("<I", page, 0x264)[0] == hdr.handover_offset
    assert struct.unpack_from("<I", page, 0x268)[0] == 0  # 2.15 field not written for 2.12


def test_truncated_pe_is_an_image_error_at_many_cuts():
    data = build_pe()
    for cut in list(range(0, 0x200, 3)) + list(range(0x200, len(data), 17)):
        with pytest.raises(ImageError) as info:
            load_image(data[:cut], name="cut.efi")
        assert "internal error" not in str(info.value)
