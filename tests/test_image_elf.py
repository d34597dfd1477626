"""ELF kernels: what load_image finds in ELF32/ELF64 files and their Xen notes."""

from __future__ import annotations

import json
import struct

import pytest
from imagegen import (EM_X86_64, SHT_PROGBITS, Load, build_elf, elf_note, linux_xen_notes,
                      xen_note)

from hvsim.abi import xen_elfnote as xn
from hvsim.core.errors import ImageError
from hvsim.image import load_image
from hvsim.image.xen_notes import strtoull

PVH_ENTRY = 0x1000040


def kinds(img):
    return {e.kind: e for e in img.entries}


def test_linux_like_elf64_has_elf_pv_and_pvh_entries():
    data = build_elf(bits=64, entry=0x1000000,
                     loads=[Load(0x1000000, b"\xf4" * 64, vaddr=0xFFFFFFFF81000000, memsz=0x2000)],
                     notes=[linux_xen_notes(entry=0xFFFFFFFF81000100, phys32_entry=PVH_ENTRY)])
    img = load_image(data, name="vmlinux")
    assert img.format == "elf64"
    assert img.elf.machine == EM_X86_64
    assert img.elf.phys_range == (0x1000000, 0x1002000)
    entries = kinds(img)
    assert entries["elf"].address == 0x1000000 and entries["elf"].mode == "64"
    assert entries["xen_pv"].address == 0xFFFFFFFF81000100
    assert entries["xen_pv"].source == "XEN_ELFNOTE_ENTRY"
    assert entries["xen_pvh"].address == PVH_ENTRY and entries["xen_pvh"].mode == "32"
    notes = img.elf.xen_notes
    assert notes.source == "PT_NOTE"
    assert notes.guest_os == "linux" and notes.xen_version == "xen-3.0" and notes.loader == "generic"
    assert notes.virt_base == 0xFFFFFFFF80000000
    assert notes.init_p2m == 0x8000000000
    assert notes.mod_start_pfn == 1
    assert notes.hypercall_page is None
    assert notes.pae == "extended-cr3"
    assert [(f.name, f.required) for f in notes.features] == [
        ("writable_page_tables", True), ("pae_pgdir_above_4gb", False)]
    assert notes.required_features == 1 << xn.XENFEAT_writable_page_tables
    assert notes.supported_features == (1 | 1 << xn.XENFEAT_dom0
                                        | 1 << xn.XENFEAT_pae_pgdir_above_4gb)
    assert notes.raw[xn.XEN_ELFNOTE_L1_MFN_VALID] == (1, 1)
    assert notes.pv_problems() == []


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("size", [4, 8])
@pytest.mark.parametrize("p_align", [0, 1, 4, 8, 0x1000])
def test_phys32_entry_of_4_or_8_bytes_parses_whatever_p_align_says(bits, size, p_align):
    notes = xen_note(xn.XEN_ELFNOTE_GUEST_OS, "XTF") + xen_note(18, PVH_ENTRY, size=size)
    data = build_elf(bits=bits, entry=0x100000, notes=[notes], note_align=p_align)
    img = load_image(data)
    assert img.format == f"elf{bits}"
    assert kinds(img)["xen_pvh"].address == PVH_ENTRY
    assert img.elf.xen_notes.guest_os == "XTF"


def test_phys32_entry_keeps_low_32_bits_of_an_8_byte_value():
    data = build_elf(notes=[xen_note(18, 0xFFFFFFFF_01000850, size=8)])
    assert kinds(load_image(data))["xen_pvh"].address == 0x01000850


def test_pvh_only_kernel_has_no_pv_entry():
    img = load_image(build_elf(notes=[xen_note(18, PVH_ENTRY, size=4)]))
    assert set(kinds(img)) == {"elf", "xen_pvh"}
    assert img.elf.xen_notes.is_pvh and not img.elf.xen_notes.is_pv


