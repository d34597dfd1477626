#!/usr/bin/env python3
"""Debian's Linux to hvsim's /init as a xen_pv domU under several hvsim builds, taking turns: the time
each takes, and whether the guest saw the same run (blocks, console bytes, stop).

    python bench/xen_pv_equivalence.py PYTHON [PYTHON ...] [--rounds 3] [--vmlinux PATH]

Each PYTHON is a venv's interpreter with one build of hvsim and its xen_pv plugin installed (for an
old commit: ``git archive COMMIT | tar -x -C DIR`` and ``pip install -e DIR -e DIR/plugins/xen_pv``
into a new venv).  Printed per run: wall and CPU seconds, blocks, the console's CRC-32 and length,
and the stop; then the spread per build.  Exits 1 when two runs differ in what the guest saw: a
speed change must leave guest time (blocks), printk timestamps and the poweroff as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

def one_run(python: str, vmlinux: str, scratch: Path) -> dict:
    result_json = scratch / "result.json"
    command = [python, "-m", "hvsim", "run", "--env", "xen_pv", vmlinux, "--init", "--cmdline", "console=hvc0",
               "--memory", "512M", "--timeout", "300", "--quiet", "--json", str(result_json)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(result_json.read_text())
    return {"wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "blocks": result["stats"]["blocks"], "stop": result["stop"]["kind"],
            "console": f"{zlib.crc32(done.stdout):08x}/{len(done.stdout)}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pythons", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vmlinux", default=os.path.expanduser("~/.cache/hvsim/linux/vmlinux"))
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {p: [] for p in args.pythons}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(1, args.rounds + 1):
            for python in args.pythons:
                run = one_run(python, args.vmlinux, Path(scratch))
                runs[python].append(run)
                print(f"round {round_} {python}: wall {run['wall']:.2f} s, cpu {run['cpu']:.2f} s, "
                      f"blocks {run['blocks']}, console {run['console']}, stop {run['stop']}", flush=True)
    for python, done in runs.items():
        cpu = sorted(r["cpu"] for r in done)
        wall = sorted(r["wall"] for r in done)
        print(f"{python}: cpu {cpu[0]:.2f}-{cpu[-1]:.2f} s, wall {wall[0]:.2f}-{wall[-1]:.2f} s")
    seen = {(r["blocks"], r["console"], r["stop"]) for done in runs.values() for r in done}
    if len(seen) != 1:
        print(f"the guest did not see the same run: {sorted(seen)}", file=sys.stderr)
        return 1
    print(f"every run: blocks, console and stop the same {seen.pop()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
