"""The stop line of ``hvsim run`` names what a PC has where the guest touched nothing of hvsim's,
and the guest function it stopped in (the ELF's .symtab, or --system-map)."""

from __future__ import annotations

import pytest
from guests import LOAD, mov_rax
from imagegen import Load, build_elf

from hvsim.cli import main
from hvsim.pc_regions import explain, region_at

READ_RAX = b"\x8b\x00"          # mov eax, [rax]


def guest(tmp_path, address: int, symbols=None):
    code = b"\x90" * 16 + mov_rax(address) + READ_RAX
    path = tmp_path / "guest.elf"
    path.write_bytes(build_elf(bits=64, entry=LOAD, loads=[Load(LOAD, code)], symbols=symbols))
    return path


@pytest.mark.parametrize("address, name", [(0xFED00000, "the HPET at 0xfed00000"),
                                           (0xFED40000, "a TPM at 0xfed40000"),
                                           (0xE0000000, "PCI Express configuration space (ECAM/MMCONFIG, "
                                                        "a common base) at 0xe0000000")])
def test_a_bad_access_names_what_a_pc_has_there(tmp_path, capsys, address, name):
    status = main(["run", "--env", "bare_metal", str(guest(tmp_path, address)), "--timeout", "5"])
    err = capsys.readouterr().err
    assert status == 42
    assert f"guest-physical {address:#x} (no RAM or device there); on a PC: {name}, which this machine does " \
           "not model at 0x" in err, err


def test_the_stop_line_names_the_function_from_the_symtab_or_a_system_map(tmp_path, capsys):
    path = guest(tmp_path, 0xFED00000, symbols={"start_here": LOAD, "probe_hpet": LOAD + 16})
    assert main(["run", "--env", "bare_metal", str(path)]) == 42
    assert f"at {LOAD + 26:#x} in probe_hpet: mov eax, dword ptr [rax]" in capsys.readouterr().err
    system_map = tmp_path / "System.map"
    system_map.write_text(f"{LOAD:016x} T first\n{LOAD + 20:016x} t hpet_read\n")
    assert main(["run", "--env", "bare_metal", str(path), "--system-map", str(system_map)]) == 42
    assert "in hpet_read: mov eax" in capsys.readouterr().err
    assert main(["run", "--env", "bare_metal", str(path), "--system-map", str(tmp_path / "none")]) == 2
    assert "--system-map" in capsys.readouterr().err


def test_addresses_outside_the_known_regions_are_not_named():
    assert region_at(0x3000_0000) is None and region_at(0xFEE00FFF).startswith("the local APIC")
    assert explain("read of 4 byte(s) at guest-physical 0x30000000 (no RAM or device there)") is None
    assert explain("no address here") is None
