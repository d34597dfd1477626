#!/usr/bin/env python3
"""hvsim's long fuzzing campaigns: mutated images, random Xen hypercall tables and random EFI
service calls, run in forked child processes under a memory cap (RLIMIT_AS) and a wall-clock cap
per case, with a report of cases, outcomes, non-hvsim exceptions, hangs, crashes and peak memory.

Targets (the inputs come from the committed corpus in fuzz/corpus/, see make_corpus.py):

- ``image``: a corpus image with 1..8 mutations (bit flips, interesting bytes/words, spliced random
  bytes, truncation), mostly in the first 4 KiB; ``load_image`` with ``describe``, the ELF symbols and
  the bzImage payload, then ``hvsim.api.inspect``.  Expected: success or an ``HvsimError``.
- ``xen-hypercall``: the xen_pv guest of corpus/xen-hypercall runs 1..16 hypercalls drawn from
  Xen's numbers with arguments that matter to the handlers (0, counts, pointers into the image, its
  page tables, the M2P, unmapped and non-canonical addresses, random words); dom0 or domU.
  Expected: a run that ends in a known stop kind other than ``host-error``, with the calls recorded.
- ``efi-service``: the call-script EFI app of corpus/efi-service makes 1..16 calls through boot
  services, runtime services, ConOut and ConIn with ten arguments each (scratch pointers, earlier
  results, handles, tables, wild and non-canonical pointers, sizes, random words).  Expected as
  for xen-hypercall.

Each case is a pure function of (target, seed, index): ``--seed S --only I`` replays one.  Cases
that fail are written under ``--failures`` with a JSON description.  The runner imports hvsim and
finds the plugins once, then forks one child per ``--batch`` cases (default 16): the child runs them
one after the other, each with its own engine, announcing each case before it starts and reporting
it when it ends.  A child still in a case after ``--case-timeout`` is killed and that case counted as
a hang; one that dies by a signal or without a report is a crash of the case it had started; the
cases after it run in a new child.  A ``MemoryError`` under the cap is counted as ``memory-cap``
(and is a finding: loaders should refuse sizes before allocating).  Peak memory is the largest
``ru_maxrss`` of any child (with batches, a case's figure is its batch's).  ``--batch 1`` gives every
case a fresh child, as ``--only`` replays do.
The memory cap is the address space a case may add to what it inherits from the runner; Unicorn
reserves a 1 GiB translation buffer per engine and exits the process (status 1, "Could not allocate
dynamic translator buffer") when it cannot, so the cap must leave room for it: an efi or xen_pv run reaches a VmPeak of about 3.8 GB with
512 MiB of guest RAM (default cap 6 GiB; RSS stays near 150 MB).

Exit status: 0 when no case found a defect, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import select
import signal
import struct
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFECTS = ("exception", "stop:host-error", "hang", "crash", "memory-cap", "oracle")

# -- case generators ---------------------------------------------------------------------------------
INTERESTING_BYTES = (0x00, 0x01, 0x04, 0x10, 0x7F, 0x80, 0xFF)
INTERESTING_WORDS = (0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x4000_0000, 0x1000, 0xFFF, 0x1_0000_0000,
                     (1 << 63), (1 << 64) - 1, 0x7FFF_FFFF_FFFF_FFFF)


def _mutate(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    out = bytearray(data)
    ops = []
    for _ in range(rng.randint(1, 8)):
        if not out:
            break
        window = len(out) if rng.random() < 0.1 else min(len(out), 4096)
        pos = rng.randrange(window)
        op = rng.randrange(5)
        if op == 0:
            bit = rng.randrange(8)
            out[pos] ^= 1 << bit
            ops.append(f"flip {pos:#x}.{bit}")
        elif op == 1:
            out[pos] = rng.choice(INTERESTING_BYTES)
            ops.append(f"byte {pos:#x}={out[pos]:#x}")
        elif op == 2:
            width = rng.choice((2, 4, 8))
            pos = pos & ~(width - 1)
            value = rng.choice(INTERESTING_WORDS) & ((1 << 8 * width) - 1)
            out[pos:pos + width] = value.to_bytes(width, "little")
            ops.append(f"u{8 * width} {pos:#x}={value:#x}")
        elif op == 3:
            garbage = rng.randbytes(rng.randint(1, 64))
            out[pos:pos + len(garbage)] = garbage
            ops.append(f"splice {pos:#x}+{len(garbage)}")
        else:
            out = out[:pos]
            ops.append(f"truncate {pos:#x}")
    return bytes(out), ops


def _plugins():
    """The installed plugins, found once per runner process (every child inherits the manager):
    entry-point discovery costs more than many a case."""
    global _PLUGINS
    if _PLUGINS is None:
        from hvsim import get_plugin_manager
        _PLUGINS = get_plugin_manager()
    return _PLUGINS


_PLUGINS = None


class ImageTarget:
    name = "image"

    def __init__(self, corpus: Path):
        self.bases = {p.stem: p.read_bytes() for p in sorted((corpus / "image").glob("*.bin"))}
        if not self.bases:
            raise SystemExit(f"fuzz: no images in {corpus / 'image'}")

    def generate(self, rng: random.Random) -> dict:
        base = rng.choice(sorted(self.bases))
        data, ops = _mutate(rng, self.bases[base])
        return {"base": base, "ops": ops, "data": data}

    def baseline(self) -> dict:
        return {"base": "probe.bzImage", "ops": [], "data": self.bases["probe.bzImage"]}

    def execute(self, case: dict) -> dict:
        from hvsim.api import inspect
        from hvsim.core.errors import HvsimError
        from hvsim.image import load_image
        data = case["data"]
        try:
            img = load_image(data, name="fuzz")
            json.dumps(img.describe(), default=str)
            for entry in img.entries:
                _ = entry.kind, entry.mode
            if img.elf is not None:
                _ = img.elf.symbols, img.elf.phys_range
            if img.bzimage is not None:
                try:
                    img.payload_elf()
                except HvsimError:
                    pass
            outcome = "loaded"
        except HvsimError:
            outcome = "refused"
        try:
            json.dumps(inspect(data, pm=_plugins()), default=str)
        except HvsimError:
            pass
        return {"outcome": outcome}


XEN_ARGUMENTS_FIXED = (0, 1, 2, 3, 6, 7, 14, 512, 0x7FF0, 0xFFFF_FFFF, 1 << 31, (1 << 64) - 1,
                       0xFFFF_8000_0000_0000, 0xFFFF_8200_0000_0000, 0x0000_7000_DEAD_0000, 0x3000, 0x5000,
                       1 << 63, 0x0000_8000_0000_0000)


class XenHypercallTarget:
    name = "xen-hypercall"

    def __init__(self, corpus: Path):
        self.image = (corpus / "xen-hypercall" / "guest.elf").read_bytes()
        self.meta = json.loads((corpus / "xen-hypercall" / "meta.json").read_text())

    def _argument(self, rng: random.Random) -> int:
        pick = rng.randrange(4)
        if pick == 0:
            return rng.choice(XEN_ARGUMENTS_FIXED)
        if pick == 1:
            return rng.randint(self.meta["image_start"], self.meta["table"] + 0x1000)
        if pick == 2:
            return rng.randint(0, 64)
        return rng.getrandbits(64)

    def generate(self, rng: random.Random) -> dict:
        rows = []
        for _ in range(rng.randint(1, self.meta["rows"])):
            number = rng.randint(0, 45) if rng.random() < 0.95 else rng.getrandbits(64)
            rows.append([number] + [self._argument(rng) for _ in range(5)])
        return {"rows": rows, "dom0": rng.random() < 0.5}

    def baseline(self) -> dict:
        return {"rows": [[17, 0, 0, 0, 0, 0]], "dom0": False}          # xen_version(XENVER_version)

    def guest(self, case: dict) -> bytes:
        """The corpus guest with the case's rows as its hypercall table."""
        image = bytearray(self.image)
        at = self.meta["table_offset"]
        table = b"".join(struct.pack("<6Q", *row) for row in case["rows"]) + struct.pack("<q", -1)
        image[at:at + len(table)] = table
        return bytes(image)

    def execute(self, case: dict) -> dict:
        from hvsim import MachineConfig
        from hvsim.api import Run
        result = Run("xen_pv", self.guest(case), MachineConfig(memory="64M", timeout=1),
                     options={"dom0": case["dom0"]}, pm=_plugins()).execute()
        calls = sum(1 for e in result.events if e.kind == "Call" and e.interface == "xen-hypercall")
        return _run_report(result, calls, "no hypercall recorded")


