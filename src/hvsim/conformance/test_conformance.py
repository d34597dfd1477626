"""The conformance suite (``pytest --pyargs hvsim.conformance --hvsim-env NAME``).

Each test boots hvsim's probe kernel under the environment under test (``hvsim_env``) and checks
what it reported against the ``MachineConfig``.  A field the environment declares inherently
different (``hvsim_inherent_differences``) is not held to the bare-metal expectation: the test
skips it and names the plugin's reason.
"""

from __future__ import annotations

import random
import zlib

import pytest

from hvsim import MachineConfig
from hvsim.api import open_image
from hvsim.core.layout import PhysicalLayout
from hvsim.core.plugins import run_manager
from hvsim.matrix import REFERENCE, compare, run_column
from hvsim.semantics import COMPARED_FIELDS

pytestmark = pytest.mark.hvsim_conformance
MiB = 1 << 20
CMDLINE = "console=ttyS0 conformance  ✓ path=C:\\boot"

CONFIGS = {
    "512M-1cpu": dict(memory="512M", smp=1, cmdline=""),
    "6G-4cpus-initrd": dict(memory="6G", smp=4, cmdline=CMDLINE, initrd=True),
}


@pytest.fixture(params=sorted(CONFIGS))
def config(request, tmp_path) -> MachineConfig:
    fields = dict(CONFIGS[request.param])
    if fields.pop("initrd", False):
        initrd = tmp_path / "initrd.img"
        initrd.write_bytes(random.Random(7).randbytes(3 * MiB + 11))
        fields["initrd"] = initrd
    return MachineConfig(**fields)


def probe_image(env: str, pm):
    """The probe image ``env`` boots: the build its ``Environment.default_image`` names, which it
    must accept (``hvsim run --env ENV`` with no kernel boots it)."""
    image = open_image(None, env, pm)
    answer = run_manager(pm, env).hook.hvsim_accepts(env=env, image=image)
    if answer is None or not answer.accepted:
        reason = answer.reason if answer is not None else "the plugin gave no answer"
        pytest.fail(f"{env} refuses its own default image {image.name} (Environment.default_image): {reason}")
    return image


@pytest.fixture
def probe(hvsim_env, hvsim_plugin_manager):
    return probe_image(hvsim_env, hvsim_plugin_manager)


def unless_declared(declared: dict[str, str], *fields: str) -> None:
    for field in fields:
        if field in declared:
            pytest.skip(f"{field} is declared inherently different: {declared[field]}")


def test_the_declarations_are_well_formed(hvsim_declared):
    declared = hvsim_declared()
    assert set(declared) <= set(COMPARED_FIELDS)
    assert all(reason.strip() and "\n" not in reason for reason in declared.values())


def test_the_probe_runs_to_a_poweroff(hvsim_semantics, probe, config):
    record = hvsim_semantics(probe, config=config)
    assert record.kernel == "probe", f"no probe report; console: {record.console[-500:]!r}"
    assert record.stop == "poweroff", (record.stop, record.stop_detail)


def test_the_command_line_arrives_unchanged(hvsim_semantics, hvsim_declared, probe, config):
    unless_declared(hvsim_declared(), "cmdline")
    assert hvsim_semantics(probe, config=config).cmdline == config.cmdline


def test_the_memory_map_is_the_configs(hvsim_semantics, hvsim_declared, probe, config):
    unless_declared(hvsim_declared(), "memmap")
    expected = [list(r.to_tuple()) for r in PhysicalLayout.for_config(config).memory_map]
    assert hvsim_semantics(probe, config=config).memmap == expected


def test_the_initrd_arrives_whole(hvsim_semantics, hvsim_declared, probe, config):
    unless_declared(hvsim_declared(), "modules")
    data = config.initrd_bytes()
    expected = [] if data is None else [{"size": len(data), "crc32": zlib.crc32(data)}]
    assert hvsim_semantics(probe, config=config).modules == expected


def test_the_acpi_tables_describe_the_cpus(hvsim_semantics, hvsim_declared, probe, config):
    # a declared rsdp says where the RSDP is (efi: firmware memory), not that there is none
    unless_declared(hvsim_declared(), "acpi_tables", "cpus")
    record = hvsim_semantics(probe, config=config)
    assert record.rsdp is not None and {"FACP", "APIC"} <= set(record.acpi_tables)
    assert record.cpus == config.smp


def test_every_difference_from_bare_metal_is_declared(hvsim_env, hvsim_plugin_manager, probe, config):
    """The matrix row of this environment, in-process: what differs from bare_metal is declared."""
    from hvsim.core.plugins import environments
    from hvsim.matrix import inherent_differences

    if REFERENCE not in environments(hvsim_plugin_manager):
        pytest.skip(f"the reference environment {REFERENCE} is not installed")
    if hvsim_env == REFERENCE:
        pytest.skip(f"{REFERENCE} is the reference")
    columns = {REFERENCE: run_column(REFERENCE, probe_image(REFERENCE, hvsim_plugin_manager), config,
                                     pm=hvsim_plugin_manager),
               hvsim_env: run_column(hvsim_env, probe, config, pm=hvsim_plugin_manager)}
    declared = {env: inherent_differences(hvsim_plugin_manager, env) for env in columns}
    undeclared = [d for d in compare(columns, REFERENCE, declared) if not d.inherent]
    assert not undeclared, "\n".join(f"{d.field}: {d.value!r} (bare_metal: {d.reference_value!r})"
                                     for d in undeclared)
