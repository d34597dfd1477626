"""The ``hvsim`` command line, driven in a subprocess the way a user types it.

Guest console output goes to stdout, hvsim's own lines to stderr, and the exit status of ``run`` says
how the guest stopped (the table in hvsim.core.result).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib

import attrs
import pytest
from guests import (EXIT_CODE, EXIT_OUT_OFFSET, EXIT_WITH_CODE, HALT, LOAD, MARKER, PRINT_THEN_SPIN, SPIN,
                    elf_guest)
from imagegen import build_bzimage

from hvsim import MachineConfig
from hvsim.core.layout import PhysicalLayout
from hvsim.kernels import probe_path
from hvsim.probe_report import parse_probe_exception, parse_probe_report

HVSIM = [sys.executable, "-m", "hvsim.cli"]


@attrs.frozen
class Outcome:
    status: int
    stdout: str
    stderr: str


def _environment(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HVSIM_DEBUG"}
    env.update(extra)
    return env


def hvsim(*args, cwd=None, env=None, timeout=60) -> Outcome:
    """Run ``python -m hvsim.cli ARGS``; output decoded as UTF-8 without newline translation."""
    done = subprocess.run([*HVSIM, *map(str, args)], capture_output=True, cwd=cwd, timeout=timeout,
                          env=env or _environment())
    out = Outcome(done.returncode, done.stdout.decode("utf-8", "surrogateescape"),
                  done.stderr.decode("utf-8", "surrogateescape"))
    assert "Traceback" not in out.stderr, out.stderr
    return out


def summary_line(stderr: str) -> str:
    """hvsim's closing line for a run: ``hvsim: ENV: KIND ... [.. s, exit N]``."""
    lines = [line for line in stderr.splitlines() if not line.startswith("hvsim: trace: ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("hvsim: bare_metal: "), stderr
    return lines[0]


@pytest.fixture
def kernel(tmp_path):
    """Write a tiny ELF guest to a file and return its path."""
    def write(code: bytes, name: str = "guest.elf"):
        path = tmp_path / name
        path.write_bytes(elf_guest(code))
        return path
    return write


# -- run: the probe ---------------------------------------------------------------------------------

def test_run_without_a_kernel_boots_the_probe_and_prints_its_report(tmp_path):
    out = hvsim("run", "--env", "bare_metal", "--memory", "1G", "--smp", "2",
                "--cmdline", "console=ttyS0 café ✓", cwd=tmp_path)

    assert out.status == 0, out.stderr
    report = parse_probe_report(out.stdout)
    assert report.cmdline == "console=ttyS0 café ✓"
    assert report.cpus == 2
    config = MachineConfig(memory="1G")
    assert report.memmap == tuple(r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map)
    line = summary_line(out.stderr)
    assert "poweroff" in line and line.endswith("exit 0]")
    assert not out.stdout.startswith("hvsim:"), "hvsim's own messages belong on stderr"


def test_run_passes_initrd_and_no_acpi(tmp_path):
    data = os.urandom(70_000)
    (tmp_path / "initrd").write_bytes(data)

    out = hvsim("run", "--env", "bare_metal", probe_path("elf"), "--initrd", "initrd", "--no-acpi",
                "--memory", "6G", cwd=tmp_path)

    assert out.status == 0, out.stderr
    report = parse_probe_report(out.stdout)
    assert report.initrd is not None and report.initrd[1:] == (len(data), zlib.crc32(data))
    assert (report.rsdp, report.cpus) == (None, None)


def test_console_script_is_installed_and_runs(tmp_path):
    script = shutil.which("hvsim")
    if script is None:
        if os.environ.get("CI"):
            pytest.fail("the hvsim console script is not on PATH: the package's install is broken")
        pytest.skip("the hvsim console script is not on PATH (hvsim not installed in this environment)")
    done = subprocess.run([script, "run", "--env", "bare_metal"], capture_output=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert parse_probe_report(done.stdout).entry == "linux64"


def test_python_dash_m_without_a_command_is_a_usage_error():
    out = hvsim()

    assert out.status == 2
    assert "usage: hvsim" in out.stderr


# -- run: --json and --trace --------------------------------------------------------------------

def test_json_file_records_the_same_run_the_terminal_showed(tmp_path):
    out = hvsim("run", "--env", "bare_metal", "--cmdline", "probe.fault=pf", "--json", "run.json", cwd=tmp_path)

    assert out.status == 0, out.stderr
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["environment"] == "bare_metal"
    assert saved["stop"]["kind"] == "poweroff" and saved["stop"]["exit_status"] == 0
    assert saved["console"] == out.stdout
    assert parse_probe_report(saved["console"]).cmdline == "probe.fault=pf"
    assert saved["config"]["cmdline"] == "probe.fault=pf" and saved["config"]["memory"] == 512 << 20
    kinds = [e["kind"] for e in saved["events"]]
    assert "Fault" in kinds and kinds[-1] == "Shutdown"
    assert saved["state"]["mode"] == "long64"


def test_trace_prints_every_event_to_stderr(tmp_path):
    out = hvsim("run", "--env", "bare_metal", "--cmdline", "probe.fault=pf", "--trace", cwd=tmp_path)

    assert out.status == 0, out.stderr
    traced = [json.loads(line[len("hvsim: trace: "):]) for line in out.stderr.splitlines()
              if line.startswith("hvsim: trace: ")]
    faults = [e for e in traced if e["kind"] == "Fault"]
    assert [(f["vector"], f["cr2"], f["delivered"]) for f in faults] == [(14, 0x7FFF_0000_0000, True)]
    assert traced[-1]["kind"] == "Shutdown" and traced[-1]["reason"] == "poweroff"
    seen = parse_probe_exception(out.stdout)
    assert seen is not None and seen.vector == 14
    summary_line(out.stderr)


def test_without_trace_stderr_holds_only_the_summary(tmp_path):
    out = hvsim("run", "--env", "bare_metal", "--cmdline", "probe.fault=pf", cwd=tmp_path)

    assert "trace:" not in out.stderr
    summary_line(out.stderr)


# -- envs, inspect, extract -----------------------------------------------------------------------

def test_envs_lists_bare_metal():
    out = hvsim("envs")

    assert out.status == 0
    assert re.search(r"^bare_metal\s+\S", out.stdout, re.MULTILINE), out.stdout
    listed = json.loads(hvsim("envs", "--json").stdout)
    assert "bare_metal" in listed and listed["bare_metal"]["summary"]


def test_inspect_shows_the_linux64_entry_and_that_bare_metal_accepts_it():
    out = hvsim("inspect", probe_path("bzImage"))

    assert out.status == 0, out.stderr
    assert re.search(r"^\s*linux64\s+0x200\b", out.stdout, re.MULTILINE), out.stdout
    assert re.search(r"^\s*bare_metal\s+accepts", out.stdout, re.MULTILINE), out.stdout


def test_inspect_json_parses():
    out = hvsim("inspect", probe_path("bzImage"), "--json")

    assert out.status == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["format"] == "bzimage"
    # PV and PVH: the payload ELF's Xen notes
    assert [e["kind"] for e in report["entries"]] == ["linux64", "xen_pv", "xen_pvh"]
    assert report["environments"]["bare_metal"]["accepted"] is True
    assert report["environments"]["xen_pv"]["accepted"] is True
    assert report["environments"]["bare_metal"]["entry"].startswith("linux64")


def test_inspect_shows_why_bare_metal_refuses_an_old_bzimage(tmp_path):
    old = tmp_path / "old.bzImage"
    old.write_bytes(build_bzimage(version=0x020A))

    out = hvsim("inspect", old, "--json")

    verdict = json.loads(out.stdout)["environments"]["bare_metal"]
    assert verdict["accepted"] is False and "2.10" in verdict["reason"]


def test_extract_writes_the_vmlinux_which_then_runs_to_poweroff(tmp_path):
    out = hvsim("extract", probe_path("bzImage"), "-o", "vmlinux", cwd=tmp_path)

    assert out.status == 0, out.stderr
    vmlinux = (tmp_path / "vmlinux").read_bytes()
    assert vmlinux[:4] == b"\x7fELF"
    assert vmlinux == probe_path("elf").read_bytes()     # the probe bzImage's payload is probe.elf
    ran = hvsim("run", "--env", "bare_metal", "vmlinux", cwd=tmp_path)
    assert ran.status == 0, ran.stderr
    assert parse_probe_report(ran.stdout).entry == "linux64"


def test_extract_from_an_elf_is_refused(tmp_path):
    out = hvsim("extract", probe_path("elf"), "-o", "x", cwd=tmp_path)

    assert out.status == 2
    assert out.stderr.count("\n") == 1 and "not a bzImage" in out.stderr
    assert not (tmp_path / "x").exists()


# -- run: how a guest stops is the exit status ----------------------------------------------------

def test_timeout_stops_a_spinning_guest(kernel, tmp_path):
    path = kernel(SPIN)
    started = time.monotonic()

    out = hvsim("run", "--env", "bare_metal", path, "--timeout", "0.5", "--json", "run.json", cwd=tmp_path)

    assert out.status == 30, out.stderr
    assert "timeout" in summary_line(out.stderr)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["stop"]["kind"] == "timeout"
    assert saved["state"]["registers"]["rip"] == LOAD and saved["state"]["instruction"].startswith("jmp")
    assert 0.5 <= saved["stats"]["wall_seconds"] < 10
    assert time.monotonic() - started < 30


def test_instruction_budget_stops_a_spinning_guest(kernel, tmp_path):
    out = hvsim("run", "--env", "bare_metal", kernel(SPIN), "--max-instructions", "1000", "--json", "run.json",
                cwd=tmp_path)

    assert out.status == 31, out.stderr
    assert "budget" in summary_line(out.stderr)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["stop"]["kind"] == "budget"
    assert saved["stats"]["instructions"] == 1000


def test_hlt_with_interrupts_off_is_halt(kernel):
    out = hvsim("run", "--env", "bare_metal", kernel(HALT))

    assert out.status == 20, out.stderr
    assert "halt" in summary_line(out.stderr)


def test_exit_port_code_becomes_exit_status_1_with_the_code(kernel, tmp_path):
    out = hvsim("run", "--env", "bare_metal", kernel(EXIT_WITH_CODE), "--json", "run.json", cwd=tmp_path)

    assert out.status == 1, out.stderr
    assert f"code {EXIT_CODE}" in summary_line(out.stderr)
    stop = json.loads((tmp_path / "run.json").read_text())["stop"]
    assert (stop["kind"], stop["code"], stop["exit_status"]) == ("exit", EXIT_CODE, 1)


def test_exit_port_write_stops_the_guest_at_the_out_instruction(kernel, tmp_path):
    """The guest stops when it writes the exit port: nothing after the ``out`` runs, and the state
    hvsim shows is the one right after it (runloop: "every stop is synchronous, RIP is exact")."""
    hvsim("run", "--env", "bare_metal", kernel(EXIT_WITH_CODE), "--json", "run.json", cwd=tmp_path)

    registers = json.loads((tmp_path / "run.json").read_text())["state"]["registers"]
    assert registers["rax"] & 0xFFFF_FFFF != MARKER, "the instruction after the exit-port write ran"
    assert registers["rip"] == LOAD + EXIT_OUT_OFFSET + 1


def test_ctrl_c_interrupts_a_spinning_guest(kernel, tmp_path):
    """Ctrl-C ends the run with status 130 even while the guest spins without any exit to hvsim."""
    process = subprocess.Popen([*HVSIM, "run", "--env", "bare_metal", str(kernel(PRINT_THEN_SPIN)),
                                "--timeout", "20", "--json", "run.json"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_environment())
    try:
        assert process.stdout.readline() == b"go\n"     # the guest runs; now it spins in `jmp .`
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("hvsim ignored Ctrl-C while the guest spun (SIGINT never stopped the engine)")
    assert process.returncode == 130, stderr
    assert json.loads((tmp_path / "run.json").read_text())["stop"]["kind"] == "interrupted"


def test_guest_console_that_the_terminal_cannot_encode_does_not_change_how_the_run_ended(tmp_path):
    """A UTF-8 command line echoed by the probe to an ASCII-only stdout: the guest still powered off."""
    out = hvsim("run", "--env", "bare_metal", "--cmdline", "café ✓", cwd=tmp_path,
                env=_environment(PYTHONIOENCODING="ascii"))

    assert out.status == 0, out.stderr
    assert "hvsim-probe: end" in out.stdout


def test_run_under_xen_pvh_with_start_info_version_0():
    out = hvsim("run", "--env", "xen_pvh", "--start-info-version", "0", "--cmdline", "via pvh")

    assert out.status == 0, out.stderr
    assert "entry: pvh\n" in out.stdout and "cmdline: via pvh\n" in out.stdout
    assert out.stderr.startswith("hvsim: xen_pvh: poweroff: poweroff via SCHEDOP_shutdown")


def test_envs_lists_the_installed_environments():
    out = hvsim("envs")
    assert out.status == 0
    assert {"bare_metal", "xen_pvh"} <= {line.split()[0] for line in out.stdout.splitlines()}