def _run_report(result, calls: int, silent: str) -> dict:
    """A case's outcome from its run: the stop, the calls recorded, the traceback of a host error, or
    ``silent`` as an oracle failure when the guest's calls never reached the environment."""
    report = {"outcome": f"stop:{result.stop.kind}", "calls": calls}
    if result.stop.kind == "host-error":
        report["detail"] = result.stop.describe()
        report["traceback"] = str(result.extra.get("host_traceback", ""))[-4000:]
    elif not calls:
        report["oracle"] = silent
    return report


# tests/efi_apps.py's argument encodings (resolved by the app at run time)
BS, RT, CON_OUT, CON_IN, BS_AT_ENTRY = 0x60, 0x58, 0x40, 0x30, 0x1000
THIS, IMAGE_HANDLE, SYSTEM_TABLE = 0xFEEF << 48, 0xFEEC << 48, 0xFEEB << 48


def _scratch(offset: int) -> int:
    return 0xFEED << 48 | offset


def _scratch_value(offset: int) -> int:
    return 0xFEEE << 48 | offset


class EfiServiceTarget:
    name = "efi-service"

    def __init__(self, corpus: Path):
        from hvsim.abi import efi
        self.app = (corpus / "efi-service" / "app.efi").read_bytes()
        self.meta = json.loads((corpus / "efi-service" / "meta.json").read_text())
        bs = [(BS, efi.BOOT_SERVICES_FIRST_SLOT + 8 * i) for i, _ in enumerate(efi.BOOT_SERVICES)]
        self.slots = (bs + [(BS_AT_ENTRY, slot) for _, slot in bs]
                      + [(RT, efi.RUNTIME_SERVICES_FIRST_SLOT + 8 * i) for i, _ in enumerate(efi.RUNTIME_SERVICES)]
                      + [(CON_OUT, 8 * i) for i, _ in enumerate(efi.TEXT_OUTPUT_SERVICES)]
                      + [(CON_IN, 8 * i) for i, _ in enumerate(efi.TEXT_INPUT_SERVICES)])
        self.names = {}
        for table, names, first in ((BS, efi.BOOT_SERVICES, efi.BOOT_SERVICES_FIRST_SLOT),
                                    (BS_AT_ENTRY, efi.BOOT_SERVICES, efi.BOOT_SERVICES_FIRST_SLOT),
                                    (RT, efi.RUNTIME_SERVICES, efi.RUNTIME_SERVICES_FIRST_SLOT),
                                    (CON_OUT, efi.TEXT_OUTPUT_SERVICES, 0), (CON_IN, efi.TEXT_INPUT_SERVICES, 0)):
            for i, name in enumerate(names):
                self.names[(table, first + 8 * i)] = name

    def _argument(self, rng: random.Random) -> int:
        pick = rng.randrange(7)
        size = self.meta["scratch_size"]
        if pick == 0:
            return _scratch(rng.choice((0, 8, 0x28, 0x100, 0x1000, rng.randrange(0, min(size, 0x10000)))))
        if pick == 1:
            return _scratch_value(rng.choice((0, 8, 0x10, rng.randrange(0, 0x1000, 8))))
        if pick == 2:
            return rng.choice((THIS, IMAGE_HANDLE, SYSTEM_TABLE))
        if pick == 3:
            return rng.choice((0, 1, 2, 3, 4, 7, 8, 16, 0x1000, 0x10_0000, 0xFFFF_FFFF, (1 << 64) - 1, 1 << 63,
                               0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000 | 5, 0x1_0000_0000))
        if pick == 4:
            return rng.randint(0, 64)
        if pick == 5:
            return rng.choice((0x0000_7000_DEAD_0000, 0x8000_0000_0000_0000, 0xFFFF_8000_0000_0000, 0x1000,
                               0xFFFF_FFFF_FFFF_F000, self.meta["scratch"] + size - 4))
        return rng.getrandbits(64)

    def generate(self, rng: random.Random) -> dict:
        rows = []
        for _ in range(rng.randint(1, self.meta["rows"])):
            table, slot = rng.choice(self.slots)
            rows.append([table, slot] + [self._argument(rng) for _ in range(self.meta["max_args"])])
        return {"rows": rows, "services": [self.names[(r[0], r[1])] for r in rows]}

    def baseline(self) -> dict:
        from hvsim.abi import efi
        slot = efi.BOOT_SERVICES_FIRST_SLOT + 8 * efi.BOOT_SERVICES.index("GetNextMonotonicCount")
        return {"rows": [[BS, slot, _scratch(0)] + [0] * 9], "services": ["GetNextMonotonicCount"]}

    def execute(self, case: dict) -> dict:
        from hvsim import MachineConfig
        from hvsim.api import Run
        app = bytearray(self.app)
        at, n = self.meta["records_offset"], self.meta["max_args"]
        records = b"".join(struct.pack(f"<{3 + n}Q", row[0], row[1], n, *row[2:]) for row in case["rows"])
        records += struct.pack("<q", -1)
        app[at:at + len(records)] = records
        result = Run("efi", bytes(app), MachineConfig(timeout=1), pm=_plugins()).execute()
        calls = sum(1 for e in result.events if e.kind == "Call")
        return _run_report(result, calls, "no service call recorded")


