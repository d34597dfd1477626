"""hvsim's pytest plugin (entry point ``pytest11``): fixtures for plugin authors, and the option that
points hvsim's conformance suite at an environment.

    pytest --pyargs hvsim.conformance --hvsim-env my_env     # the conformance suite against my_env
    pytest --pyargs hvsim.conformance                        # ... against every installed environment

Fixtures:

- ``hvsim_env``: the environment under test.  With ``--hvsim-env NAME`` (repeatable) each test that
  uses it, or a fixture below, runs once per name; without it, once per installed environment.
- ``hvsim_run``: ``hvsim_run(kernel=None, env=None, config=None, **options) -> RunResult`` runs a
  kernel (default: the embedded probe) under ``env`` (default: ``hvsim_env``).
- ``hvsim_semantics``: the same, returning the canonical record (``hvsim.semantics.Semantics``).
- ``hvsim_declared``: ``hvsim_declared(env=None) -> {field: reason}``, what an environment's
  plugin declares inherent (``hvsim_inherent_differences``).

A plugin's own tests use them directly::

    def test_my_env_boots_the_probe(hvsim_run):
        result = hvsim_run(config=MachineConfig(memory="1G"))
        assert result.stop.kind == "poweroff"
"""

from __future__ import annotations

from typing import Any

import pytest

OPTION = "--hvsim-env"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hvsim", "hvsim environments")
    group.addoption(OPTION, action="append", default=[], metavar="NAME", dest="hvsim_envs",
                    help="environment the hvsim fixtures and the conformance suite run under (repeatable; "
                         "default: every installed environment)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hvsim_conformance: part of hvsim's conformance suite for environments")


def _installed() -> list[str]:
    from .core.plugins import environments, get_plugin_manager

    return sorted(environments(get_plugin_manager()))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hvsim_env" not in metafunc.fixturenames:
        return
    names = metafunc.config.getoption("hvsim_envs") or _installed()
    metafunc.parametrize("hvsim_env", names, scope="session")


@pytest.fixture(scope="session")
def hvsim_plugin_manager():
    """The plugin manager with every installed hvsim plugin (entry-point group ``hvsim``)."""
    from .core.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def hvsim_run(hvsim_env: str, hvsim_plugin_manager):
    """``hvsim_run(kernel=None, env=None, config=None, **options)``: run and return the ``RunResult``."""
    from .api import run
    from .core.config import MachineConfig

    def run_kernel(kernel=None, env: str | None = None, config: MachineConfig | None = None, **options: Any):
        return run(env or hvsim_env, kernel, config or MachineConfig(), options=options, pm=hvsim_plugin_manager)

    return run_kernel


@pytest.fixture
def hvsim_semantics(hvsim_run):
    """``hvsim_semantics(kernel=None, env=None, config=None, **options)``: the run's canonical record."""
    from .semantics import semantics_of

    return lambda *args, **kwargs: semantics_of(hvsim_run(*args, **kwargs))


@pytest.fixture
def hvsim_declared(hvsim_env: str, hvsim_plugin_manager):
    """``hvsim_declared(env=None) -> {field: reason}``: the inherent differences a plugin declares."""
    from .matrix import inherent_differences

    def declared(env: str | None = None) -> dict[str, str]:
        return {d.field: d.reason for d in inherent_differences(hvsim_plugin_manager, env or hvsim_env)}

    return declared
