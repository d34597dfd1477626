"""The conformance matrix on the probe: every installed environment side by side, differences marked,
and the exit status says whether every difference was declared inherent by its plugin."""

from __future__ import annotations

import json
import os
import random
import signal

import pytest

import hvsim_xen_pvh
from hvsim import Acceptance, Environment, InherentDifference, MachineConfig, get_plugin_manager, hookimpl
from hvsim.cli import main
from hvsim.core.layout import MemoryRange, MemoryType, PhysicalLayout
from hvsim.core.plugins import environments
from hvsim.matrix import run_matrix
from hvsim.semantics import COMPARED_FIELDS

MiB = 1 << 20


def matrix_json(tmp_path, capsys, *args) -> tuple[int, dict, str]:
    out = tmp_path / "matrix.json"
    status = main(["matrix", *args, "--json", str(out)])
    text = capsys.readouterr().out
    return status, json.loads(out.read_text()), text


def test_probe_matrix_shows_every_installed_environment_and_no_undeclared_difference(tmp_path, capsys):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(random.Random(5).randbytes(2 * MiB + 3))
    status, data, table = matrix_json(tmp_path, capsys, "--memory", "6G", "--smp", "3", "--initrd", str(initrd),
                                      "--cmdline", "console=ttyS0 matrix ✓")

    assert status == 0, table
    # every installed environment boots one of the probe's builds (efi: probe.efi; the rest: the bzImage)
    installed = set(environments(get_plugin_manager()))
    assert set(data["environments"]) == installed >= {"bare_metal", "xen_pvh", "xen_pv", "efi", "kvm_pvh"}
    assert data["reference"] == "bare_metal" and data["undeclared"] == 0
    config = MachineConfig(memory="6G", smp=3, initrd=initrd, cmdline="console=ttyS0 matrix ✓")
    expected_map = [list(r.to_tuple()) for r in PhysicalLayout.for_config(config).memory_map]
    for env, column in data["environments"].items():
        record = column["semantics"]
        assert column["ok"] and record["kernel"] == "probe", column
        declared = {d["field"] for d in data["differences"] if d["environment"] == env and d["inherent"]}
        assert record["cmdline"] == "console=ttyS0 matrix ✓"
        assert record["memmap"] == expected_map or "memmap" in declared     # a PV domU's is pseudo-physical
        assert record["modules"] == [{"size": 2 * MiB + 3, "crc32": __import__("zlib").crc32(initrd.read_bytes())}]
        assert record["cpus"] == 3 and record["stop"] == "poweroff"
        assert record["sources"]["memmap"] == "probe report" and record["sources"]["calls"] == "events"
    pvh = data["environments"]["xen_pvh"]["semantics"]
    assert pvh["hypervisor"] == "XenVMMXenVMM" and pvh["entry_mode"] == "protected32, paging off"
    assert pvh["calls"]["xen-hypercall:sched_op.shutdown"] == 1
    # every difference is shown, marked inherent, with the plugin's reason, in the table and the JSON
    pvh_diffs = {d["field"]: d for d in data["differences"] if d["environment"] == "xen_pvh"}
    assert {"entry", "entry_mode", "hypervisor", "calls", "module_addresses"} <= set(pvh_diffs)
    assert all(d["inherent"] and d["reason"] for d in pvh_diffs.values())
    assert "~ xen_pvh.entry_mode: PVH enters in 32-bit protected mode" in table
    assert "UNDECLARED" not in table
    headers = [line.split() for line in table.splitlines() if line.startswith("field")]
    assert [env for header in headers for env in header[1:]] == sorted(installed)
    assert all(header[0] == "field" for header in headers)


def test_a_plugin_that_gets_the_memory_map_wrong_is_caught(tmp_path, capsys, monkeypatch):
    def wrong_map(machine):
        ranges = list(machine.layout.memory_map)
        last = ranges[-1]
        return ranges[:-1] + [MemoryRange(last.start, last.size - 0x10000, MemoryType.RAM)]

    monkeypatch.setattr(hvsim_xen_pvh, "guest_memory_map", wrong_map)
    status, data, table = matrix_json(tmp_path, capsys, "--envs", "bare_metal,xen_pvh")

    assert status == 1
    assert [(d["environment"], d["field"]) for d in data["differences"] if not d["inherent"]] == [("xen_pvh", "memmap")]
    assert "! memmap" in table and "* xen_pvh.memmap:" in table
    assert data["environments"]["xen_pvh"]["semantics"]["memmap"][-1][1] == 512 * MiB - 0x100000 - 0x10000