class SelfTestTarget:
    """The harness's own check: cases that return, raise, hang, exhaust memory and die by a signal."""
    name = "selftest"
    KINDS = ("ok", "raise", "hang", "allocate", "signal", "hvsim-error")

    def __init__(self, corpus: Path):
        pass

    def generate(self, rng: random.Random) -> dict:
        return {"kind": rng.choice(self.KINDS)}

    def baseline(self) -> dict:
        return {"kind": "ok"}

    def execute(self, case: dict) -> dict:
        from hvsim.core.errors import HvsimError
        kind = case["kind"]
        if kind == "raise":
            raise ValueError("selftest")
        if kind == "hang":
            while True:
                pass
        if kind == "allocate":
            return {"outcome": str(len(bytearray(64 << 30)))}
        if kind == "signal":
            os.kill(os.getpid(), signal.SIGSEGV)
        if kind == "hvsim-error":
            try:
                raise HvsimError("selftest")
            except HvsimError:
                return {"outcome": "refused"}
        return {"outcome": "ok"}


TARGETS = {t.name: t for t in (ImageTarget, XenHypercallTarget, EfiServiceTarget, SelfTestTarget)}
CAMPAIGN = ("image", "xen-hypercall", "efi-service")


# -- one case in a child -----------------------------------------------------------------------------
def _case_rng(target: str, seed: int, index: int) -> random.Random:
    return random.Random(f"{target}:{seed}:{index}")


