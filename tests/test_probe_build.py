"""The probe kernel build: probe/build.py produces a valid ELF, bzImage and PE32+ EFI application,
reproducibly, and the committed images in hvsim.kernels are what the sources build."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from elftools.elf.elffile import ELFFile

from hvsim.kernels import probe_path

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "probe" / "build.py"
LOAD = 0x100000
ENTRY64 = 0x100200
MAX_IMAGE_BYTES = 64 * 1024


def _need_toolchain() -> None:
    missing = [tool for tool in ("gcc", "ld") if shutil.which(tool) is None]
    if not missing:
        return
    names = ", ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the probe kernel cannot be built: not found on PATH: {names}")
    pytest.skip(f"building the probe kernel needs gcc and GNU ld; not found on PATH: {names}")


def _build(out: Path) -> tuple[bytes, bytes, bytes]:
    _need_toolchain()
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--out", str(out)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return tuple((out / f"probe.{kind}").read_bytes() for kind in ("elf", "bzImage", "efi"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[bytes, bytes, bytes]:
    return _build(tmp_path_factory.mktemp("probe"))


def _committed() -> tuple[bytes, bytes, bytes]:
    return tuple(probe_path(kind).read_bytes() for kind in ("elf", "bzImage", "efi"))


def _elf(blob: bytes) -> ELFFile:
    return ELFFile(io.BytesIO(blob))


def _symbol(blob: bytes, name: str):
    symtab = _elf(blob).get_section_by_name(".symtab")
    assert symtab is not None, "probe.elf must keep its .symtab"
    (symbol,) = symtab.get_symbol_by_name(name)
    return symbol


def _flat(elf_blob: bytes) -> tuple[bytes, int]:
    """PT_LOAD file bytes laid out from LOAD, and the memory span including .bss."""
    loads = [s for s in _elf(elf_blob).iter_segments() if s["p_type"] == "PT_LOAD"]
    flat = bytearray(max(s["p_paddr"] + s["p_filesz"] for s in loads) - LOAD)
    for s in loads:
        flat[s["p_paddr"] - LOAD : s["p_paddr"] - LOAD + s["p_filesz"]] = s.data()
    return bytes(flat), max(s["p_paddr"] + s["p_memsz"] for s in loads) - LOAD


def check_elf(blob: bytes) -> None:
    elf = _elf(blob)
    assert elf.elfclass == 64 and elf.little_endian
    assert elf["e_machine"] == "EM_X86_64" and elf["e_type"] == "ET_EXEC"
    assert elf["e_entry"] == ENTRY64
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    assert loads and min(s["p_paddr"] for s in loads) == LOAD
    assert all(s["p_vaddr"] == s["p_paddr"] for s in loads), "the probe is identity-mapped"
    assert _symbol(blob, "linux64_entry")["st_value"] == ENTRY64
    assert len(blob) <= MAX_IMAGE_BYTES


def check_bzimage(bz: bytes, elf_blob: bytes) -> None:
    def u(fmt: str, off: int) -> int:
        return struct.unpack_from("<" + fmt, bz, off)[0]

    setup_sects = bz[0x1F1]
    assert setup_sects >= 1, "0 would mean 4 sectors"
    pm = bz[(setup_sects + 1) * 512 :]
    flat, mem_span = _flat(elf_blob)

    assert u("H", 0x1FE) == 0xAA55
    assert bz[0x200] == 0xEB and 0x202 + bz[0x201] >= 0x26C, "the jump must skip the whole 2.15 header"
    assert bz[0x202:0x206] == b"HdrS"
    assert u("H", 0x206) == 0x020F
    version_at = u("H", 0x20E) + 0x200
    assert version_at < (setup_sects + 1) * 512
    assert bz[version_at:].startswith(b"hvsim-probe 1 ")
    assert bz[0x210] == 0  # type_of_loader
    assert bz[0x211] & 0x01  # LOADED_HIGH
    assert u("I", 0x214) == LOAD  # code32_start
    assert u("I", 0x22C) == 0x7FFFFFFF  # initrd_addr_max
    assert bz[0x234] == 0  # not relocatable: loaded at pref_address
    assert u("I", 0x230) and LOAD % u("I", 0x230) == 0  # kernel_alignment agrees with the load address
    assert u("H", 0x236) & 0x3 == 0x3  # XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    assert u("I", 0x238) == 2047  # cmdline_size
    assert u("Q", 0x258) == LOAD  # pref_address
    assert u("I", 0x1F4) * 16 == len(pm)  # syssize
    init_size = u("I", 0x260)
    assert init_size >= max(mem_span, len(pm)) and init_size % 4096 == 0

    assert pm[: len(flat)] == flat, "the protected-mode part is probe.elf's flat image from 0x100000"
    payload_offset, payload_length = u("I", 0x248), u("I", 0x24C)
    assert payload_offset >= len(flat)
    assert gzip.decompress(pm[payload_offset : payload_offset + payload_length]) == elf_blob

    kernel_info = u("I", 0x268)
    assert pm[kernel_info : kernel_info + 4] == b"LToP"
    assert kernel_info == _symbol(elf_blob, "kernel_info")["st_value"] - LOAD
    assert len(bz) <= MAX_IMAGE_BYTES


def check_efi(efi_blob: bytes, elf_blob: bytes) -> None:
    """A PE32+ x86-64 EFI application, relocations stripped, entered at efi_entry, whose sections
    hold the same code and data as probe.elf (linked at another address)."""
    import pefile

    pe = pefile.PE(data=efi_blob)
    assert pe.OPTIONAL_HEADER.Magic == 0x20B and pe.FILE_HEADER.Machine == 0x8664
    assert pe.OPTIONAL_HEADER.Subsystem == 10
    assert pe.FILE_HEADER.Characteristics & 0x0001           # IMAGE_FILE_RELOCS_STRIPPED
    assert [s.Name.rstrip(b"\0") for s in pe.sections] == [b".text", b".data"]
    assert pe.sections[0].VirtualAddress == 0x1000
    # the same objects linked elsewhere: efi_entry lies as far into .text as in probe.elf
    assert pe.OPTIONAL_HEADER.AddressOfEntryPoint - 0x1000 == _symbol(elf_blob, "efi_entry")["st_value"] - LOAD
    assert len(efi_blob) <= MAX_IMAGE_BYTES


def test_the_build_makes_a_valid_elf_bzimage_and_efi_application(built):
    elf_blob, bz, efi_blob = built
    check_elf(elf_blob)
    check_bzimage(bz, elf_blob)
    check_efi(efi_blob, elf_blob)


def test_the_committed_images_are_valid():
    elf_blob, bz, efi_blob = _committed()
    check_elf(elf_blob)
    check_bzimage(bz, elf_blob)
    check_efi(efi_blob, elf_blob)


def test_rebuilding_gives_identical_bytes(built, tmp_path):
    assert _build(tmp_path) == built


def test_the_committed_images_are_what_the_sources_build(built):
    committed = _committed()
    committed_elf = committed[0]
    ours = _elf(built[0]).get_section_by_name(".comment").data()
    theirs = _elf(committed_elf).get_section_by_name(".comment").data()
    if ours != theirs:
        pytest.skip(f"the committed probe was built by {theirs!r}, this machine has {ours!r}: bytes may differ")
    assert committed == built, "rebuild and commit: python probe/build.py"


def test_the_committed_probe_spin_is_a_self_contained_four_instruction_loop():
    elf_blob = _committed()[0]
    symbol = _symbol(elf_blob, "probe_spin")
    text = _elf(elf_blob).get_section_by_name(".text")
    start = symbol["st_value"] - text["sh_addr"]
    code = text.data()[start : start + symbol["st_size"]]
    insns = list(Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, symbol["st_value"]))

    assert sum(i.size for i in insns) == len(code)
    assert insns[-1].mnemonic == "ret"
    branch = next(i for i in insns if i.mnemonic == "jne")
    loop_start = int(branch.op_str, 16)
    loop = [i for i in insns if loop_start <= i.address <= branch.address]
    assert [i.mnemonic for i in loop] == ["add", "xor", "dec", "jne"]
    assert not any("[" in i.op_str or i.mnemonic == "call" for i in insns), "no memory access, no call"
