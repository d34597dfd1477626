"""Boot-path coverage: which of a kernel's functions run under one environment only, under every
environment, and under none (the "dead code" question of the HVMLite thread).

Each environment's run records the start address of every block it executed with a native block
hook (``hvsim.core.native.NativeCoverage``: one hash-set probe per block, no Python; see
unicorn-notes.md §7 and bench/README.md for its cost).  Addresses are named with a
``System.map`` or the ELF's ``.symtab`` (``hvsim.symbols``); without either, blocks are reported by
address.  Runs go to child processes as in ``hvsim.matrix``.

    from hvsim.coverage import run_coverage
    report = run_coverage("vmlinux", config, ["bare_metal", "xen_pvh"], system_map="System.map")
    report.only["xen_pvh"]          # functions that ran under xen_pvh and under no other environment
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Iterable

import attrs
import pluggy

from .core.config import MachineConfig
from .core.plugins import environments, get_plugin_manager
from .matrix import accepting_environments, run_columns
from .symbols import SymbolTable, image_elf


@attrs.frozen
class CoverageReport:
    kernel: str
    symbols: str                       # where the names come from ("System.map ...", "... .symtab", "none")
    functions_total: int               # code symbols in the table (0 without one)
    columns: dict[str, dict]           # env -> {"ok", "error", "stop", "blocks", "unsymbolised", "functions", ...}
    refused: dict[str, str]
    only: dict[str, list[str]]         # env -> functions run under it and no other environment
    every: list[str]                   # functions run under every environment
    none: list[str]                    # functions of the table run under no environment
    warnings: list[str] = attrs.field(factory=list)   # e.g. a System.map that is not the image's build

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def record_blocks(prepared):
    """``run_columns`` observer: attach the native block recorder before the run starts."""
    from .core.native import NativeCoverage

    recorder = NativeCoverage(prepared.machine.uc)
    return lambda result: {"blocks": recorder.addresses(), "complete": recorder.complete}


def run_coverage(kernel, config: MachineConfig | None = None, envs: Iterable[str] | None = None, *,
                 system_map: str | Path | None = None, options: dict[str, Any] | None = None,
                 pm: pluggy.PluginManager | None = None, jobs: int | None = None) -> CoverageReport:
    from .api import open_image

    pm = pm or get_plugin_manager()
    config = config or MachineConfig()
    if kernel is None:
        # The embedded probe as each environment boots it (its Environment.default_image), each
        # build named by its own symbols; the probe's builds share their function names.
        images, chosen, refused = _probe_per_environment(pm, envs)
        tables = {env: _symbols(images[env], system_map) for env in chosen}
        name = "the embedded probe (" + ", ".join(f"{env}: {Path(str(images[env].name)).name}"
                                                  for env in chosen) + ")"
    else:
        image = open_image(kernel)
        table = _symbols(image, system_map)
        chosen, refused = accepting_environments(image, pm, envs)
        images, tables, name = image, {env: table for env in chosen}, image.name
    raw = run_columns(chosen, images, config, options=options, pm=pm, jobs=jobs, observe=record_blocks)
    # Blocks are named by address only when no image has symbols; an environment whose image has
    # none beside others that do (probe.efi is stripped) counts its blocks as unsymbolised and is
    # left out of the comparison.
    named = any(table is not None for table in tables.values())
    columns = {env: _column(column, tables[env], by_address=not named) for env, column in raw.items()}
    ran = {env: set(c["functions"]) for env, c in columns.items()
           if c["ok"] and (tables[env] is not None or not named)}
    only = {env: sorted(names - set().union(*(ran[o] for o in ran if o != env))) for env, names in ran.items()}
    every = sorted(set.intersection(*ran.values())) if ran else []
    distinct = {id(t): t for t in tables.values() if t is not None}.values()
    known = set().union(*(t.names for t in distinct))
    none = sorted(known - set().union(*ran.values()))
    unnamed = [f"{env}: none" for env in chosen if tables[env] is None]
    sources = [*dict.fromkeys(t.source for t in distinct), *(unnamed if named else [])]
    return CoverageReport(kernel=name, symbols="; ".join(sources) or "none",
                          functions_total=len(known), columns=columns, refused=refused,
                          only=only, every=every, none=none,
                          warnings=[*dict.fromkeys(f"--system-map {system_map} does not match {t.mismatch}"
                                                   for t in distinct if t.mismatch)])


def _symbols(image, system_map: str | Path | None) -> SymbolTable | None:
    """The table naming ``image``'s code: ``system_map`` when given, else the ELF's own symbols."""
    elf = image_elf(image)
    if system_map is not None:
        table = SymbolTable.from_system_map(system_map, elf)
        if table.mismatch:
            table.mismatch = f"{image.name}: {table.mismatch}"
        return table
    return SymbolTable.from_image_elf(elf, image.name) if elf is not None else None


def _probe_per_environment(pm: pluggy.PluginManager, envs: Iterable[str] | None):
    """({env: the probe build it boots}, environments to run, {env: why it refuses its build})."""
    from .api import default_kernel, open_image

    images, chosen, refused = {}, [], {}
    loaded: dict[Path, Any] = {}
    names = sorted(environments(pm)) if envs is None else list(dict.fromkeys(envs))
    for env in names:
        path = default_kernel(env, pm)
        if path not in loaded:
            loaded[path] = open_image(path)
        image = loaded[path]
        ok, why = accepting_environments(image, pm, [env])
        if ok:
            images[env] = image
            chosen.append(env)
        refused.update(why)
    return images, chosen, refused


def _column(column: dict, table: SymbolTable | None, by_address: bool = True) -> dict:
    out = {"ok": column["ok"], "error": column["error"], "stop": None, "wall_seconds": column["wall_seconds"],
           "blocks": 0, "unsymbolised": 0, "complete": False, "functions": []}
    if not column["ok"]:
        return out
    semantics = column["semantics"]
    blocks = column["observed"]["blocks"]
    names = set()
    unsymbolised = 0
    for address in blocks:
        if table is not None:
            name = table.resolve(address)
        else:
            name = f"{address:#x}" if by_address else None
        if name is None:
            unsymbolised += 1
        else:
            names.add(name)
    out.update(stop=f"{semantics['stop']}: {semantics['stop_detail']}", blocks=len(blocks),
               unsymbolised=unsymbolised, complete=column["observed"]["complete"], functions=sorted(names))
    return out


def render(report: CoverageReport, width: int = 110) -> str:
    out = [f"hvsim coverage: {report.kernel}; symbols: {report.symbols}"
           + (f" ({report.functions_total} functions)" if report.functions_total else ""), ""]
    envs = list(report.columns)
    name_width = max([len("environment")] + [len(e) for e in envs])
    out.append(f"{'environment'.ljust(name_width)}  {'blocks':>7}  {'functions':>9}  {'only here':>9}  stop")
    for env in envs:
        c = report.columns[env]
        if not c["ok"]:
            out.append(f"{env.ljust(name_width)}  FAILED: {c['error']}")
            continue
        out.append(f"{env.ljust(name_width)}  {c['blocks']:>7}  {len(c['functions']):>9}  "
                   f"{len(report.only.get(env, [])):>9}  {c['stop']}"
                   + ("" if c["complete"] else "  (block set incomplete: out of memory)"))
    for env in envs:
        names = report.only.get(env)
        if names is None:
            continue
        out += ["", f"only under {env} ({len(names)}):"]
        out += textwrap.wrap(" ".join(names) or "(none)", width, initial_indent="  ", subsequent_indent="  ")
    out += ["", f"under every environment: {len(report.every)} functions"]
    if report.functions_total:
        out.append(f"under none: {len(report.none)} of {report.functions_total} functions (--json lists them)")
    for env, why in report.refused.items():
        out.append(f"not run: {env}: {why}")
    return "\n".join(out) + "\n"
