"""The side-by-side text form of a ``Matrix``: one row block per field, one column per environment.

A mark before the field name says how the field compares: ``!`` an undeclared difference, ``~``
differences all declared inherent, blank the same everywhere.  Inside a row a differing cell ends
with `` *`` (undeclared) or `` ~`` (inherent).  A legend under the table explains every mark.
Below it: the console lines that differ from the reference's, the inherent differences with their
reasons, and the undeclared ones.

The table fits ``width`` columns (default: the terminal's, which honours ``COLUMNS``): a cell's
text wraps within its column instead of being cut, and environments that do not fit side by side
go to further tables below, each with the field names.  Addresses and sizes are in hex.

``only_differences`` (``hvsim matrix --only-differences``) keeps the rows of the fields that
differ somewhere (the ``stop`` row too when a run failed) and the columns of the reference and of
the environments that differ from it; with nothing differing, one line says so.
"""

from __future__ import annotations

import difflib
import shutil
import textwrap
from typing import Any

from .matrix import Matrix
from .semantics import COMPARED_FIELDS, console_digest

CELL_WIDTH = 44
E820_NAMES = {1: "usable", 2: "reserved", 3: "ACPI data", 4: "ACPI NVS", 5: "unusable", 7: "pmem"}
CONSOLE_DIFF_LINES = 12
GAP = "  "
LEGEND = ("marks: ! a field with an undeclared difference; ~ differences all declared inherent by the "
          "plugins; a cell ending in * differs from the reference (undeclared), in ~ differs (inherent); "
          "FAILED: the run failed or did not finish; (not printed): the kernel did not say")
# Fields whose integers are addresses or sizes (shown in hex in the difference lists)
HEX_FIELDS = frozenset({"memmap", "userspace_memmap", "userspace_iomem", "module_addresses", "rsdp"})