def test_a_failed_or_dead_run_is_a_failed_column_not_a_traceback():
    import hvsim_bare_metal

    class Raises:
        @hookimpl
        def hvsim_environments(self):
            return [Environment("raises", "setup raises")]

        @hookimpl
        def hvsim_accepts(self, env, image):
            return Acceptance.yes("anything") if env == "raises" else None

        @hookimpl
        def hvsim_setup(self, machine, image, config, options):
            raise RuntimeError("the plugin broke")

    class Dies:
        @hookimpl
        def hvsim_environments(self):
            return [Environment("dies", "its process dies")]

        @hookimpl
        def hvsim_accepts(self, env, image):
            return Acceptance.yes("anything") if env == "dies" else None

        @hookimpl
        def hvsim_setup(self, machine, image, config, options):
            os.kill(os.getpid(), signal.SIGKILL)

    pm = get_plugin_manager(load_entrypoints=False, plugins=[hvsim_bare_metal, Raises(), Dies()])
    matrix = run_matrix(pm=pm)

    assert matrix.columns["bare_metal"]["ok"]
    assert matrix.columns["raises"]["error"] == "RuntimeError: the plugin broke"
    assert matrix.columns["dies"]["error"] == "the run's process died (exit code -9)"
    assert {(d.environment, d.field) for d in matrix.undeclared} == {("raises", "run"), ("dies", "run")}
    assert matrix.exit_status == 1


def test_a_declaration_of_an_unknown_field_is_a_plugin_error(capsys):
    import hvsim_bare_metal

    class Sloppy:
        @hookimpl
        def hvsim_environments(self):
            return [Environment("sloppy", "declares a field that does not exist")]

        @hookimpl
        def hvsim_accepts(self, env, image):
            return Acceptance.yes("anything") if env == "sloppy" else None

        @hookimpl
        def hvsim_inherent_differences(self, env):
            return [InherentDifference("e820", "a typo")] if env == "sloppy" else None

    from hvsim.core.errors import PluginError

    pm = get_plugin_manager(load_entrypoints=False, plugins=[hvsim_bare_metal, Sloppy()])
    with pytest.raises(PluginError, match="'e820', which is not a field of the record"):
        run_matrix(pm=pm)


def test_every_compared_field_is_documented_in_the_hook_contract():
    from hvsim.core import hookspecs

    doc = hookspecs.hvsim_inherent_differences.__doc__
    assert all(f"``{name}``" in doc for name in COMPARED_FIELDS)


def test_matrix_usage_errors_are_one_line(capsys):
    assert main(["matrix", "--envs", "bare_metal,nowhere"]) == 2
    assert "unknown environment 'nowhere'" in capsys.readouterr().err


def test_a_reference_that_did_not_finish_is_not_compared_against(tmp_path, capsys):
    from guests import PRINT_THEN_SPIN, elf_guest

    guest = tmp_path / "spin.elf"
    guest.write_bytes(elf_guest(PRINT_THEN_SPIN))
    out = tmp_path / "matrix.json"
    status = main(["matrix", str(guest), "--envs", "bare_metal", "--timeout", "0.5", "--json", str(out)])
    captured = capsys.readouterr()
    data = json.loads(out.read_text())

    assert status == 6
    column = data["environments"]["bare_metal"]
    assert column["ok"] is False and column["error"].startswith("did not finish: the wall-clock budget")
    assert column["semantics"]["stop"] == "timeout"          # the record is kept for reading
    assert data["reference_failure"] == column["error"] and data["exit_status"] == 6
    assert data["schema_version"] >= 2 and data["hvsim_version"]
    assert "the reference bare_metal did not boot to a comparable record: did not finish" in captured.err
    assert "nothing was compared" in captured.err
    assert "NOTHING COMPARED: the reference bare_metal did not boot to a comparable record" in captured.out


