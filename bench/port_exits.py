#!/usr/bin/env python3
"""Host cost of one port I/O exit (see bench/README.md, "Port I/O exits").

    python bench/port_exits.py [--n 200000]

A raw guest (tests/guestcode.py: GNU as, the test environment ``raw``) runs a loop of N iterations
whose body is one ``in`` (the PIT's counter 2 as Linux's TSC calibration reads it, port 0x61, the
UART's LSR) or a ``nop``; the wall seconds of each run (``stats.wall_seconds``) over N give the
microseconds one exit costs, the ``nop`` loop being the floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from guestcode import run_raw  # noqa: E402

BODIES = (("nop", "nop"), ("PIT counter 2 (0x42)", "inb $0x42, %al"), ("port B (0x61)", "inb $0x61, %al"),
          ("UART LSR (0x3fd)", "inb $0x3fd, %al"))


def loop(body: str, n: int) -> str:
    return f"""
    mov $0xb0, %al
    out %al, $0x43
    mov $0xff, %al
    out %al, $0x42
    out %al, $0x42
    mov $0x01, %al
    out %al, $0x61
    mov ${n}, %ecx
1:  {body}
    dec %ecx
    jnz 1b
    hlt
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    n = ap.parse_args().n
    for name, body in BODIES:
        result, _, _ = run_raw(loop(body, n), timeout=600)
        if result.stop.kind != "halt":
            raise SystemExit(f"{name}: the loop stopped as {result.stop.describe()}")
        print(f"  {name:22s} {result.stats.wall_seconds / n * 1e6:6.2f} us per iteration")


if __name__ == "__main__":
    main()
