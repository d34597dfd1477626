"""hvsim's pytest plugin, as a plugin author uses it: the conformance suite pointed at an environment
with ``--hvsim-env``, failing when the environment is wrong, and the fixtures in the author's tests."""

# In a subprocess: an in-process run would drop the modules it imported, and a second run would mix
# two copies of hvsim's classes.

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_the_conformance_suite_passes_for_the_example_plugin(pytester):
    result = pytester.runpytest_subprocess("--pyargs", "hvsim.conformance", "--hvsim-env", "kvm_pvh", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=13)
    assert "kvm_pvh" in "\n".join(pytester.runpytest_subprocess("--pyargs", "hvsim.conformance", "--hvsim-env", "kvm_pvh",
                                                     "--collect-only", "-q").outlines)


def test_the_conformance_suite_catches_a_wrong_memory_map(pytester):
    pytester.makeconftest('''
import pytest
import hvsim_xen_pvh
from hvsim.core.layout import MemoryRange, MemoryType


@pytest.fixture(autouse=True)
def broken_memory_map(monkeypatch):
    def wrong(machine):
        ranges = list(machine.layout.memory_map)
        return ranges[:1] + [MemoryRange(ranges[1].start, ranges[1].size, MemoryType.RAM)] + ranges[2:]
    monkeypatch.setattr(hvsim_xen_pvh, "guest_memory_map", wrong)
''')
    result = pytester.runpytest_subprocess("--pyargs", "hvsim.conformance", "--hvsim-env", "xen_pvh", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    failed = {line.split("::")[1].split("[")[0] for line in result.outlines if line.startswith("FAILED")}
    assert failed == {"test_the_memory_map_is_the_configs", "test_every_difference_from_bare_metal_is_declared"}
    assert outcomes["failed"] == 4 and "memmap:" in result.stdout.str()


def test_the_fixtures_run_a_kernel_under_the_chosen_environment(pytester):
    pytester.makepyfile('''
from hvsim import MachineConfig

def test_probe(hvsim_run, hvsim_env):
    result = hvsim_run(config=MachineConfig(memory="256M", cmdline="hello"))
    assert result.environment == hvsim_env and result.stop.kind == "poweroff"

def test_record(hvsim_semantics, hvsim_declared):
    record = hvsim_semantics(config=MachineConfig(cmdline="hello"))
    assert record.cmdline == "hello" and record.environment == "xen_pvh"
    assert "entry_mode" in hvsim_declared()
''')
    result = pytester.runpytest_subprocess("--hvsim-env", "xen_pvh", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_probe?xen_pvh? PASSED*"])
