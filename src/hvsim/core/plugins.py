"""Plugin managers: a factory, never an import-time global, so tests choose exactly their plugins."""

from __future__ import annotations

from typing import Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, UsageError
from .plugin_types import Environment

PROJECT = "hvsim"
hookimpl = pluggy.HookimplMarker(PROJECT)


def get_plugin_manager(load_entrypoints: bool = True, plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A manager with hvsim's hook specs, the installed plugins (entry-point group ``hvsim``) unless
    ``load_entrypoints`` is false, and ``plugins`` registered by hand."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(PROJECT)
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not crash hvsim
            raise PluginError(f"loading the installed hvsim plugins failed: {type(exc).__name__}: {exc}") from None
    for plugin in plugins:
        pm.register(plugin)
    environments(pm)   # validate: unique names
    return pm


def environments(pm: pluggy.PluginManager) -> dict[str, tuple[Environment, object]]:
    """Environment name -> (its record, the plugin providing it)."""
    found: dict[str, tuple[Environment, object]] = {}
    for impl in pm.hook.hvsim_environments.get_hookimpls():
        for env in impl.function() or ():
            if env.name in found:
                raise PluginError(f"environment {env.name!r} is provided twice "
                                  f"({pm.get_name(found[env.name][1])} and {pm.get_name(impl.plugin)})")
            found[env.name] = (env, impl.plugin)
    return found


def is_environment_plugin(pm: pluggy.PluginManager, plugin: object) -> bool:
    return any(impl.plugin is plugin and impl.function() for impl in pm.hook.hvsim_environments.get_hookimpls())


def run_manager(pm: pluggy.PluginManager, env: str) -> pluggy.PluginManager:
    """A manager for one run: the plugin providing ``env`` plus every observer plugin."""
    envs = environments(pm)
    if env not in envs:
        known = ", ".join(sorted(envs)) or "none installed"
        raise UsageError(f"unknown environment {env!r} (known: {known})")
    chosen = envs[env][1]
    run_pm = pluggy.PluginManager(PROJECT)
    run_pm.add_hookspecs(hookspecs)
    for name, plugin in pm.list_name_plugin():
        if plugin is chosen or not is_environment_plugin(pm, plugin):
            run_pm.register(plugin, name=name)
    return run_pm
