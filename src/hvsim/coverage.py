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
from .core.plugins import get_plugin_manager
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
    image = open_image(kernel)
    elf = image_elf(image)
    if system_map is not None:
        table = SymbolTable.from_system_map(system_map, elf)
    else:
        table = SymbolTable.from_elf(elf, image.name) if elf is not None else None
    chosen, refused = accepting_environments(image, pm, envs)
    raw = run_columns(chosen, image, config, options=options, pm=pm, jobs=jobs, observe=record_blocks)
    columns = {env: _column(column, table) for env, column in raw.items()}
    ran = {env: set(c["functions"]) for env, c in columns.items() if c["ok"]}
    only = {env: sorted(names - set().union(*(ran[o] for o in ran if o != env))) for env, names in ran.items()}
    every = sorted(set.intersection(*ran.values())) if ran else []
    none = sorted(table.names - set().union(*ran.values())) if table is not None else []
    return CoverageReport(kernel=image.name, symbols=table.source if table else "none",
                          functions_total=len(table.names) if table else 0, columns=columns, refused=refused,
                          only=only, every=every, none=none)


def _column(column: dict, table: SymbolTable | None) -> dict:
    out = {"ok": column["ok"], "error": column["error"], "stop": None, "wall_seconds": column["wall_seconds"],
           "blocks": 0, "unsymbolised": 0, "complete": False, "functions": []}
    if not column["ok"]:
        return out
    semantics = column["semantics"]
    blocks = column["observed"]["blocks"]
    names = set()
    unsymbolised = 0
    for address in blocks:
        name = table.resolve(address) if table is not None else f"{address:#x}"
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
