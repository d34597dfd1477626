"""The plugin contract: documented hooks, discovery through entry points, one environment per run."""

from __future__ import annotations

import inspect

import pytest

from hvsim import Acceptance, Environment, get_plugin_manager, hookimpl
from hvsim.core import hookspecs
from hvsim.core.errors import PluginError, UsageError
from hvsim.core.plugins import environments, run_manager

HOOKS = [f for name, f in vars(hookspecs).items() if name.startswith("hvsim_") and callable(f)]


@pytest.mark.parametrize("spec", HOOKS, ids=lambda f: f.__name__)
def test_every_hook_is_documented_with_who_calls_it_and_what_it_returns(spec):
    doc = inspect.getdoc(spec) or ""
    assert "Called" in doc or "called" in doc, f"{spec.__name__}: say who calls it and when"
    assert "Return" in doc or "return" in doc or spec.__name__ in ("hvsim_event", "hvsim_add_options"), \
        f"{spec.__name__}: say what the return value means"


def test_installed_bare_metal_plugin_is_found_through_its_entry_point():
    pm = get_plugin_manager()
    assert "bare_metal" in environments(pm)
    assert pm.get_plugin("bare_metal") is not None


class Env:
    def __init__(self, *names):
        self.names = names

    @hookimpl
    def hvsim_environments(self):
        return [Environment(n, f"test {n}") for n in self.names]

    @hookimpl
    def hvsim_accepts(self, env, image):
        return Acceptance.no(f"{env} refuses everything")


class Observer:
    @hookimpl
    def hvsim_event(self, machine, event):
        pass


def test_duplicate_environment_names_are_refused():
    with pytest.raises(PluginError, match="provided twice"):
        get_plugin_manager(load_entrypoints=False, plugins=[Env("one"), Env("one")])


def test_a_run_holds_its_environment_and_the_observers_only():
    first, second, observer = Env("first"), Env("second"), Observer()
    pm = get_plugin_manager(load_entrypoints=False, plugins=[first, second, observer])
    run_pm = run_manager(pm, "second")
    assert set(run_pm.get_plugins()) == {second, observer}
    with pytest.raises(UsageError, match="unknown environment 'third'"):
        run_manager(pm, "third")


def test_refusal_reason_reaches_the_user():
    from hvsim.api import inspect as inspect_image
    from hvsim.core.errors import UnsupportedImageError
    from hvsim.api import Run
    from hvsim.kernels import probe_path

    pm = get_plugin_manager(load_entrypoints=False, plugins=[Env("picky")])
    report = inspect_image(probe_path("elf"), pm)
    assert report["environments"]["picky"] == {"accepted": False, "entry": "", "reason": "picky refuses everything"}
    with pytest.raises(UnsupportedImageError, match="picky refuses everything"):
        Run("picky", probe_path("elf"), __import__("hvsim").MachineConfig(), pm=pm)
