"""Function names from a kernel's own kallsyms tables (hvsim.kallsyms): a synthetic image laid out
as scripts/kallsyms.c lays it out, and Debian's vmlinux against its System.map (marker linux)."""

from __future__ import annotations

import struct

import attrs
import pytest
from linux_kernel import debian_vmlinuz

from hvsim.image import load_image
from hvsim.kallsyms import read_kallsyms
from hvsim.symbols import SymbolTable

BASE = 0xFFFFFFFF81000000


@attrs.frozen
class Seg:
    vaddr: int
    data: bytes
    paddr: int = 0x1000000
    memsz: int = 0x100000
    flags: int = 5                 # PF_R | PF_X


def pad8(blob: bytearray) -> None:
    blob.extend(b"\x00" * (-len(blob) % 8))


def kallsyms_blob(symbols, absolute_percpu=True, big_name=False) -> bytes:
    """``symbols`` (address, type, name) as scripts/kallsyms.c emits them, tokens one per byte
    value (tokens for unused byte values are two-character strings, as the compressor makes)."""
    used = sorted({c for _, t, n in symbols for c in (t + n).encode()})
    tokens = [bytes([c]) for c in used]
    filler = (bytes([a, b]) for a in b"abcdefghijklmnopqrstuvwxyz" for b in b"abcdefghijklmnopqrstuvwxyz0123456789")
    while len(tokens) < 256:
        tokens.append(next(filler))
    number = {t[0]: i for i, t in enumerate(tokens[:len(used)])}
    blob = bytearray(b"\xaa" * 24)                          # unrelated data before the tables
    pad8(blob)
    for address, _, _ in symbols:                           # kallsyms_offsets
        if absolute_percpu:
            offset = address if address < 0x80000000 else BASE - 1 - address
        else:
            offset = address - BASE
        blob += struct.pack("<i", offset)
    pad8(blob)
    blob += struct.pack("<Q", BASE) + struct.pack("<I", len(symbols))
    pad8(blob)
    names_at = len(blob)
    starts = []
    for _, kind, name in symbols:                          # kallsyms_names
        starts.append(len(blob) - names_at)
        encoded = bytes(number[c] for c in (kind + name).encode())
        if len(encoded) > 127:
            blob += bytes([0x80 | (len(encoded) & 0x7F), len(encoded) >> 7])
        else:
            blob.append(len(encoded))
        blob += encoded
    pad8(blob)
    blob += b"".join(struct.pack("<I", starts[i]) for i in range(0, len(symbols), 256))   # markers
    pad8(blob)
    table_at = len(blob)
    index = []
    for token in tokens:                                   # kallsyms_token_table
        index.append(len(blob) - table_at)
        blob += token + b"\x00"
    pad8(blob)
    blob += struct.pack("<256H", *index)                   # kallsyms_token_index
    blob += b"\x55" * 40
    return bytes(blob)


def sample_symbols(count=600):
    symbols = [(0x1000, "A", "per_cpu_thing")]
    symbols += [(BASE + 0x10 * i, "t" if i % 3 else "T", f"function_{i}") for i in range(count)]
    symbols.append((BASE + 0x10 * count, "T", "a_" + "very_long_name_" * 10))  # > 127 tokens
    return symbols


@pytest.mark.parametrize("absolute_percpu", [True, False])
def test_names_and_addresses_decode_from_the_tables(absolute_percpu):
    symbols = sample_symbols()
    if not absolute_percpu:
        symbols = symbols[1:]
    found = read_kallsyms([Seg(BASE - 0x1000, kallsyms_blob(symbols, absolute_percpu))])
    assert found == symbols


def test_a_segment_without_tables_names_nothing():
    blob = bytearray(kallsyms_blob(sample_symbols()))
    blob[-40 - 512 + 6] ^= 0xFF                               # token 3's index no longer increases
    assert read_kallsyms([Seg(BASE - 0x1000, bytes(blob))]) is None
    assert read_kallsyms([Seg(BASE, b"\x00" * 4096)]) is None


def test_a_marker_that_disagrees_rejects_the_candidate():
    symbols = sample_symbols()
    blob = bytearray(kallsyms_blob(symbols))
    assert read_kallsyms([Seg(BASE - 0x1000, bytes(blob))]) is not None
    second = sum(1 + len(t + n) for _, t, n in symbols[:256])       # entry 256's offset in the names
    at = blob.rindex(struct.pack("<I", 0) + struct.pack("<I", second))  + 4    # markers 0 and 1
    blob[at] ^= 1
    assert read_kallsyms([Seg(BASE - 0x1000, bytes(blob))]) is None


