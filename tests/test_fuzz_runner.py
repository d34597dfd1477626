"""The fuzz/ campaign runner, run the way CI and a user run it: a bounded campaign per target (a few
dozen to a few hundred cases, well under 30 s in all) must end with no finding, and the harness must
catch each kind of finding it claims to report (an exception, a hang, a memory-cap hit, a child that
dies by a signal), each in its own child process.  Also a hypothesis test of EFI service argument
decoding through the runner's corpus app (the image and hypercall ones are test_image_fuzz.py and
test_xen_pv_fuzz.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "fuzz" / "run.py"
SEED = int(os.environ.get("HVSIM_FUZZ_SEED", "0"))


def _runner_module():
    spec = importlib.util.spec_from_file_location("hvsim_fuzz_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _campaign(tmp_path, *args) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(RUNNER), *args, "--json", str(report),
                           "--failures", str(tmp_path / "failures")],
                          capture_output=True, text=True, timeout=120)
    return proc, json.loads(report.read_text())


@pytest.mark.parametrize("target, cases", [("image", 150), ("xen-hypercall", 25), ("efi-service", 30)])
def test_bounded_campaign_finds_nothing(tmp_path, target, cases):
    proc, report = _campaign(tmp_path, "--target", target, "--cases", str(cases), "--seed", str(SEED),
                             "--case-timeout", "15")
    (result,) = report["targets"]
    assert proc.returncode == 0, (proc.stdout, proc.stderr, result["findings"])
    assert result["target"] == target and result["cases"] == cases == sum(result["outcomes"].values())
    assert (result["exceptions"], result["host_errors"], result["hangs"], result["crashes"],
            result["memory_cap_hits"], result["oracle_failures"]) == (0, 0, 0, 0, 0, 0)
    assert 10 * 1024 < result["peak_rss_kib"] < 2 * 1024 * 1024
    assert f"{target}: {cases} cases" in proc.stdout
    if target == "image":       # mutations both load and get refused: the campaign reaches both sides
        assert {"loaded", "refused"} <= set(result["outcomes"])
    else:                       # runs end in guest-visible stops, never host ones
        assert all(k.startswith("stop:") and k != "stop:host-error" for k in result["outcomes"])


def test_the_harness_reports_each_kind_of_finding(tmp_path):
    cases = 18
    proc, report = _campaign(tmp_path, "--target", "selftest", "--cases", str(cases), "--seed", "3",
                             "--case-timeout", "1", "--memory-cap", "1024")
    (result,) = report["targets"]
    module = _runner_module()
    target = module.SelfTestTarget(None)
    kinds = Counter(target.generate(module._case_rng("selftest", 3, i))["kind"] for i in range(cases))
    assert min(kinds[k] for k in ("raise", "hang", "allocate", "signal")) >= 1, kinds   # the seed covers all
    assert proc.returncode == 1
    assert result["exceptions"] == kinds["raise"]
    assert result["hangs"] == kinds["hang"]
    assert result["memory_cap_hits"] == kinds["allocate"]
    assert result["crashes"] == kinds["signal"]
    assert result["outcomes"].get("refused", 0) == kinds["hvsim-error"]     # an HvsimError is no finding
    assert any("ValueError: selftest" in s for s in result["distinct_findings"])
    saved = sorted(p.name for p in (tmp_path / "failures").glob("selftest-3-*.json"))
    assert saved and all(json.loads((tmp_path / "failures" / n).read_text())["kind"] for n in saved)
    assert result["slowest_case_seconds"] < 5         # the hang was cut at the cap


def test_cases_are_reproducible_from_seed_and_index():
    module = _runner_module()
    for cls in (module.ImageTarget, module.XenHypercallTarget, module.EfiServiceTarget):
        target = cls(ROOT / "fuzz" / "corpus")
        first = [target.generate(module._case_rng(target.name, 7, i)) for i in range(5)]
        again = [target.generate(module._case_rng(target.name, 7, i)) for i in range(5)]
        assert first == again and first[0] != first[1]


def test_a_bad_json_path_is_refused_before_the_campaign(tmp_path):
    (tmp_path / "file").write_text("")
    proc = subprocess.run([sys.executable, str(RUNNER), "--target", "image", "--cases", "1",
                           "--json", str(tmp_path / "file" / "report.json")], capture_output=True, text=True)
    assert proc.returncode != 0 and "image:" not in proc.stdout


_EFI = None


def _efi_target():
    global _EFI
    if _EFI is None:
        module = _runner_module()
        _EFI = module.EfiServiceTarget(ROOT / "fuzz" / "corpus")
    return _EFI


@st.composite
def _efi_rows(draw):
    target = _efi_target()
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        table, slot = draw(st.sampled_from(target.slots))
        args = draw(st.lists(st.one_of(
            st.sampled_from([0, 1, 8, 0x1000, (1 << 64) - 1, 1 << 63, 0x0000_7000_DEAD_0000,
                             0xFEEF << 48, 0xFEEC << 48, 0xFEEB << 48]),
            st.integers(0, 0x8000).map(lambda o: 0xFEED << 48 | o),
            st.integers(0, (1 << 64) - 1)), min_size=10, max_size=10))
        rows.append([table, slot, *args])
    return rows


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_efi_rows())
def test_random_efi_service_calls_end_in_a_guest_visible_stop(rows):
    target = _efi_target()
    report = target.execute({"rows": rows})
    assert report["outcome"] != "stop:host-error", report
    assert report["calls"] >= 1 and "oracle" not in report


def test_in_a_batch_each_finding_is_the_case_that_caused_it(tmp_path):
    """All 18 selftest cases offered to one child: a hang or a crash ends that child, is charged to
    the case it had started, and the cases after it still run (in a new child)."""
    cases = 18
    proc, report = _campaign(tmp_path, "--target", "selftest", "--cases", str(cases), "--seed", "3",
                             "--case-timeout", "1", "--memory-cap", "1024", "--batch", str(cases))
    (result,) = report["targets"]
    module = _runner_module()
    target = module.SelfTestTarget(None)
    kinds = [target.generate(module._case_rng("selftest", 3, i))["kind"] for i in range(cases)]
    expected = {"raise": "exception", "hang": "hang", "allocate": "memory-cap", "signal": "crash"}
    assert result["cases"] == cases == sum(result["outcomes"].values())
    assert result["findings"] and all(f["kind"] == expected[kinds[f["index"]]] for f in result["findings"])
    assert result["outcomes"].get("ok", 0) == kinds.count("ok")
    assert sum(1 for f in result["findings"] if f["kind"] in ("hang", "crash")) == min(3, kinds.count("hang")) \
        + min(3, kinds.count("signal"))


@pytest.mark.parametrize("index", [330, 442, 738])
def test_the_xen_hypercall_finding_of_seed_1_now_ends_in_the_guests_hlt(index):
    """The campaign's open finding: after ~2,400 random hypercalls a multicall writes its results over
    the guest's own page tables, the guest reaches its final ``hlt`` through the TLB entry it still
    holds, and the run used to end as a host error ("stopped at 0x100032 for no known reason").  Run
    to its end (a generous wall-clock cap, so a loaded machine cannot turn it into a timeout): the
    PV kernel may not execute ``hlt`` (ring 1; Xen does not emulate it), and with no trap table the
    #GP there crashes the domain, as on Xen."""
    from hvsim import MachineConfig
    from hvsim.api import Run

    module = _runner_module()
    target = module.XenHypercallTarget(ROOT / "fuzz" / "corpus")
    case = target.generate(module._case_rng("xen-hypercall", 1, index))
    result = Run("xen_pv", target.guest(case), MachineConfig(memory="64M", timeout=60),
                 options={"dom0": case["dom0"]}).execute()
    assert result.stop.kind == "crash", result.stop
    assert result.stop.detail.startswith("domain crash: #GP at 0x100031 with no handler"), result.stop
    assert any(e.kind == "Call" and e.name == "multicall" and e.result == -14 for e in result.events)
