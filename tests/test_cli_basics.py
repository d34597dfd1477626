"""What a newcomer tries first: ``hvsim --version``, ``python -m hvsim``, the names the docs import
from ``hvsim``, the package's metadata and typing marker, environment options given to an
environment that does not own them, and sizes echoed in the units they were typed in."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import hvsim
import hvsim.core.result
import hvsim.kernels
from hvsim.core.config import format_size
from hvsim.core.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def hvsim_cli(*args: str, module: str = "hvsim.cli") -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_version_names_hvsim_its_engine_and_python():
    done = hvsim_cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"hvsim {hvsim.__version__} (Unicorn 2.1.4; Python ")


def test_the_installed_metadata_carries_the_package_version():
    assert importlib.metadata.version("hvsim") == hvsim.__version__


def test_python_dash_m_hvsim_is_the_command_line():
    assert hvsim_cli("--version", module="hvsim").stdout == hvsim_cli("--version").stdout
    done = hvsim_cli("run", "--env", "bare_metal", module="hvsim")
    assert done.returncode == 0 and "hvsim-probe: end" in done.stdout


def test_the_names_the_docs_use_import_from_hvsim():
    from hvsim import Call, MachineConfig, RunResult, run  # noqa: F401 - the README's imports

    assert Call.__module__ == "hvsim.core.events"
    for name in hvsim.__all__:
        assert getattr(hvsim, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        hvsim.nonesuch  # noqa: B018


def test_pyproject_ships_the_typing_marker_and_describes_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (ROOT / "src" / "hvsim" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["hvsim"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hvsim.__version__"}
    classifiers = importlib.metadata.metadata("hvsim").get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Topic :: System :: Emulators" in classifiers
    assert project["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    for plugin in [*ROOT.glob("plugins/*/pyproject.toml"), ROOT / "examples/kvm_pvh/pyproject.toml"]:
        assert tomllib.loads(plugin.read_text())["project"]["license"] == "MIT", plugin


def test_every_command_writes_json_to_a_file_and_run_results_carry_their_schema(tmp_path):
    inspected, envs, result = tmp_path / "inspect.json", tmp_path / "envs.json", tmp_path / "run.json"
    assert hvsim_cli("inspect", str(hvsim.kernels.probe_path("elf")), "--json", str(inspected)).returncode == 0
    assert json.loads(inspected.read_text())["format"] == "elf64"
    assert hvsim_cli("envs", "--json", str(envs)).returncode == 0
    assert "bare_metal" in json.loads(envs.read_text())
    done = hvsim_cli("inspect", str(hvsim.kernels.probe_path("elf")), "--json")     # no FILE: stdout
    assert json.loads(done.stdout)["format"] == "elf64"
    assert hvsim_cli("run", "--env", "bare_metal", "--json", str(result)).returncode == 0
    record = json.loads(result.read_text())
    assert record["schema_version"] == hvsim.core.result.SCHEMA_VERSION and record["hvsim_version"] == hvsim.__version__


@pytest.mark.parametrize(("args", "owner"), [
    (["--dom0"], "xen_pv"),
    (["--framebuffer-png", "screen.png"], "efi"),
    (["--start-info-version", "0"], "xen_pvh"),
])
def test_an_option_of_another_environment_is_a_usage_error_naming_its_owner(args, owner):
    done = hvsim_cli("run", "--env", "bare_metal", *args)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"hvsim: {args[0]} is an option of the {owner} environment, "
                                   f"not of bare_metal")
    assert done.stdout == ""          # refused before anything ran


def test_the_owner_takes_its_option():
    done = hvsim_cli("run", "--env", "xen_pv", "--dom0")
    assert done.returncode == 0, done.stderr
    assert "hvsim-probe: end" in done.stdout


def test_the_matrix_refuses_an_option_no_chosen_environment_owns():
    done = hvsim_cli("matrix", "--envs", "bare_metal,efi", "--dom0")
    assert done.returncode == 2
    assert "--dom0 is an option of the xen_pv environment, not of any of bare_metal, efi" in done.stderr


def test_memory_is_echoed_in_the_units_a_person_types():
    done = hvsim_cli("run", "--env", "bare_metal", "--memory", "1T")
    assert done.returncode == 2
    assert done.stderr.strip() == "hvsim: memory 1 TiB: at most 64 GiB is supported"
    with pytest.raises(UsageError, match="memory 8 MiB: at least 16 MiB"):
        hvsim.MachineConfig(memory="8M")


@pytest.mark.parametrize(("value", "text"), [
    (1 << 40, "1 TiB"), (6 << 30, "6 GiB"), (1536 << 20, "1536 MiB"), (516 << 10, "516 KiB"),
    (4097, "4097 bytes (0x1001)"),
])
def test_format_size(value, text):
    assert format_size(value) == text
