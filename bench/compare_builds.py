#!/usr/bin/env python3
"""Compare the compute-bound figures of two hvsim builds in one invocation (see bench/README.md).

    python bench/compare_builds.py OLD_PYTHON NEW_PYTHON [--rounds 3] [--n 200000000]

Each interpreter is a venv with one build of hvsim installed (for an old commit:
``git archive COMMIT | tar -x -C DIR`` and ``pip install DIR DIR/plugins/bare_metal`` into a new venv).
The two builds take turns: each round runs ``bench.py --only compute --reps 1`` under the old
interpreter, then under the new one, so a burst of load from other tenants hits one round of each.
Printed per build: the median over rounds of hvsim bare_metal's rate, of bare Unicorn's rate with
hvsim's native block hook, and of the overhead bare / hvsim (each round's ratio is taken inside one
process); then new / old for the two hooked rates, per round and as the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).with_name("bench.py")
FIGURES = (("hvsim bare_metal (Minsn/s)", lambda c: c["hvsim"]["minsn_per_s"]),
           ("bare unicorn + block hook (Minsn/s)", lambda c: c["bare_block_hook"]["minsn_per_s"]),
           ("bare unicorn, no hooks (Minsn/s)", lambda c: c["bare"]["minsn_per_s"]),
           ("overhead bare / hvsim", lambda c: c["overhead"]["ratio"]))


def one_round(python: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compute.json"
        done = subprocess.run([python, str(BENCH), "--only", "compute", "--reps", "1", "--n", str(n),
                               "--json", str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{python}: bench.py failed\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return json.loads(out.read_text())["compute"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="python of the venv holding the old build")
    ap.add_argument("new", help="python of the venv holding the new build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=200_000_000, help="probe_spin iterations (default 200M)")
    args = ap.parse_args()
    rounds = {"old": [], "new": []}
    for _ in range(args.rounds):
        for build in ("old", "new"):
            rounds[build].append(one_round(getattr(args, build), args.n))
    print(f"compute-bound probe loop, N={args.n}, {args.rounds} rounds, old and new taking turns")
    print(f"  {'':<38}{'old':>34}{'new':>34}")
    for label, get in FIGURES:
        cells = []
        for build in ("old", "new"):
            values = [get(c) for c in rounds[build]]
            runs = " ".join(f"{v:.3g}" for v in values)
            cells.append(f"{statistics.median(values):.3g} [{runs}]")
        print(f"  {label:<38}" + "".join(f"{c:>34}" for c in cells))
    for label, get in FIGURES[:2]:
        ratios = [get(n) / get(o) for o, n in zip(rounds["old"], rounds["new"])]
        print(f"  new / old, {label:<27}{statistics.median(ratios):6.2f}x  (per round: "
              + " ".join(f"{r:.2f}" for r in ratios) + ")")


if __name__ == "__main__":
    main()
