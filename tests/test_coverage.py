"""Boot-path coverage on the probe: the code each environment ran, named by the probe's symbols,
split into what ran under one environment only, under every one, and under none."""

from __future__ import annotations

import json

from unicorn import UC_HOOK_BLOCK

from hvsim import MachineConfig
from hvsim.api import Run
from hvsim.cli import main
from hvsim.core.native import NativeCoverage
from hvsim.image import load_image
from hvsim.kernels import probe_path
from hvsim.symbols import SymbolTable


def test_coverage_names_the_code_each_entry_alone_runs(tmp_path, capsys):
    out = tmp_path / "coverage.json"
    status = main(["coverage", str(probe_path("elf")), "--envs", "bare_metal,xen_pvh", "--json", str(out)])
    text = capsys.readouterr().out
    report = json.loads(out.read_text())

    assert status == 0
    assert report["symbols"].endswith("probe.elf .symtab")
    assert {"linux64_entry", "linux64_main"} <= set(report["only"]["bare_metal"])
    assert {"xen_hypercall_init", "xen_console_putc", "xen_shutdown_poweroff"} <= set(report["only"]["xen_pvh"])
    assert "report_print" in report["every"] and "crc32" not in report["only"]["xen_pvh"]
    ran = set(report["columns"]["bare_metal"]["functions"]) | set(report["columns"]["xen_pvh"]["functions"])
    assert report["none"] and not ran & set(report["none"])
    assert len(ran) + len(report["none"]) == report["functions_total"]
    assert all(c["complete"] and c["blocks"] > 100 for c in report["columns"].values())
    assert "only under xen_pvh (" in text and "linux64_main" in text


def test_the_native_block_set_is_what_a_python_block_hook_sees():
    prepared = Run("xen_pvh", probe_path("elf"), MachineConfig())
    native = NativeCoverage(prepared.machine.uc)
    seen: set[int] = set()
    prepared.machine.uc.hook_add(UC_HOOK_BLOCK, lambda uc, address, size, data: seen.add(address))
    assert prepared.execute().stop.kind == "poweroff"
    assert native.addresses() == sorted(seen) and native.complete and len(seen) > 200


def test_a_system_map_names_virtual_and_physical_addresses(tmp_path):
    system_map = tmp_path / "System.map"
    system_map.write_text("ffffffff81000000 T startup_64\nffffffff81000850 t pvh_start_xen\n"
                          "ffffffff81001000 D some_data\nffffffff81002000 T next_function\n")
    elf = load_image(probe_path("elf")).elf
    table = SymbolTable.from_system_map(system_map)
    assert len(table) == 3
    assert table.resolve(0xFFFFFFFF81000860) == "pvh_start_xen" and table.resolve(0x1000) is None
    # the probe's segments are identity-mapped (paddr == vaddr): no physical alias to add
    assert SymbolTable.from_system_map(system_map, elf).resolve(0x1000860) is None
    linux_like = SymbolTable(
        [(0xFFFFFFFF81000000, "startup_64"), (0xFFFFFFFF81000850, "pvh_start_xen")], "test",
        segments=[(0x1000000, 0x100000, 0xFFFFFFFF81000000)])
    assert linux_like.resolve(0x1000851) == "pvh_start_xen"   # run at its physical address, before paging


def test_a_placeholder_system_map_is_refused_in_one_line(tmp_path, capsys):
    placeholder = tmp_path / "System.map"
    placeholder.write_text("ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n")
    assert main(["coverage", "--envs", "bare_metal", "--system-map", str(placeholder)]) == 2
    assert "no code symbols" in capsys.readouterr().err