def test_pv_entry_falls_back_to_e_entry_without_entry_note():
    img = load_image(build_elf(bits=32, entry=0xC0100000,
                               loads=[Load(0x100000, b"\x90" * 32, vaddr=0xC0100000)],
                               notes=[linux_xen_notes(entry=None, phys32_entry=None)]))
    pv = kinds(img)["xen_pv"]
    assert pv.address == 0xC0100000 and pv.mode == "32"
    assert "e_entry" in pv.source


def test_elf32_with_em_x86_64_is_accepted():
    img = load_image(build_elf(bits=32, machine=EM_X86_64, notes=[xen_note(18, 0x100000, size=4)]))
    assert img.format == "elf32"
    assert img.elf.machine == EM_X86_64 and img.elf.elf_class == 32
    assert kinds(img)["xen_pvh"].address == 0x100000


def test_notes_only_in_sht_note_sections():
    img = load_image(build_elf(notes=[xen_note(18, PVH_ENTRY, size=4)], note_segments=False))
    assert img.elf.xen_notes.source == "SHT_NOTE"
    assert kinds(img)["xen_pvh"].address == PVH_ENTRY


def test_pt_note_with_zero_offset_is_skipped_then_sections_are_used():
    img = load_image(build_elf(notes=[xen_note(18, PVH_ENTRY, size=4)], zero_note_offset=True))
    assert img.elf.xen_notes.source == "SHT_NOTE"


def test_non_xen_owners_are_skipped():
    blob = (elf_note(b"GNU", 3, b"\x11" * 20)            # build id
            + elf_note(b"Xenon", 18, b"\x00\x00\x20\x00")  # similar owner, not Xen
            + elf_note(b"Linux", 1, b"\x01\x00\x00\x00")
            + xen_note(xn.XEN_ELFNOTE_GUEST_OS, "linux"))
    notes = load_image(build_elf(notes=[blob])).elf.xen_notes
    assert dict(notes.raw) == {xn.XEN_ELFNOTE_GUEST_OS: "linux"}


def test_elf_with_only_foreign_notes_has_no_xen_notes():
    img = load_image(build_elf(notes=[elf_note(b"GNU", 3, b"\x22" * 20)]))
    assert img.elf.xen_notes is None
    assert set(kinds(img)) == {"elf"}


def test_numeric_note_of_odd_size_reads_as_zero():
    notes = load_image(build_elf(notes=[xen_note(xn.XEN_ELFNOTE_VIRT_BASE, b"\x01\x02\x03")]))
    assert notes.elf.xen_notes.virt_base == 0


def test_several_pt_note_segments_are_all_read():
    img = load_image(build_elf(notes=[xen_note(6, "linux"), xen_note(18, PVH_ENTRY, size=4)]))
    assert img.elf.xen_notes.guest_os == "linux" and img.elf.xen_notes.phys32_entry == PVH_ENTRY


def test_legacy_xen_guest_section():
    guest = (b"GUEST_OS=linux,GUEST_VER=2.6,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,"
             b"VIRT_ENTRY=0xC0100000,HYPERCALL_PAGE=0x104,PAE=yes[extended-cr3],"
             b"FEATURES=!writable_page_tables|!auto_translated_physmap,LOADER=generic\0")
    img = load_image(build_elf(bits=32, entry=0xC0100000,
                               loads=[Load(0x100000, b"\x90" * 32, vaddr=0xC0100000)],
                               sections=[("__xen_guest", SHT_PROGBITS, guest)]))
    notes = img.elf.xen_notes
    assert notes.source == "__xen_guest"
    assert notes.virt_base == 0xC0000000
    assert notes.hypercall_page == (0x104 << 12) + 0xC0000000
    assert notes.effective_paddr_offset == 0xC0000000  # legacy default: VIRT_BASE
    assert notes.pae == "extended-cr3"
    assert notes.required_features == (1 << xn.XENFEAT_writable_page_tables
                                       | 1 << xn.XENFEAT_auto_translated_physmap)
    pv = kinds(img)["xen_pv"]
    assert pv.address == 0xC0100000 and pv.source == "__xen_guest VIRT_ENTRY"