def render(matrix: Matrix, width: int | None = None, only_differences: bool = False) -> str:
    width = width or shutil.get_terminal_size((120, 24)).columns
    envs = list(matrix.columns)
    marks = {(d.environment, d.field): ("~" if d.inherent else "*") for d in matrix.differences}
    fields = list(COMPARED_FIELDS)
    if only_differences:
        differing = {d.field for d in matrix.differences}
        if "run" in differing:
            differing.add("stop")
        fields = [f for f in fields if f in differing]
        envs = [env for env in envs if env == matrix.reference
                or any(d.environment == env for d in matrix.differences)]
    names: list[str] = []
    cells: dict[str, list[list[str]]] = {env: [] for env in envs}      # env -> per field: lines
    for field in fields:
        field_marks = {marks.get((env, field)) for env in envs} - {None}
        names.append(f"{'!' if '*' in field_marks else '~' if field_marks else ' '} {field}")
        for env in envs:
            lines = _cell(field, matrix.columns[env])
            mark = marks.get((env, field))
            if mark:
                lines[-1] = f"{lines[-1]} {mark}"
            cells[env].append(lines)
    name_width = max(len("field"), *(len(n) for n in names)) if names else len("field")
    room = max(12, width - name_width - len(GAP))                    # for the environment columns
    natural = {env: min(CELL_WIDTH, max([len(env), *(len(line) for lines in cells[env] for line in lines)]))
               for env in envs}
    groups: list[list[str]] = []
    for env in envs:
        natural[env] = min(natural[env], room)
        if groups and sum(natural[e] + len(GAP) for e in groups[-1]) + natural[env] <= room:
            groups[-1].append(env)
        else:
            groups.append([env])
    out = [f"hvsim matrix: {matrix.kernel}, {matrix.config['memory'] >> 20} MiB, smp {matrix.config['smp']}, "
           f"cmdline {matrix.config['cmdline']!r}; reference {matrix.reference}"]
    out = _wrap_text(out[0], width)
    if matrix.reference_failure is not None:
        out += _wrap_text(f"NOTHING COMPARED: the reference {matrix.reference} did not boot to a comparable "
                          f"record: {matrix.reference_failure}", width)
    if only_differences and not fields:
        out += ["", f"no differences: every compared field is the same under {', '.join(matrix.columns)}"]
        groups = []
    for group in groups:
        widths = [name_width] + [natural[env] for env in group]
        out.append("")
        out.append(GAP.join(h.ljust(w) for h, w in zip(["field", *group], widths)).rstrip())
        out.append(GAP.join("-" * w for w in widths))
        for i, name in enumerate(names):
            wrapped = [_fold(cells[env][i], natural[env]) for env in group]
            for j in range(max(len(c) for c in wrapped)):
                row = [name if j == 0 else ""] + [c[j] if j < len(c) else "" for c in wrapped]
                out.append(GAP.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    out += [""] + _wrap_text(LEGEND, width)
    out += _console_diffs(matrix)
    for env, why in matrix.refused.items():
        out += _wrap_text(f"not in the matrix: {env}: {why}", width)
    inherent = [d for d in matrix.differences if d.inherent]
    if inherent:
        out += ["", "inherent differences (declared by the plugins):"]
        for d in inherent:
            out += _wrap_text(f"  ~ {d.environment}.{d.field}: {d.reason}", width, "      ")
    if matrix.undeclared:
        out += ["", "UNDECLARED differences:"]
        for d in matrix.undeclared:
            if d.field == "run":
                text = f"  * {d.environment}: the run failed: {d.reason}"
            else:
                text = (f"  * {d.environment}.{d.field}: {_short(d.value, d.field)} "
                        f"(reference: {_short(d.reference_value, d.field)})")
            out += _wrap_text(text, width, "      ")
    return "\n".join(out) + "\n"


def _fold(lines: list[str], width: int) -> list[str]:
    """Cell lines wrapped to ``width`` (a long word is split; continuations indented one space)."""
    out: list[str] = []
    for line in lines:
        out += textwrap.wrap(line, width, subsequent_indent=" ", break_on_hyphens=False,
                             drop_whitespace=True) or [""]
    return out


def _wrap_text(text: str, width: int, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, max(width - 1, 20), subsequent_indent=indent, break_on_hyphens=False) or [""]


def _cell(field: str, column: dict) -> list[str]:
    if not column["ok"]:
        return ["FAILED" if field == "entry" else ""] if field != "stop" else [f"FAILED: {column['error']}"]
    value = column["semantics"][field]
    if value is None:
        return ["(not printed)"]
    if field in ("memmap", "userspace_memmap"):
        return [f"{s:#x} +{n:#x} {E820_NAMES.get(t, f'type {t}')}" for s, n, t in value] or ["(empty)"]
    if field == "userspace_iomem":
        return [f"{s:#x} +{n:#x} {name}" for s, n, name in value] or ["(empty)"]
    if field in ("userspace_consoles", "userspace_irqs"):
        return list(value) or ["(none)"]
    if field in ("clocksources", "userspace_acpi_tables", "userspace_cpu_flags"):
        return _wrap(value) or ["(none)"]
    if field == "userspace_dmi":
        return ["yes" if value else "no"]
    if field == "userspace_hypervisor":
        return [value or "(none)"]
    if field == "calls":
        return [f"{n} {name}" for name, n in value.items()] or ["(none)"]
    if field == "console":
        digest = console_digest(value)
        if not value and column["semantics"].get("kernel") == "probe":
            return ["(only the probe report)"]
        return [digest]
    if field in ("modules",):
        return [f"{m['size']} bytes" + (f" crc32 {m['crc32']:08x}" if m.get("crc32") is not None else "")
                for m in value] or ["(none)"]
    if field == "module_addresses":
        return [f"{a:#x}" for a in value] or ["(none)"]
    if field == "rsdp":
        return [f"{value:#x}"]
    if field in ("acpi_tables", "console_channels"):
        return [" ".join(value) or "(none)"]
    if field == "hypervisor":
        return [repr(value) if value else "(none)"]
    if field in ("cmdline", "userspace_cmdline"):
        return [repr(value)]
    return [str(value)]


def _wrap(words: list[str]) -> list[str]:
    """Words in lines of at most CELL_WIDTH characters (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= CELL_WIDTH:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _short(value: Any, field: str = "") -> str:
    text = _hex(value) if field in HEX_FIELDS else repr(value)
    return text if len(text) <= 160 else text[:159] + "…"


def _hex(value: Any) -> str:
    """``value``'s repr with its integers in hex (addresses, sizes)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f"{value:#x}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_hex(v) for v in value) + "]"
    return repr(value)


def _console_diffs(matrix: Matrix) -> list[str]:
    ref = matrix.columns.get(matrix.reference) if matrix.reference else None
    out: list[str] = []
    if not ref or not ref["ok"]:
        return out
    for env, column in matrix.columns.items():
        if env == matrix.reference or not column["ok"]:
            continue
        mine, theirs = column["semantics"]["console"], ref["semantics"]["console"]
        if mine == theirs:
            continue
        diff = [line for line in difflib.unified_diff(theirs.split("\n"), mine.split("\n"), lineterm="", n=0)
                if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        out += ["", f"console, {matrix.reference} (-) vs {env} (+):"]
        out += ["  " + _clip_line(line) for line in diff[:CONSOLE_DIFF_LINES]]
        if len(diff) > CONSOLE_DIFF_LINES:
            out.append(f"  ... {len(diff) - CONSOLE_DIFF_LINES} more lines (--json has the whole text)")
    return out


def _clip_line(text: str, width: int = 118) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
