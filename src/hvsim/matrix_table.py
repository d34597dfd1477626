"""The side-by-side text form of a ``Matrix``: one row block per field, one column per environment.

A mark before the field name says how the field compares: ``!`` an undeclared difference, ``~``
differences all declared inherent, blank the same everywhere.  Inside a row a differing cell ends
with `` *`` (undeclared) or `` ~`` (inherent).  Below the table: the console lines that differ
from the reference's, the inherent differences with their reasons, and the undeclared ones.
"""

from __future__ import annotations

import difflib
from typing import Any

from .matrix import Matrix
from .semantics import COMPARED_FIELDS, console_digest

CELL_WIDTH = 44
E820_NAMES = {1: "usable", 2: "reserved", 3: "ACPI data", 4: "ACPI NVS", 5: "unusable", 7: "pmem"}
CONSOLE_DIFF_LINES = 12


def render(matrix: Matrix) -> str:
    envs = list(matrix.columns)
    marks = {(d.environment, d.field): ("~" if d.inherent else "*") for d in matrix.differences}
    header = ["field"] + envs
    blocks: list[list[list[str]]] = []        # per field: rows of cells
    for field in COMPARED_FIELDS:
        cells = []
        for env in envs:
            column = matrix.columns[env]
            lines = _cell(field, column)
            mark = marks.get((env, field))
            if mark:
                lines[0] = f"{lines[0]} {mark}"
            cells.append(lines)
        field_marks = {marks.get((env, field)) for env in envs} - {None}
        row_mark = "!" if "*" in field_marks else "~" if field_marks else " "
        height = max(len(c) for c in cells)
        rows = []
        for i in range(height):
            name = f"{row_mark} {field}" if i == 0 else ""
            rows.append([name] + [c[i] if i < len(c) else "" for c in cells])
        blocks.append(rows)
    widths = [max(len(header[i]), *(len(row[i]) for rows in blocks for row in rows)) for i in range(len(header))]
    out = [f"hvsim matrix: {matrix.kernel}, {matrix.config['memory'] >> 20} MiB, smp {matrix.config['smp']}, "
           f"cmdline {matrix.config['cmdline']!r}; reference {matrix.reference}", ""]
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    out.append("  ".join("-" * w for w in widths))
    for rows in blocks:
        for row in rows:
            out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    out += _console_diffs(matrix)
    for env, why in matrix.refused.items():
        out.append(f"not in the matrix: {env}: {why}")
    inherent = [d for d in matrix.differences if d.inherent]
    if inherent:
        out += ["", "inherent differences (declared by the plugins):"]
        out += [f"  ~ {d.environment}.{d.field}: {d.reason}" for d in inherent]
    if matrix.undeclared:
        out += ["", "UNDECLARED differences:"]
        for d in matrix.undeclared:
            if d.field == "run":
                out.append(f"  * {d.environment}: the run failed: {d.reason}")
            else:
                out.append(f"  * {d.environment}.{d.field}: {_short(d.value)} (reference: {_short(d.reference_value)})")
    return "\n".join(out) + "\n"


def _cell(field: str, column: dict) -> list[str]:
    if not column["ok"]:
        return ["FAILED" if field == "entry" else ""] if field != "stop" else [_clip(f"FAILED: {column['error']}")]
    value = column["semantics"][field]
    if value is None:
        return ["(not printed)"]
    if field in ("memmap", "userspace_memmap"):
        return [f"{s:#x} +{n:#x} {E820_NAMES.get(t, f'type {t}')}" for s, n, t in value] or ["(empty)"]
    if field == "userspace_iomem":
        return [_clip(f"{s:#x} +{n:#x} {name}") for s, n, name in value] or ["(empty)"]
    if field in ("userspace_consoles", "userspace_irqs"):
        return [_clip(line) for line in value] or ["(none)"]
    if field in ("clocksources", "userspace_acpi_tables", "userspace_cpu_flags"):
        return _wrap(value) or ["(none)"]
    if field == "userspace_dmi":
        return ["yes" if value else "no"]
    if field == "userspace_hypervisor":
        return [value or "(none)"]
    if field == "calls":
        return [_clip(f"{n} {name}") for name, n in value.items()] or ["(none)"]
    if field == "console":
        return [console_digest(value)]
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
        return [_clip(repr(value))]
    return [_clip(str(value))]


def _wrap(words: list[str]) -> list[str]:
    """Words in lines of at most CELL_WIDTH characters (a longer word gets a line of its own, clipped)."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= CELL_WIDTH:
            lines[-1] += " " + word
        else:
            lines.append(_clip(word))
    return lines


def _clip(text: str) -> str:
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:159] + "…"


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