def test_notes_win_over_legacy_section():
    img = load_image(build_elf(notes=[xen_note(6, "linux")],
                               sections=[("__xen_guest", SHT_PROGBITS, b"GUEST_OS=other\0")]))
    assert img.elf.xen_notes.source == "PT_NOTE" and img.elf.xen_notes.guest_os == "linux"


def test_unknown_required_feature_is_reported():
    notes = load_image(build_elf(notes=[xen_note(10, "!frobnicate|dom0|whatever")])).elf.xen_notes
    assert notes.unknown_required == ("frobnicate",)
    assert notes.supported_features == 1 << xn.XENFEAT_dom0
    assert any("frobnicate" in p for p in notes.pv_problems())


@pytest.mark.parametrize("text,value", [
    ("0x10", 16), ("010", 8), ("10", 10), ("  +7junk", 7), ("", 0), ("zz", 0), ("0x", 0),
    ("-1", (1 << 64) - 1), ("99999999999999999999999", (1 << 64) - 1), ("0xC0000000", 0xC0000000),
])
def test_legacy_numbers_parse_like_strtoull(text, value):
    assert strtoull(text) == value


def test_note_running_past_its_segment_is_an_image_error():
    blob = struct.pack("<III", 4, 0x1000, 18) + b"Xen\0" + b"\0" * 8
    with pytest.raises(ImageError, match="runs past"):
        load_image(build_elf(notes=[blob]), name="bad.elf")


def test_note_count_is_capped_like_libelf():
    blob = struct.pack("<III", 0, 0, 0) * (xn.ELF_MAX_TOTAL_NOTE_COUNT + 1)
    with pytest.raises(ImageError, match="more than 65536 ELF notes"):
        load_image(build_elf(notes=[blob], note_sections=False), name="many.elf")


def test_symbols_are_read_lazily_from_symtab():
    img = load_image(build_elf(symbols={"startup_64": 0x1000000, "hypercall_page": 0x1001000}))
    assert img.elf.symbols == {"startup_64": 0x1000000, "hypercall_page": 0x1001000}
    assert load_image(build_elf()).elf.symbols == {}


@pytest.mark.parametrize("bits", [32, 64])
def test_truncated_elf_is_an_image_error_at_every_cut(bits):
    data = build_elf(bits=bits, notes=[linux_xen_notes()], symbols={"x": 1})
    assert load_image(data).format == f"elf{bits}"
    for cut in range(len(data)):
        with pytest.raises(ImageError) as info:
            load_image(data[:cut], name=f"cut{cut}")
        assert f"cut{cut}" in str(info.value) and "internal error" not in str(info.value)


def test_wrong_machine_and_byte_order_are_refused():
    data = bytearray(build_elf())
    arm = bytes(data[:18]) + struct.pack("<H", 40) + bytes(data[20:])
    with pytest.raises(ImageError, match="e_machine is 40"):
        load_image(arm, name="arm.elf")
    data[5] = 2
    with pytest.raises(ImageError, match="little-endian"):
        load_image(bytes(data), name="be.elf")


def test_segment_past_end_of_file_is_refused():
    data = bytearray(build_elf(bits=64))
    struct.pack_into("<Q", data, 64 + 32, 0x10000)  # PT_LOAD #0 p_filesz
    with pytest.raises(ImageError, match=r"PT_LOAD #0 .* runs past the end"):
        load_image(bytes(data), name="k.elf")


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b"hello world" * 100, "not a kernel image"),
    (b"MZ" + b"\0" * 200, "not a kernel image"),
])
def test_files_that_are_not_kernels(tmp_path, content, message):
    path = tmp_path / "kernel"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file") as info:
        load_image(tmp_path / "nope")
    assert "nope" in str(info.value)
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="expected a path or bytes"):
        load_image(42)  # type: ignore[arg-type]


def test_describe_is_json(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(build_elf(notes=[linux_xen_notes()]))
    summary = load_image(str(path)).describe()
    text = json.dumps(summary)
    assert summary["name"] == str(path) and summary["format"] == "elf64"
    assert summary["elf"]["xen_notes"]["notes"]["PHYS32_ENTRY"] == 0x1000040
    assert "xen_pvh" in text