def _address_space() -> int:
    """This process's virtual size in bytes (VmSize of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _execute(target, case: dict) -> dict:
    """Run one case; what it raised becomes its report."""
    try:
        return target.execute(case)
    except MemoryError:
        return {"outcome": "memory-cap"}
    except BaseException as exc:  # noqa: BLE001 -- the finding this harness looks for
        from hvsim.core.errors import HvsimError
        kind = "hvsim-error" if isinstance(exc, HvsimError) else "exception"
        report = {"outcome": kind, "error": f"{type(exc).__name__}: {exc}"[:500]}
        if kind == "exception":
            report["traceback"] = traceback.format_exc()[-4000:]
        return report


def _child(target, cases: list, memory_cap: int, write_fd: int) -> None:
    """Runs in the forked child: the cases one after the other, each announced before it starts and
    reported when it ends (one JSON line each), so the parent can name the case a hang or a crash
    belongs to.  Never returns."""
    status = 0
    try:
        inherited = _address_space()
        resource.setrlimit(resource.RLIMIT_AS, (inherited + memory_cap, inherited + memory_cap))
        with os.fdopen(write_fd, "wb") as pipe:
            for index, case in cases:
                pipe.write(json.dumps({"start": index}).encode() + b"\n")
                pipe.flush()
                report = _execute(target, case)
                pipe.write(json.dumps({"index": index, "report": report}, default=str).encode() + b"\n")
                pipe.flush()
                if len(cases) > 1:
                    gc.collect()          # the case's engine and guest RAM go before the next case
    except BaseException:  # noqa: BLE001
        status = 3
    os._exit(status)


def run_batch(target, cases: list, *, memory_cap: int, timeout: float) -> tuple[list, list]:
    """Fork one child for ``cases`` (a list of (index, case)); return ([(index, report)], the cases
    not run).  ``timeout`` caps each case; a child killed at it is a hang of the case it had
    started, one that dies is a crash of that case, and the cases after it come back unrun.  Each
    report has the case's wall time and the child's peak RSS (KiB; the batch's, with a batch)."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    case_start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(target, cases, memory_cap, write_fd)
    os.close(write_fd)
    done, started, buffer, hung = [], None, b"", False
    while True:
        left = case_start + timeout - time.monotonic()
        if left <= 0:
            hung = True
            break
        ready, _, _ = select.select([read_fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = json.loads(line)
            now = time.monotonic()
            if "start" in message:
                started = message["start"]
            else:
                report = message["report"]
                report["seconds"] = round(now - case_start, 4)
                done.append((message["index"], report))
                started = None
            case_start = now
    os.close(read_fd)
    if hung:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    rest = cases[len(done):]
    if rest:
        index = started if started is not None else rest[0][0]
        if hung:
            report = {"outcome": "hang", "seconds": round(timeout, 4)}
        else:
            how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
            report = {"outcome": "crash", "error": f"child ended by {how} without a report",
                      "seconds": round(time.monotonic() - case_start, 4)}
        assert rest[0][0] == index, (rest[0][0], index)
        done.append((index, report))
        rest = rest[1:]
    for _, report in done:
        report["max_rss_kib"] = usage.ru_maxrss
    return done, rest


def run_case(target, case: dict, *, memory_cap: int, timeout: float) -> dict:
    """One case in its own child: its report, wall time and peak RSS (KiB)."""
    (_, report), = run_batch(target, [(0, case)], memory_cap=memory_cap, timeout=timeout)[0]
    return report


def _finding(report: dict) -> str | None:
    if report["outcome"] in DEFECTS:
        return report["outcome"]
    if "oracle" in report:
        return "oracle"
    return None


# -- a campaign --------------------------------------------------------------------------------------
def campaign(target, *, seed: int, cases: int | None, seconds: float | None, memory_cap: int, timeout: float,
             failures: Path | None, only: int | None = None, progress: bool = False, batch: int = 1) -> dict:
    baseline = run_case(target, target.baseline(), memory_cap=memory_cap, timeout=timeout)
    if _finding(baseline) and target.name != "selftest":
        raise SystemExit(f"fuzz: {target.name}: the unmodified corpus case fails: {baseline}")
    target.execute(target.baseline())              # warm the parent: plugins and lazy imports load once
    gc.collect()                                   # and free its engine before the children inherit it;
    gc.freeze()                                    # children's collections then skip the inherited heap
    outcomes, findings, signatures = Counter(), [], Counter()
    peak_rss, total_time, slowest = 0, 0.0, 0.0
    start = time.monotonic()
    pending: list = []                              # (index, case) generated, not yet run
    next_index = only if only is not None else 0
    done = 0

    def more_wanted() -> bool:
        if only is not None:
            return next_index == only
        if cases is not None and next_index >= cases:
            return False
        return seconds is None or time.monotonic() - start < seconds

    while True:
        while len(pending) < batch and more_wanted():
            pending.append((next_index, target.generate(_case_rng(target.name, seed, next_index))))
            next_index += 1
        if not pending:
            break
        by_index = dict(pending)
        results, pending = run_batch(target, pending, memory_cap=memory_cap, timeout=timeout)
        for index, report in results:
            case = by_index[index]
            outcomes[report["outcome"]] += 1
            peak_rss = max(peak_rss, report["max_rss_kib"])
            total_time += report["seconds"]
            slowest = max(slowest, report["seconds"])
            kind = _finding(report)
            if kind:
                signature = f"{kind}: {report.get('error') or report.get('detail') or report.get('oracle') or ''}"[:200]
                signatures[signature] += 1
                if signatures[signature] <= 3:
                    entry = {"index": index, "kind": kind, **{k: v for k, v in report.items()},
                             "case": {k: v for k, v in case.items() if k != "data"}}
                    findings.append(entry)
                    if failures is not None:
                        failures.mkdir(parents=True, exist_ok=True)
                        stem = failures / f"{target.name}-{seed}-{index}"
                        stem.with_suffix(".json").write_text(json.dumps(entry, indent=1, default=str) + "\n")
                        if "data" in case:
                            stem.with_suffix(".bin").write_bytes(case["data"])
            done += 1
            if progress and done % 500 == 0:
                print(f"  {target.name}: {done} cases, {dict(outcomes)}", file=sys.stderr, flush=True)
    wall = time.monotonic() - start
    return {
        "target": target.name, "seed": seed, "cases": done, "wall_seconds": round(wall, 1),
        "cases_per_second": round(done / wall, 1) if wall else None,
        "mean_case_seconds": round(total_time / done, 4) if done else None, "slowest_case_seconds": slowest,
        "outcomes": dict(sorted(outcomes.items())),
        "exceptions": sum(outcomes[k] for k in ("exception",)),
        "host_errors": outcomes["stop:host-error"], "hangs": outcomes["hang"], "crashes": outcomes["crash"],
        "memory_cap_hits": outcomes["memory-cap"], "oracle_failures": sum(1 for f in findings if f["kind"] == "oracle"),
        "peak_rss_kib": peak_rss, "baseline_rss_kib": baseline["max_rss_kib"],
        "distinct_findings": dict(signatures), "findings": findings,
    }


def _print(report: dict) -> None:
    print(f"{report['target']}: {report['cases']} cases in {report['wall_seconds']} s "
          f"({report['cases_per_second']}/s, slowest {report['slowest_case_seconds']:.2f} s); "
          f"exceptions {report['exceptions']}, host errors {report['host_errors']}, hangs {report['hangs']}, "
          f"crashes {report['crashes']}, memory-cap {report['memory_cap_hits']}; "
          f"peak RSS {report['peak_rss_kib'] / 1024:.0f} MiB (baseline {report['baseline_rss_kib'] / 1024:.0f} MiB)")
    print(f"  outcomes: {report['outcomes']}")
    for signature, count in report["distinct_findings"].items():
        print(f"  FINDING x{count}: {signature}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS) + ["all"],
                        help="a target (repeatable); 'all' = image, xen-hypercall, efi-service (default)")
    parser.add_argument("--cases", type=int, help="cases per target")
    parser.add_argument("--seconds", type=float, help="time budget per target (with --cases: whichever first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, help="replay case INDEX of --seed")
    parser.add_argument("--case-timeout", type=float, default=20.0, help="wall-clock cap per case (s)")
    parser.add_argument("--memory-cap", type=int, default=6144,
                        help="address space a case may add to the runner's, as RLIMIT_AS (MiB)")
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus")
    parser.add_argument("--failures", type=Path, help="directory for failing cases")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--batch", type=int, default=16,
                        help="cases per child process (1: a fresh child for every case)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    names = args.target or ["all"]
    names = [n for name in names for n in (CAMPAIGN if name == "all" else (name,))]
    if args.cases is None and args.seconds is None and args.only is None:
        parser.error("give --cases, --seconds or --only")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("")              # a bad path is found before the campaign, not after
    reports = []
    for name in names:
        target = TARGETS[name](args.corpus)
        report = campaign(target, seed=args.seed, cases=args.cases, seconds=args.seconds,
                          memory_cap=args.memory_cap << 20, timeout=args.case_timeout, failures=args.failures,
                          only=args.only, progress=args.progress, batch=max(1, args.batch))
        _print(report)
        reports.append(report)
    total = {"command": " ".join(["fuzz/run.py", *(argv if argv is not None else sys.argv[1:])]),
             "targets": reports, "cases": sum(r["cases"] for r in reports),
             "findings": sum(sum(r["distinct_findings"].values()) for r in reports),
             "peak_rss_kib": max(r["peak_rss_kib"] for r in reports)}
    if args.json is not None:
        args.json.write_text(json.dumps(total, indent=1, default=str) + "\n")
    return 1 if total["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