def test_a_reference_that_printed_nothing_is_not_compared_against():
    import hvsim_bare_metal
    from hvsim.matrix import REFERENCE_FAILED, not_comparable

    silent = {"ok": True, "error": None, "semantics": {"kernel": "other", "console": "", "stop": "halt"}}
    assert "printed nothing comparable" in not_comparable(silent)
    assert not_comparable({**silent, "semantics": {**silent["semantics"], "console": "hi\n"}}) is None
    pm = get_plugin_manager(load_entrypoints=False, plugins=[hvsim_bare_metal])
    from guests import HALT, elf_guest

    matrix = run_matrix(elf_guest(HALT), MachineConfig(timeout=10), pm=pm)
    assert matrix.reference_failure.startswith("the guest printed nothing comparable")
    assert matrix.exit_status == REFERENCE_FAILED


def test_the_table_fits_the_terminal_with_a_legend_hex_addresses_and_plurals(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    status, data, table = matrix_json(tmp_path, capsys, "--envs", "bare_metal,xen_pvh,xen_pv,efi")

    assert status == 0
    assert max(len(line) for line in table.splitlines()) <= 100, max(table.splitlines(), key=len)
    headers = [line.split() for line in table.splitlines() if line.startswith("field")]
    assert len(headers) >= 2 and [e for h in headers for e in h[1:]] == ["bare_metal", "efi", "xen_pv", "xen_pvh"]
    # every mark the table uses is explained
    assert "marks: ! a field with an undeclared difference; ~ differences all declared" in table
    assert "a cell ending in * differs" in " ".join(table.split())
    # call names are whole (wrapped, never cut)
    calls = data["environments"]["xen_pv"]["semantics"]["calls"]
    longest = max(calls, key=len)
    assert longest in table or longest in "".join(line.strip() for line in table.splitlines())
    assert "…" not in table.split("marks:")[0]
    # the probe's console row says what it held; addresses are hex
    assert "(only the probe report)" in table and "(empty)" not in table.split("marks:")[0]
    assert "0x100000 +0x" in table


def test_the_summary_line_has_correct_plurals(tmp_path, capsys):
    status = main(["matrix", "--envs", "bare_metal", "--json", str(tmp_path / "m.json")])
    assert status == 0
    assert "hvsim: matrix of 1 environment: 0 undeclared differences [exit 0]" in capsys.readouterr().err


def test_only_differences_keeps_the_rows_and_columns_that_differ(tmp_path, capsys, monkeypatch):
    import attrs

    from hvsim.matrix_table import render

    def wrong_map(machine):
        ranges = list(machine.layout.memory_map)
        last = ranges[-1]
        return ranges[:-1] + [MemoryRange(last.start, last.size - 0x10000, MemoryType.RAM)]

    monkeypatch.setattr(hvsim_xen_pvh, "guest_memory_map", wrong_map)
    status, data, table = matrix_json(tmp_path, capsys, "--envs", "bare_metal,kvm_pvh,xen_pvh",
                                      "--only-differences")
    assert status == 1
    rows = [line.split()[1] for line in table.splitlines() if line[:2] in ("! ", "~ ")]
    differing = {d["field"] for d in data["differences"]}
    assert "memmap" in rows and set(rows) == differing
    assert "  cmdline" not in table and "  modules" not in table and "* xen_pvh.memmap:" in table
    assert set(data["environments"]) == {"bare_metal", "kvm_pvh", "xen_pvh"}     # the JSON keeps all
    # an environment without differences loses its column
    matrix = run_matrix(None, MachineConfig(), ["bare_metal", "kvm_pvh", "xen_pvh"])
    only_xen = attrs.evolve(matrix, differences=[d for d in matrix.differences if d.environment == "xen_pvh"])
    text = render(only_xen, width=200, only_differences=True)
    header = next(line.split() for line in text.splitlines() if line.startswith("field"))
    assert header == ["field", "bare_metal", "xen_pvh"]
    kept = [line.split()[1] for line in text.splitlines() if line[:2] in ("! ", "~ ")]
    assert "memmap" in kept and set(kept) == {d.field for d in only_xen.differences}


def test_only_differences_without_any_says_so(tmp_path, capsys):
    status, data, table = matrix_json(tmp_path, capsys, "--envs", "bare_metal", "--only-differences")
    assert status == 0 and not data["differences"]
    assert "no differences: every compared field is the same under bare_metal" in table
    assert not any(line.startswith("field") for line in table.splitlines())
