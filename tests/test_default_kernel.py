"""Per-environment default kernels: each environment's ``Environment.default_image`` names the build
of the embedded probe it boots when no kernel is given, and ``hvsim run``, ``coverage``, the pytest
fixtures and the conformance suite all follow it (third-party plugins included)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hvsim_bare_metal
import pytest

from hvsim import Acceptance, Environment, hookimpl
from hvsim.api import default_kernel, run
from hvsim.core.errors import PluginError
from hvsim.core.plugins import get_plugin_manager
from hvsim.coverage import run_coverage
from hvsim.kernels import probe_path

HVSIM = [sys.executable, "-m", "hvsim.cli"]


def installed_environments() -> list[str]:
    out = subprocess.run([*HVSIM, "envs", "--json"], capture_output=True, text=True, check=True, timeout=60)
    return sorted(json.loads(out.stdout))


@pytest.mark.parametrize("env", installed_environments())
def test_run_with_no_kernel_boots_the_probe_under_every_installed_environment(env):
    done = subprocess.run([*HVSIM, "run", "--env", env], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "poweroff" in done.stderr.splitlines()[-1]


def test_the_example_third_party_plugin_is_among_them():
    assert {"bare_metal", "efi", "kvm_pvh", "xen_pv", "xen_pvh"} <= set(installed_environments())


def test_efi_boots_the_pe32_probe_and_the_others_the_bzimage():
    assert default_kernel("efi") == probe_path("efi")
    assert default_kernel("bare_metal") == probe_path("bzImage")
    assert default_kernel() == probe_path("bzImage")


class ElfOnly:
    """A third-party environment that boots only plain ELF images (the bare-metal ELF entry) and
    says so with ``default_image="elf"``."""

    @hookimpl
    def hvsim_environments(self):
        return [Environment("elf_only", "bare metal, ELF images only", default_image="elf")]

    @hookimpl
    def hvsim_accepts(self, env, image):
        if env != "elf_only":
            return None
        if image.bzimage is not None or image.elf is None:
            return Acceptance.no("only a plain ELF kernel")
        return hvsim_bare_metal.hvsim_accepts(env="bare_metal", image=image)

    @hookimpl
    def hvsim_setup(self, machine, image, config, options):
        return hvsim_bare_metal.hvsim_setup(machine=machine, image=image, config=config, options=options)


def test_a_third_party_plugin_chooses_its_default_image():
    pm = get_plugin_manager(load_entrypoints=False, plugins=[ElfOnly()])
    result = run("elf_only", pm=pm)
    assert Path(result.image).name == "probe.elf"
    assert result.stop.kind == "poweroff"


def test_an_unknown_default_image_is_a_plugin_error():
    with pytest.raises(PluginError, match="default_image 'iso'"):
        Environment("x", "y", default_image="iso")


def test_coverage_with_no_kernel_runs_efi_on_its_own_build():
    report = run_coverage(envs=["bare_metal", "efi"], kernel=None)
    assert report.refused == {}
    assert report.columns["efi"]["ok"] and report.columns["bare_metal"]["ok"]
    assert "efi: probe.efi" in report.kernel and "bare_metal: probe.bzImage" in report.kernel
    # probe.efi is stripped: its blocks are unsymbolised, not compared as addresses with named functions
    assert report.columns["efi"]["functions"] == [] and report.columns["efi"]["unsymbolised"] > 0
    assert "efi: none" in report.symbols and "linux64_entry" in report.only["bare_metal"]


def test_the_fixture_runs_efi_with_no_kernel(hvsim_run):
    assert hvsim_run(env="efi").stop.kind == "poweroff"
