"""Damaged images: whatever happens to the first few KB of a valid file, only ImageError comes out."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagegen import (SHT_PROGBITS, damaged_images, Load, build_bzimage, build_elf, build_pe, compress_payload,
                      linux_xen_notes, xen_note)

from hvsim.core.errors import ImageError
from hvsim.image import load_image

_VMLINUX = build_elf(bits=64, entry=0x1000000, loads=[Load(0x1000000, b"\xf4" * 128)],
                     notes=[linux_xen_notes()], symbols={"startup_64": 0x1000000})

BASES = {
    "elf64-linux": _VMLINUX,
    "elf32-pvh": build_elf(bits=32, notes=[xen_note(18, 0x100000, size=4)],
                           symbols={"_start": 0x100000}),
    "elf32-legacy": build_elf(bits=32, sections=[(
        "__xen_guest", SHT_PROGBITS, b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,"
        b"HYPERCALL_PAGE=0x2,FEATURES=!writable_page_tables\0")]),
    "bzimage-xz-pe": build_bzimage(payload=compress_payload("xz", _VMLINUX), pe_entry=0x200),
    "bzimage-gzip": build_bzimage(version=0x020A, payload=compress_payload("gzip", _VMLINUX)),
    "bzimage-lz4": build_bzimage(payload=compress_payload("lz4", _VMLINUX)),
    "bzimage-zstd": build_bzimage(payload=compress_payload("zstd", _VMLINUX)),
    "pe32+": build_pe(),
}
WINDOW = 4096  # mutations land in the first few KB: headers, notes, setup code, payload start




def _exercise(name: str, data: bytes) -> None:
    """Everything a user can call on an image must return or raise ImageError, nothing else."""
    try:
        img = load_image(data, name=name)
    except ImageError as exc:
        assert str(exc).startswith(name), str(exc)
        assert "internal error" not in str(exc), str(exc)
        return
    json.dumps(img.describe())
    assert all(e.kind and e.mode in ("32", "64", "pe") for e in img.entries)
    if img.elf is not None:
        _ = img.elf.symbols, img.elf.phys_range
    if img.bzimage is not None:
        try:
            img.payload_elf()
        except ImageError as exc:
            assert "internal error" not in str(exc), str(exc)


@pytest.mark.parametrize("base", sorted(BASES))
def test_unmodified_bases_load(base):
    img = load_image(BASES[base], name=base)
    assert img.entries
    if img.bzimage is not None and img.bzimage.header.version >= 0x0208:
        assert img.payload_elf().xen_notes is not None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_images(BASES, WINDOW, 8, [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x04]))
def test_damaged_images_only_raise_image_error(case):
    base, data = case
    _exercise(f"fuzz-{base}", data)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(BASES)), st.binary(max_size=64), st.integers(0, WINDOW))
def test_spliced_garbage_only_raises_image_error(base, garbage, position):
    data = BASES[base]
    _exercise(f"splice-{base}", data[:position] + garbage + data[position + len(garbage):])