def test_the_symbol_table_falls_back_to_kallsyms_for_code_only():
    segment = Seg(BASE - 0x1000, kallsyms_blob(sample_symbols()))

    class Elf:
        segments = [segment]
        symbols: dict = {}

    table = SymbolTable.from_image_elf(Elf(), "img")
    assert table.source == "img kallsyms" and "per_cpu_thing" not in table.names
    assert table.resolve(BASE + 0x25) == "function_2"


@pytest.mark.linux
def test_debian_vmlinux_names_match_its_system_map():
    vmlinuz = debian_vmlinuz()
    elf = load_image(vmlinuz).payload_elf()
    assert not elf.symbols                                   # Debian strips .symtab
    found = read_kallsyms(elf.segments)
    assert found is not None and len(found) > 50_000
    mapped = set()
    for line in vmlinuz.with_name("System.map").read_text().splitlines():
        address, kind, name = line.split()[:3]
        if kind in "tT":
            mapped.add((int(address, 16), kind, name))
    text = {s for s in found if s[1] in "tT"}
    assert text == mapped
    sample = {name: address for address, kind, name in found}
    assert sample["startup_64"] == 0xFFFFFFFF81000000
    table = SymbolTable.from_image_elf(elf, "vmlinux")
    assert table.source == "vmlinux kallsyms"
    assert table.resolve(sample["start_kernel"] + 3) == "start_kernel"
    assert table.resolve(sample["start_kernel"] - 0xFFFFFFFF80000000) == "start_kernel"  # physical


def test_a_system_map_of_another_build_is_flagged(tmp_path):
    segment = Seg(BASE - 0x1000, kallsyms_blob(sample_symbols()))

    class Elf:
        segments = [segment]
        symbols: dict = {}
        entry = 0x1000000

    good = tmp_path / "good.map"
    good.write_text(f"{BASE + 0x20:016x} T function_2\n{BASE + 0x10:016x} t function_1\n")
    assert SymbolTable.from_system_map(good, Elf()).mismatch is None
    other = tmp_path / "other.map"
    other.write_text(f"{BASE + 0x30:016x} T start_kernel\n{BASE:016x} T function_0\n")
    assert SymbolTable.from_system_map(other, Elf()).mismatch is None     # start_kernel: not in the image
    shifted = tmp_path / "shifted.map"
    shifted.write_text(f"{BASE + 0x1000:016x} T startup_64\n{BASE - 0x1000:016x} D linux_banner\n")

    class Linux(Elf):
        segments = [Seg(BASE - 0x1000, b"Linux version 6.1\x00".ljust(24, b"\x00") + kallsyms_blob(
            [(BASE, "T", "startup_64"), *sample_symbols()[1:]])[24:])]

    why = SymbolTable.from_system_map(shifted, Linux()).mismatch
    assert why == f"startup_64 is {BASE + 0x1000:#x} in the map, {BASE:#x} in the image's kallsyms"
    shifted.write_text(f"{BASE:016x} T startup_64\n{BASE - 0x1000 + 1:016x} D linux_banner\n")
    why = SymbolTable.from_system_map(shifted, Linux()).mismatch
    assert why.startswith(f"its linux_banner {BASE - 0x1000 + 1:#x} holds b'inux version 6' in the image")


@pytest.mark.linux
def test_the_run_warns_of_a_system_map_from_another_build(tmp_path, capsys):
    from hvsim.cli import main

    vmlinuz = debian_vmlinuz()
    lines = vmlinuz.with_name("System.map").read_text().splitlines()
    shifted = tmp_path / "System.map"
    shifted.write_text("".join(f"{int(a, 16) + 0x1000:016x} {t} {n}\n"
                               for a, t, n in (line.split()[:3] for line in lines)))
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(load_image(vmlinuz).payload_elf().data)
    main(["run", "--env", "xen_pvh", str(vmlinux), "--timeout", "0.05", "--system-map", str(shifted)])
    err = capsys.readouterr().err
    assert f"hvsim: warning: --system-map {shifted} does not match" in err
    assert "startup_64 is 0xffffffff81001000 in the map, 0xffffffff81000000 in the image's kallsyms" in err
    capsys.readouterr()
    main(["run", "--env", "xen_pvh", str(vmlinux), "--timeout", "0.05",
          "--system-map", str(vmlinuz.with_name("System.map"))])
    assert "warning" not in capsys.readouterr().err
