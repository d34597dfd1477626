#!/usr/bin/env python3
"""hvsim speed benchmark: ratios measured in one run, on one machine (see bench/README.md).

    python bench/bench.py [--quick] [--reps N] [--linux PATH_TO_VMLINUZ] [--vmlinux PATH] [--only SECTIONS]
                          [--json FILE]

1. Guest instructions per second on the probe kernel's compute loop ``probe_spin`` (4 instructions
   per iteration): bare Unicorn with no hooks, bare Unicorn with only hvsim's native block hook,
   hvsim ``bare_metal``, and hvsim with an exact instruction budget (per-instruction native hook).
2. The hypercall round trip: a guest under ``xen_pvh`` doing ``xen_version(XENVER_version)`` in a loop
   (``vmcall`` -> answered in Python -> back in the guest), in microseconds per call, next to the same
   loop in bare Unicorn whose ``vmcall`` reaches an empty Python ``UC_HOOK_INSN_INVALID`` hook.
3. Seconds from ``execute()`` to the "Linux version" banner of a Debian kernel under ``bare_metal``,
   booted as the ELF vmlinux hvsim extracts and as the bzImage (in-guest decompressor).
4. The wall time of the whole probe matrix (``hvsim matrix``: every installed environment, one
   process each, at most one per CPU at once), as a user waits for it.
5. The cost of boot-path coverage (the native block-address hash set): the same run with and
   without it, as a ratio, on the probe's compute loop (one block per 4 instructions: the worst
   case) and on the Linux vmlinux's boot under ``bare_metal`` up to the local-APIC stop.
6. Linux to /init: Debian's ELF vmlinux with hvsim's own /init (``init.cpio``) booted to its poweroff
   under ``bare_metal``, ``kvm_pvh``, ``xen_pv`` (domU) and ``xen_pv --dom0``, and by QEMU TCG on the
   same files when ``qemu-system-x86_64`` is installed, as wall seconds and hvsim/QEMU ratios, with the
   wall and guest time at which each boot reached the banner, /init and the poweroff.  The dom0 is
   compared with its own reference: QEMU TCG booting Debian's Xen (scripts/fetch-xen) with the same
   vmlinux as its dom0 (``hvsim.reference_xen``).

``--only compute,init`` runs only the named sections (compute, hypercall, banner, matrix, coverage,
init).

Shared machines are noisy: nothing here asserts a timing. Each figure is the median of ``--reps``
repetitions, printed with every run; "cpu time" figures use process CPU time instead of wall time
(for comparison only: inside a VM, steal time shows up in both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from elftools.elf.elffile import ELFFile
from unicorn import UC_ARCH_X86, UC_HOOK_INSN_INVALID, UC_MODE_64, Uc
from unicorn.x86_const import UC_X86_REG_RCX, UC_X86_REG_RDI, UC_X86_REG_RIP, UC_X86_REG_RSP

from hvsim import MachineConfig, get_plugin_manager, hookimpl
from hvsim.api import Run
from hvsim.core.engine import new_engine
from hvsim.core.native import NativeHooks
from hvsim.core.result import StopReason
from hvsim.kernels import probe_path
from hvsim.probe_report import parse_probe_report

DEFAULT_LINUX = Path("~/.cache/hvsim/linux/vmlinuz").expanduser()
LINUX_CMDLINE = "earlyprintk=serial,ttyS0 console=ttyS0 nokaslr"
BANNER = "Linux version"
QEMU = "qemu-system-x86_64"
# Bare Unicorn layout (paging off, UC_MODE_64's reset state runs 64-bit code with flat addresses).
CODE, RETURN, STACK_TOP, RAM = 0x100000, 0x200000, 0x300000, 4 << 20


def median_spread(values):
    return statistics.median(values), min(values), max(values)


def fmt_runs(values, scale=1.0, digits=0):
    return " ".join(f"{v * scale:.{digits}f}" for v in values)


# -- 1. compute-bound loop ------------------------------------------------------------------------
def spin_function(elf_path: Path) -> tuple[int, bytes]:
    """Address and bytes of probe_spin (st_size bytes, from the PT_LOAD holding it)."""
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        syms = symtab.get_symbol_by_name("probe_spin") if symtab else None
        if not syms:
            sys.exit(f"{elf_path}: no probe_spin in .symtab")
        addr, size = syms[0]["st_value"], syms[0]["st_size"]
        for seg in elf.iter_segments():
            start = seg["p_vaddr"]
            if seg["p_type"] == "PT_LOAD" and start <= addr and addr + size <= start + seg["p_filesz"]:
                return addr, seg.data()[addr - start: addr - start + size]
    sys.exit(f"{elf_path}: probe_spin at {addr:#x} is in no PT_LOAD segment")


def spin_insns(n: int) -> int:
    """Instructions probe_spin(n) executes including its ret (probe/spin.S): 3 + 4n + 1."""
    return 4 * n + 4


def bare_unicorn(code: bytes, n: int, block_hook: bool = False, hvsim_model: bool = False) -> tuple[float, float]:
    """(wall, cpu) seconds of emu_start running probe_spin(n) to its return address; Unicorn's default
    CPU model, or with ``hvsim_model`` the one hvsim opens (core/engine.py), still outside SVM guest mode."""
    uc = new_engine() if hvsim_model else Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, RAM)
    uc.mem_write(CODE, code)
    uc.mem_write(STACK_TOP - 8, struct.pack("<Q", RETURN))
    uc.reg_write(UC_X86_REG_RSP, STACK_TOP - 8)
    uc.reg_write(UC_X86_REG_RDI, n)
    hooks = NativeHooks(uc) if block_hook else None  # holds the control block the hook writes to
    t, c = time.perf_counter(), time.process_time()
    uc.emu_start(CODE, RETURN)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if uc.reg_read(UC_X86_REG_RIP) != RETURN or uc.reg_read(UC_X86_REG_RSP) != STACK_TOP:
        sys.exit("bare unicorn: probe_spin did not return to its caller")
    if hooks is not None and hooks.control.blocks < n:
        sys.exit(f"bare unicorn: the block hook saw {hooks.control.blocks} blocks, expected one per iteration")
    return wall, cpu


def hvsim_probe(n: int, budget: bool = False):
    """(wall, cpu, result) of one bare_metal run of the probe ELF with probe.spin=n."""
    config = MachineConfig(cmdline=f"probe.spin={n}", timeout=None,
                           max_instructions=10**12 if budget else None)
    prepared = Run("bare_metal", probe_path("elf"), config)
    c = time.process_time()
    result = prepared.execute()
    cpu = time.process_time() - c
    spin = parse_probe_report(result.console()).spin
    if result.stop.kind != "poweroff" or spin != n:
        sys.exit(f"hvsim probe.spin={n}: stop {result.stop.describe()}, reported spin {spin}")
    return result.stats.wall_seconds, cpu, result


def rate_row(label, insns, walls, cpus):
    """A table row (and its JSON record) for `insns` instructions taking `walls` seconds per run."""
    rates = [insns / w for w in walls]
    med, lo, hi = median_spread(rates)
    cpu_rate = insns / statistics.median(cpus)
    print(f"  {label:<40}{med / 1e6:7.0f} Minsn/s  (runs: {fmt_runs(rates, 1e-6)}; cpu time: {cpu_rate / 1e6:.0f})")
    return {"minsn_per_s": med / 1e6, "min": lo / 1e6, "max": hi / 1e6, "runs": [r / 1e6 for r in rates],
            "cpu_minsn_per_s": cpu_rate / 1e6}


def bench_compute(n: int, n_budget: int, reps: int) -> dict:
    addr, code = spin_function(probe_path("elf"))
    print(f"compute-bound probe loop (probe_spin at {addr:#x}, {len(code)} bytes; N={n}, {reps} runs)")
    bare_unicorn(code, 1000)  # warm-up: load libunicorn's code paths once
    # The configurations take turns within each repetition, so a burst of load from other tenants
    # hits one repetition of each rather than every repetition of one.
    times = {k: ([], []) for k in ("bare", "bare_model", "bare_block_hook", "hvsim", "hvsim_budget")}
    for _ in range(reps):
        for key, hook, model in (("bare", False, False), ("bare_model", False, True), ("bare_block_hook", True, False)):
            wall, cpu = bare_unicorn(code, n, hook, model)
            times[key][0].append(wall)
            times[key][1].append(cpu)
        # hvsim: the spin=0 run measures everything but the loop; the difference is 4N instructions.
        for key, count, budget in (("hvsim", n, False), ("hvsim_budget", n_budget, True)):
            w0, c0, r0 = hvsim_probe(0, budget)
            w, c, r = hvsim_probe(count, budget)
            times[key][0].append(w - w0)
            times[key][1].append(c - c0)
            if budget:
                r0_budget, r_budget = r0, r
            else:
                blocks = r.stats.blocks
    out = {"n": n, "n_budget": n_budget, "reps": reps}
    rows = (("bare", "bare unicorn, no hooks", spin_insns(n)),
            ("bare_model", "bare unicorn, hvsim's CPU model (EPYC)", spin_insns(n)),
            ("bare_block_hook", "bare unicorn + hvsim block hook", spin_insns(n)),
            ("hvsim", "hvsim bare_metal", 4 * n))
    for key, label, insns in rows:
        out[key] = rate_row(label, insns, *times[key])
    ratios = [spin_insns(n) / b / (4 * n / h) for b, h in zip(times["bare"][0], times["hvsim"][0])]
    ratio, lo, hi = median_spread(ratios)
    cpu_ratio = out["bare"]["cpu_minsn_per_s"] / out["hvsim"]["cpu_minsn_per_s"]
    out["overhead"] = {"ratio": ratio, "min": lo, "max": hi, "cpu_ratio": cpu_ratio}
    print(f"  {'overhead (bare / hvsim)':<40}{ratio:7.2f}x  (per run: {fmt_runs(ratios, digits=2)}; "
          f"cpu time: {cpu_ratio:.2f}x; {blocks} blocks, one native hook call each)")
    out["hvsim"]["blocks"] = blocks
    out["hvsim_budget"] = rate_row(f"hvsim, exact insn budget (N={n_budget})", 4 * n_budget, *times["hvsim_budget"])
    slowdown = out["hvsim"]["minsn_per_s"] / out["hvsim_budget"]["minsn_per_s"]
    out["budget_slowdown"] = slowdown
    print(f"  {'slowdown of the exact budget':<40}{slowdown:7.2f}x  vs hvsim without it")
    out["insn_check"] = check_counts(n_budget, r0_budget, r_budget)
    return out


def check_counts(n: int, r0, r) -> dict:
    """The counted instructions: the spin=0 run's, plus 4n for the loop, plus a few hundred for the
    longer number the probe parses, echoes and prints; 2n vs n (same digit count) must differ by 4n."""
    base, counted = r0.stats.instructions, r.stats.instructions
    extra = counted - base - 4 * n
    print(f"  instructions counted (N={n}): {counted} = {base} (spin=0 run) + 4N + {extra} "
          f"(the {len(str(n)) - 1} more digits of N parsed, echoed, printed)")
    check = {"n": n, "counted": counted, "spin0_counted": base, "digits_extra": extra}
    if len(str(2 * n)) == len(str(n)):
        counted2 = hvsim_probe(2 * n, True)[2].stats.instructions
        exact = counted2 - counted == 4 * n
        print(f"  instructions counted (N={2 * n}) - (N={n}): {counted2 - counted} "
              f"{'== 4N exactly' if exact else f'!= 4N = {4 * n}: UNEXPECTED'}")
        check.update(counted_2n=counted2, exact=exact)
    return check


# -- 2. hypercall round trip ----------------------------------------------------------------------
VMCALL = b"\x0f\x01\xc1"
NOP3 = b"\x0f\x1f\x00"                  # nopl (%eax): the loop without the hypercall, same length
PVH_ENTRY = 0x100000
XEN_ELFNOTE_PHYS32_ENTRY = 18


def pvh_hypercall_loop(n: int, insn: bytes) -> bytes:
    """A PVH guest (ELF32, one PT_LOAD at 1 MiB, a PHYS32_ENTRY note) running n times
    ``mov $17,%eax; xor %ebx,%ebx; <insn>; dec %esi; jnz`` (xen_version(XENVER_version)), then hlt."""
    body = b"\xb8\x11\x00\x00\x00" + b"\x31\xdb" + insn + b"\x4e"
    code = b"\xbe" + struct.pack("<I", n) + body + b"\x75" + struct.pack("<b", -(len(body) + 2)) + b"\xf4"
    note = struct.pack("<III", 4, 4, XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + struct.pack("<I", PVH_ENTRY)
    code_at, note_at = 0x100, 0x100 + (len(code) + 3) // 4 * 4
    ehdr = (b"\x7fELF\x01\x01\x01" + bytes(9)
            + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, PVH_ENTRY, 52, 0, 0, 52, 32, 2, 40, 0, 0))
    phdrs = (struct.pack("<8I", 1, code_at, PVH_ENTRY, PVH_ENTRY, len(code), len(code), 5, 16)
             + struct.pack("<8I", 4, note_at, 0, 0, len(note), len(note), 4, 4))
    return (ehdr + phdrs).ljust(code_at, b"\0") + code.ljust(note_at - code_at, b"\0") + note


def xen_hypercall_loop(n: int, insn: bytes) -> float:
    """Emulation seconds (``result.stats.wall_seconds``) of the PVH loop under xen_pvh; checks that
    the guest halted after exactly n answered hypercalls (0 for the NOP3 loop)."""
    prepared = Run("xen_pvh", pvh_hypercall_loop(n, insn), MachineConfig(memory="64M", timeout=None))
    result = prepared.execute()
    calls = prepared.machine.plugin_state["xen_pvh"].calls
    expected = n if insn == VMCALL else 0
    if result.stop.kind != "halt" or calls != expected or (expected and prepared.machine.reg("rax") != 4 << 16 | 17):
        sys.exit(f"xen_pvh hypercall loop: stop {result.stop.describe()}, {calls} hypercalls answered, "
                 f"expected {expected}")
    return result.stats.wall_seconds


def bare_invalid_hook_loop(n: int, insn: bytes) -> float:
    """Seconds of emu_start on ``mov $n,%ecx; 1: <insn>; dec %ecx; jnz 1b`` in an engine opened as hvsim
    opens it (64-bit, paging off), a ``vmcall`` reaching an empty Python UC_HOOK_INSN_INVALID hook
    that steps RIP over it and returns True."""
    body = insn + b"\xff\xc9"                                     # dec %ecx
    code = b"\xb9" + struct.pack("<I", n) + body + b"\x75" + struct.pack("<b", -(len(body) + 2))
    uc = new_engine()
    uc.mem_map(0, RAM)
    uc.mem_write(CODE, code)

    def skip_vmcall(uc, _user_data):
        uc.reg_write(UC_X86_REG_RIP, uc.reg_read(UC_X86_REG_RIP) + 3)
        return True

    uc.hook_add(UC_HOOK_INSN_INVALID, skip_vmcall)
    t = time.perf_counter()
    uc.emu_start(CODE, CODE + len(code))
    wall = time.perf_counter() - t
    if uc.reg_read(UC_X86_REG_RCX) != 0 or uc.reg_read(UC_X86_REG_RIP) != CODE + len(code):
        sys.exit("bare unicorn: the vmcall loop did not run to its end")
    return wall


def us_row(label: str, per_call: list[float], extra: str = "") -> dict:
    med, lo, hi = median_spread(per_call)
    print(f"  {label:<40}{med * 1e6:7.2f} us/call  (runs: {fmt_runs(per_call, 1e6, 2)}{extra})")
    return {"us_per_call": med * 1e6, "min": lo * 1e6, "max": hi * 1e6, "runs": [v * 1e6 for v in per_call]}


def bench_hypercall(n: int, reps: int) -> dict:
    """µs per hypercall round trip under xen_pvh and per empty invalid-opcode hook in bare Unicorn;
    each is (loop with vmcall - the same loop with a 3-byte nop) / n."""
    print(f"hypercall round trip (xen_version(XENVER_version) in a loop; N={n}, {reps} runs)")
    xen_hypercall_loop(100, VMCALL)          # warm-up: plugin hooks, capstone, first translations
    bare_invalid_hook_loop(100, VMCALL)
    times = {k: [] for k in ("xen", "xen_loop", "bare", "bare_loop")}
    for _ in range(reps):
        times["xen"].append(xen_hypercall_loop(n, VMCALL))
        times["xen_loop"].append(xen_hypercall_loop(n, NOP3))
        times["bare"].append(bare_invalid_hook_loop(n, VMCALL))
        times["bare_loop"].append(bare_invalid_hook_loop(n, NOP3))
    xen = [(a - b) / n for a, b in zip(times["xen"], times["xen_loop"])]
    bare = [(a - b) / n for a, b in zip(times["bare"], times["bare_loop"])]
    out = {"n": n, "reps": reps, "seconds": times}
    loop_us = statistics.median(times["xen_loop"]) / n * 1e6
    out["xen_pvh"] = us_row("hvsim xen_pvh hypercall (vmcall)", xen,
                            f"; the loop alone: {loop_us:.3f} us/iteration")
    out["bare_hook"] = us_row("bare unicorn, empty Python invalid hook", bare)
    ratios = [a / b for a, b in zip(xen, bare)]
    ratio, lo, hi = median_spread(ratios)
    out["ratio"] = {"ratio": ratio, "min": lo, "max": hi, "runs": ratios}
    print(f"  {'ratio (hvsim / empty hook)':<40}{ratio:7.1f}x  (per run: {fmt_runs(ratios, digits=1)})")
    return out


# -- 3. Linux banner ------------------------------------------------------------------------------
class StopAtBanner:
    """Observer plugin: stops the run at the first console line holding the banner."""

    def __init__(self):
        self.t = None
        self.line = ""

    @hookimpl
    def hvsim_event(self, machine, event):
        if self.t is None and event.kind == "ConsoleOutput" and BANNER in event.text:
            self.t = time.monotonic()
            self.line = event.text.strip()
            machine.stop(StopReason("poweroff", detail="banner reached (benchmark)"))


def boot_to_banner(kernel, env: str = "bare_metal", rep_fast: bool = True) -> dict:
    observer = StopAtBanner()
    t = time.monotonic()
    prepared = Run(env, kernel, MachineConfig(memory="512M", cmdline=LINUX_CMDLINE, timeout=300),
                   observers=[observer])
    prepared.machine.native.control.rep_fast = int(rep_fast)    # off: one block per rep element, as before
    t0 = time.monotonic()
    result = prepared.execute()
    if observer.t is None:
        sys.exit(f"{env}: no {BANNER!r} line: stop {result.stop.describe()}\n{result.console()[-2000:]}")
    return {"setup": t0 - t, "banner": observer.t - t0, "blocks": result.stats.blocks, "line": observer.line}


def qemu_to_banner(qemu: str, kernel: Path) -> dict:
    """Wall seconds from starting QEMU TCG on ``kernel`` (``-kernel``: a vmlinux is entered by its PVH
    note, a bzImage by QEMU's Linux loader, which runs its in-guest decompressor) to the first console
    line holding the banner; QEMU is killed there."""
    cmd = [qemu, "-M", "pc", "-accel", "tcg", "-m", "512M", "-display", "none", "-monitor", "none",
           "-serial", "stdio", "-no-reboot", "-kernel", str(kernel), "-append", LINUX_CMDLINE]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killer = threading.Timer(300, proc.kill)
    killer.start()
    seen, tail = None, []
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            tail = (tail + [line])[-40:]
            if BANNER in line:
                seen = time.perf_counter() - t0
                break
    finally:
        killer.cancel()
        proc.kill()
        proc.wait()
    if seen is None:
        sys.exit(f"QEMU on {kernel}: no {BANNER!r} line\n{''.join(tail)}\ncommand: {' '.join(cmd)}")
    return {"banner": seen}


BANNER_ROWS = (  # key, label, what hvsim boots, QEMU's comparison (its -kernel), goal (x QEMU)
    ("vmlinux", "bare_metal, vmlinux (ELF; payload extracted in {x:.2f} s)", "vmlinux", "vmlinux", 1.0),
    ("vmlinux_no_rep", "  the same, rep stos/movs fast path off", "vmlinux", "vmlinux", None),
    ("bzimage", "bare_metal, bzImage (in-guest decompressor)", "bzimage", "bzimage", 2.0),
    ("efi", "efi, bzImage through its EFI stub", "bzimage", "bzimage", 2.0),
)


def bench_linux(path: Path, reps: int, with_bzimage: bool) -> dict | None:
    """Seconds to the banner under bare_metal (vmlinux and bzImage) and efi (the bzImage's PE entry),
    and QEMU TCG's seconds to the banner on the same vmlinux (PVH entry) and bzImage, taking turns."""
    if not path.is_file():
        print(f"Linux banner: skipped ({path} not found; scripts/fetch-linux fetches it)")
        return None
    import tempfile

    from hvsim.core.plugins import environments
    from hvsim.image import load_image

    qemu = shutil.which(QEMU)
    installed = set(environments(get_plugin_manager()))
    rows = [r for r in BANNER_ROWS if (with_bzimage or r[2] == "vmlinux") and (r[0] != "efi" or "efi" in installed)]
    # The fast path's effect: the same boot with it on and off, one after the other.
    runs: dict[str, list[dict]] = {r[0]: [] for r in rows}
    qemu_runs: dict[str, list[dict]] = {"vmlinux": [], "bzimage": []} if qemu else {}
    extract = []
    with tempfile.TemporaryDirectory() as folder:
        elf_file = Path(folder) / "vmlinux"
        for _ in range(reps):
            t = time.monotonic()
            elf_bytes = load_image(path).payload_elf().data
            extract.append(time.monotonic() - t)
            elf_file.write_bytes(elf_bytes)
            for key, _, kernel, _, _ in rows:
                runs[key].append(boot_to_banner(elf_bytes if kernel == "vmlinux" else path,
                                                "efi" if key == "efi" else "bare_metal", key != "vmlinux_no_rep"))
            for key in qemu_runs:
                if key == "vmlinux" or with_bzimage:
                    qemu_runs[key].append(qemu_to_banner(qemu, elf_file if key == "vmlinux" else path))
    version = runs["vmlinux"][0]["line"].split(BANNER, 1)[1].split()[0]
    print(f"Linux {version} banner ({path}, {reps} runs; setup = Run(...): load, build memory)")
    out = {"kernel": str(path), "version": version, "reps": reps}
    x_med = statistics.median(extract)
    for key, label, _, qkey, goal in BANNER_ROWS:
        label = label.format(x=x_med)
        if key not in runs:
            why = "--quick" if not with_bzimage else "the efi environment is not installed"
            print(f"  {label:<52} skipped ({why})")
            continue
        banners = [r["banner"] for r in runs[key]]
        banner, lo, hi = median_spread(banners)
        setup = statistics.median(r["setup"] for r in runs[key])
        extra = ""
        out[key] = {"banner_s": banner, "min": lo, "max": hi, "runs": banners, "setup_s": setup,
                    "blocks": runs[key][0]["blocks"]}
        if qemu_runs.get(qkey) and goal is not None:
            ratios = [h / q["banner"] for h, q in zip(banners, qemu_runs[qkey])]
            out[key]["x_qemu"] = {"ratio": statistics.median(ratios), "runs": ratios, "goal": goal}
            extra = f"; {statistics.median(ratios):.2f}x QEMU (per run: {fmt_runs(ratios, digits=2)}; goal <= {goal}x)"
        print(f"  {label:<52}{banner:6.2f} s to banner  (runs: {fmt_runs(banners, digits=2)};"
              f" setup {setup:.2f} s; {runs[key][0]['blocks'] / 1e6:.0f}M blocks{extra})")
    if "vmlinux_no_rep" in out:
        gains = [off / on for on, off in zip(out["vmlinux"]["runs"], out["vmlinux_no_rep"]["runs"])]
        out["rep_fast_gain"] = {"ratio": statistics.median(gains), "runs": gains}
        print(f"  {'  rep fast path: off / on':<52}{statistics.median(gains):6.2f}x  (per run: "
              f"{fmt_runs(gains, digits=2)}; the same blocks either way, so the same guest time)")
    for qkey, label in (("vmlinux", "QEMU TCG, vmlinux (-kernel: PVH entry)"),
                        ("bzimage", "QEMU TCG, bzImage (-kernel: Linux loader)")):
        if not qemu:
            print(f"  {label:<52} skipped ({QEMU} is not on PATH; apt-get install qemu-system-x86)")
        elif not qemu_runs[qkey]:
            print(f"  {label:<52} skipped (--quick)")
        else:
            walls = [r["banner"] for r in qemu_runs[qkey]]
            out[f"qemu_{qkey}"] = {"banner_s": statistics.median(walls), "runs": walls}
            print(f"  {label:<52}{statistics.median(walls):6.2f} s to banner  (runs: {fmt_runs(walls, digits=2)};"
                  f" from process start)")
    out["vmlinux"].update(extract_s=x_med, extract_runs=extract)
    return out


# -- 4. the probe matrix ---------------------------------------------------------------------------
def bench_matrix(reps: int) -> dict:
    from hvsim.matrix import run_matrix

    walls, matrix = [], None
    for _ in range(reps):
        t = time.monotonic()
        matrix = run_matrix()
        walls.append(time.monotonic() - t)
        if matrix.exit_status != 0 or not all(c["ok"] for c in matrix.columns.values()):
            sys.exit(f"probe matrix: {len(matrix.undeclared)} undeclared differences")
    med, lo, hi = median_spread(walls)
    envs = list(matrix.columns)
    runs = {env: matrix.columns[env]["wall_seconds"] for env in envs}
    print(f"probe matrix ({len(envs)} environments: {', '.join(envs)}; {os.cpu_count()} cpus)")
    print(f"  {'wall time of run_matrix()':<40}{med:7.2f} s  (runs: {fmt_runs(walls, digits=2)}; goal < 10 s; "
          f"emulation per column: {', '.join(f'{e} {w:.2f}' for e, w in runs.items())})")
    return {"environments": envs, "wall_s": med, "min": lo, "max": hi, "runs": walls, "columns_s": runs}


LINUX_MATRIX_ENVS = ("bare_metal", "efi", "kvm_pvh", "xen_pvh")
LINUX_MATRIX_GOAL_S = 15.0


def bench_linux_matrix(path: Path, reps: int) -> dict | None:
    """Wall seconds of ``hvsim matrix VMLINUZ --envs bare_metal,efi,kvm_pvh,xen_pvh`` from the shell
    (interpreter start and imports included), as a user waits for it; checks that every column ran
    (exit status 0, or 1: undeclared differences, which are the matrix's finding, not a failure)."""
    from hvsim.core.plugins import environments

    title = f"hvsim matrix on the vmlinuz ({', '.join(LINUX_MATRIX_ENVS)})"
    if not path.is_file():
        print(f"{title}: skipped ({path} not found; scripts/fetch-linux fetches it)")
        return None
    missing = sorted(set(LINUX_MATRIX_ENVS) - set(environments(get_plugin_manager())))
    if missing:
        print(f"{title}: skipped ({', '.join(missing)} not installed)")
        return None
    cmd = [sys.executable, "-m", "hvsim", "matrix", str(path), "--envs", ",".join(LINUX_MATRIX_ENVS),
           "--cmdline", LINUX_CMDLINE, "--timeout", "300", "--quiet"]
    walls, statuses = [], []
    for _ in range(reps):
        t = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, timeout=1200)
        walls.append(time.monotonic() - t)
        statuses.append(done.returncode)
        if done.returncode not in (0, 1):
            sys.exit(f"{' '.join(cmd)}: exit status {done.returncode}\n{done.stdout.decode()[-2000:]}"
                     f"{done.stderr.decode()[-2000:]}")
    med, lo, hi = median_spread(walls)
    print(f"{title}, {reps} runs, {os.cpu_count()} cpus")
    print(f"  {'wall time of hvsim matrix':<40}{med:7.2f} s  (runs: {fmt_runs(walls, digits=2)}; "
          f"goal <= {LINUX_MATRIX_GOAL_S:.0f} s; {med / LINUX_MATRIX_GOAL_S:.2f}x the goal; exit status "
          f"{' '.join(map(str, statuses))}, 1 = undeclared differences)")
    return {"exit_status": statuses, "environments": list(LINUX_MATRIX_ENVS), "command": cmd, "wall_s": med, "min": lo, "max": hi,
            "runs": walls, "x_goal": med / LINUX_MATRIX_GOAL_S}


# -- 5. coverage overhead ---------------------------------------------------------------------------
def timed_run(kernel, config: MachineConfig, coverage: bool, observers=()) -> tuple[float, int]:
    """(emulation wall seconds, distinct blocks recorded or 0) of one bare_metal run."""
    from hvsim.core.native import NativeCoverage

    prepared = Run("bare_metal", kernel, config, observers=observers)
    recorder = NativeCoverage(prepared.machine.uc) if coverage else None
    result = prepared.execute()
    return result.stats.wall_seconds, len(recorder.addresses()) if recorder else 0


def bench_coverage(n: int, linux: Path, reps: int) -> dict:
    from hvsim.image import load_image

    cases = [("probe loop, probe.spin=N", probe_path("elf"), MachineConfig(cmdline=f"probe.spin={n}", timeout=None))]
    if linux.is_file():
        cases.append(("Linux vmlinux, no initrd (to its panic)", load_image(linux).payload_elf().data,
                      MachineConfig(memory="512M", cmdline=LINUX_CMDLINE, timeout=120)))
    print(f"coverage overhead (bare_metal, same run with / without the native block set; {reps} runs)")
    out = {}
    for label, kernel, config in cases:
        plain, covered, ratios, blocks = [], [], [], 0
        for _ in range(reps):
            plain.append(timed_run(kernel, config, False)[0])
            wall, blocks = timed_run(kernel, config, True)
            covered.append(wall)
            ratios.append(covered[-1] / plain[-1])
        ratio = statistics.median(ratios)
        print(f"  {label:<40}{ratio:7.2f}x  (without {statistics.median(plain):.2f} s, with "
              f"{statistics.median(covered):.2f} s; ratios: {fmt_runs(ratios, digits=2)}; {blocks} distinct blocks)")
        out[label] = {"ratio": ratio, "ratios": ratios, "without_s": plain, "with_s": covered, "blocks": blocks}
    return out


# -- 6. Linux to /init ----------------------------------------------------------------------------
DEFAULT_VMLINUX = Path("~/.cache/hvsim/linux/vmlinux").expanduser()
INIT_CMDLINE = "console=ttyS0"
INIT_MEMORY = "512M"
INIT_TIMEOUT = 300
# Console lines that mark the stages of a boot to hvsim's /init, first occurrence each (the last two
# come from /init itself, userspace/init.c, and from Linux's kernel_power_off()).
# hvsim's configurations, each compared with QEMU's bare-metal boot, and each one's goal (x QEMU);
# xen_pv_dom0 (hvsim's xen_pv --dom0) is compared with its own reference instead: QEMU TCG booting
# Debian's Xen with the same vmlinux as its dom0 ("qemu_xen", hvsim.reference_xen).
INIT_ENVS = ("bare_metal", "kvm_pvh", "xen_pv", "xen_pv_dom0")
INIT_GOALS = {"bare_metal": 1.0, "xen_pv": 1.5, "xen_pv_dom0": 1.5}
REFERENCE_OF = {"xen_pv_dom0": "qemu_xen"}          # default: "qemu"
LABELS = {"qemu": "QEMU TCG", "qemu_xen": "QEMU TCG + Xen dom0", "xen_pv_dom0": "hvsim xen_pv dom0"}
DOM0_MEMORY = "512M"                                # Xen's dom0_mem, hvsim's --memory
MILESTONES = (("banner", "Linux version"), ("init", "Run /init as init process"),
              ("userspace_end", "hvsim-userspace: end"), ("power_down", "reboot: Power down"))


class Milestones:
    """Observer plugin: for each milestone, the wall seconds since ``t0``, the guest nanoseconds and
    the block count at the console line that first shows it."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.seen: dict[str, dict] = {}

    @hookimpl
    def hvsim_event(self, machine, event):
        if event.kind != "ConsoleOutput" or len(self.seen) == len(MILESTONES):
            return
        for key, text in MILESTONES:
            if key not in self.seen and text in event.text:
                self.seen[key] = {"wall_s": time.perf_counter() - self.t0, "guest_s": machine.guest_ns() / 1e9,
                                  "blocks": machine.native.control.blocks}


# A PV domU has no serial port: its console is hvc0 on the Xen console ring; dom0's hvc0 is Xen's
# console (console_io), and earlyprintk=xen writes there from the start (tests/test_xen_reference.py).
CMDLINE_UNDER = {"xen_pv": "console=hvc0", "xen_pv_dom0": "console=hvc0 earlyprintk=xen",
                 "qemu_xen": "console=hvc0 earlyprintk=xen"}


def hvsim_to_init(env: str, vmlinux: Path, initrd: Path) -> dict:
    """One boot of ``vmlinux`` with hvsim's /init under ``env``: wall seconds from ``Run(...)`` (setup
    included) to the poweroff stop, the emulation's share, guest time, blocks, emu_start calls,
    interrupts, and the milestones; exits if /init's report did not end or the run did not power off."""
    observer = Milestones()
    config = MachineConfig(memory=DOM0_MEMORY if env == "xen_pv_dom0" else INIT_MEMORY,
                           cmdline=CMDLINE_UNDER.get(env, INIT_CMDLINE), initrd=initrd, timeout=INIT_TIMEOUT)
    if env == "xen_pv_dom0":
        prepared = Run("xen_pv", vmlinux, config, options={"dom0": True}, observers=[observer])
    else:
        prepared = Run(env, vmlinux, config, observers=[observer])
    setup = time.perf_counter() - observer.t0
    result = prepared.execute()
    wall = time.perf_counter() - observer.t0
    if result.stop.kind != "poweroff" or "userspace_end" not in observer.seen:
        sys.exit(f"hvsim {env} to /init: stop {result.stop.describe()}, milestones {sorted(observer.seen)}\n"
                 f"{result.console()[-2000:]}")
    s = result.stats
    return {"wall_s": wall, "setup_s": setup, "emulation_s": s.wall_seconds, "guest_s": s.guest_ns / 1e9,
            "idle_guest_s": s.idle_ns / 1e9, "blocks": s.blocks, "emu_starts": s.emu_starts,
            "interrupts": s.interrupts_delivered, "milestones": observer.seen}


PRINTK_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]")


def qemu_to_init(qemu: str, vmlinux: Path, initrd: Path) -> dict:
    """One QEMU TCG boot of the same vmlinux (its PVH note: QEMU's -kernel enters it directly) and
    initramfs: wall seconds from process start to exit, and for each milestone the wall seconds at
    which its console line arrived and its printk timestamp (QEMU's guest time); exits unless the
    console shows /init's report ending and Linux powering off, and QEMU exited 0."""
    cmd = [qemu, "-M", "pc", "-accel", "tcg", "-m", INIT_MEMORY, "-display", "none", "-monitor", "none",
           "-serial", "stdio", "-no-reboot", "-kernel", str(vmlinux), "-initrd", str(initrd),
           "-append", INIT_CMDLINE]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killer = threading.Timer(INIT_TIMEOUT, proc.kill)
    killer.start()
    seen, lines = {}, []
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            for key, text in MILESTONES:
                if key not in seen and text in line:
                    stamp = PRINTK_TIME.match(line)
                    seen[key] = {"wall_s": time.perf_counter() - t0, "guest_s": float(stamp[1]) if stamp else None}
        code = proc.wait()
    finally:
        killer.cancel()
    wall = time.perf_counter() - t0
    if code != 0 or "userspace_end" not in seen or "power_down" not in seen:
        sys.exit(f"QEMU to /init: exit status {code}, milestones {sorted(seen)}\n{''.join(lines)[-2000:]}\n"
                 f"command: {' '.join(cmd)}")
    return {"wall_s": wall, "milestones": seen}


def qemu_xen_to_init(qemu: str, xen: Path, vmlinux: Path, initrd: Path) -> dict:
    """One boot of the same vmlinux and initramfs as the dom0 of real Xen under QEMU TCG
    (``hvsim.reference_xen.boot_dom0``: Xen's own boot included): wall seconds from process start to
    exit, and the milestones as ``qemu_to_init`` gives them; exits unless /init's report ended and
    Linux powered off."""
    from hvsim.reference_xen import ReferenceFailed, boot_dom0

    try:
        boot = boot_dom0(xen, vmlinux, initrd, CMDLINE_UNDER["qemu_xen"], timeout=INIT_TIMEOUT,
                         dom0_memory=DOM0_MEMORY, qemu=qemu)
    except ReferenceFailed as failed:
        sys.exit(f"QEMU + Xen to /init: {failed}")
    seen = {}
    for at, line in boot.lines:
        for key, text in MILESTONES:
            if key not in seen and text in line:
                stamp = PRINTK_TIME.match(line)
                seen[key] = {"wall_s": at, "guest_s": float(stamp[1]) if stamp else None}
    if "power_down" not in seen:
        sys.exit(f"QEMU + Xen to /init: no power-down line\n{boot.console()[-2000:]}")
    return {"wall_s": boot.wall_s, "milestones": seen, "xen": boot.xen_version()}


def fetch_xen() -> tuple[Path | None, str]:
    """Xen's multiboot image from scripts/fetch-xen, or None and why not."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "fetch-xen"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return None, f"scripts/fetch-xen failed ({done.returncode}): {done.stderr.strip()[-300:]}"
    xen = Path(done.stdout.strip().splitlines()[-1])
    package = xen.parent / "package"
    return xen, package.read_text().strip() if package.is_file() else "unknown package version"


def qemu_version(qemu: str) -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()[0] if out else "unknown version"


def bench_init(vmlinux: Path, reps: int) -> dict | None:
    from hvsim.kernels import init_cpio_path

    title = "Linux to /init (vmlinux + hvsim's init.cpio, wall from Run(...) / QEMU's start to the poweroff)"
    if not vmlinux.is_file():
        print(f"{title}: skipped ({vmlinux} not found; scripts/fetch-linux keeps the ELF vmlinux beside the vmlinuz)")
        return None
    initrd = init_cpio_path()
    qemu = shutil.which(QEMU)
    from hvsim.core.plugins import environments

    installed = set(environments(get_plugin_manager()))
    xen, xen_package = fetch_xen() if qemu else (None, "no QEMU")
    envs = [e for e in INIT_ENVS if (e if e != "xen_pv_dom0" else "xen_pv") in installed]
    configs = envs + (["qemu"] if qemu else []) + (["qemu_xen"] if qemu and xen and "xen_pv_dom0" in envs else [])
    print(f"{title}\n  {vmlinux}, cmdline {INIT_CMDLINE!r} (xen_pv: {CMDLINE_UNDER['xen_pv']!r}, dom0 and Xen's dom0:"
          f" {CMDLINE_UNDER['xen_pv_dom0']!r}), {INIT_MEMORY} (dom0: {DOM0_MEMORY}), {reps} runs")
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for _ in range(reps):                       # the configurations take turns, as everywhere here
        for c in configs:
            runs[c].append(qemu_to_init(qemu, vmlinux, initrd) if c == "qemu" else
                           qemu_xen_to_init(qemu, xen, vmlinux, initrd) if c == "qemu_xen" else
                           hvsim_to_init(c, vmlinux, initrd))
    out = {"kernel": str(vmlinux), "initrd": str(initrd), "cmdline": INIT_CMDLINE, "reps": reps, "runs": runs,
           "xen": {"binary": str(xen), "package": xen_package} if xen else None}
    if qemu:
        out["qemu"] = {"binary": qemu, "version": qemu_version(qemu)}
        print(f"  QEMU: {out['qemu']['version']} (-M pc -accel tcg)")
        if xen:
            from hvsim.reference_xen import MACHINE_MEMORY

            print(f"  Xen: {xen_package} ({xen}; QEMU -cpu max,-smap -m {MACHINE_MEMORY},"
                  f" dom0_mem={DOM0_MEMORY})")
        else:
            print(f"  QEMU TCG + Xen dom0: skipped ({xen_package})")
    else:
        out["qemu"] = None
        print(f"  QEMU TCG: skipped ({QEMU} is not on PATH; apt-get install qemu-system-x86 provides it)")
    for c in configs:
        walls = [r["wall_s"] for r in runs[c]]
        med = statistics.median(walls)
        label = LABELS.get(c, f"hvsim {c}")
        extra = ""
        if not c.startswith("qemu"):
            r = runs[c][0]
            varying = sorted({x["blocks"] for x in runs[c]})
            if len(varying) > 1:                 # a deterministic boot counts the same blocks every time
                print(f"  note: hvsim {c} counted different blocks in its runs: {' '.join(map(str, varying))}")
            extra = (f"; setup {statistics.median(x['setup_s'] for x in runs[c]):.2f} s, guest {r['guest_s']:.2f} s"
                     f" ({r['idle_guest_s']:.2f} idle), {r['blocks'] / 1e6:.0f}M blocks, {r['emu_starts']} emu_start,"
                     f" {r['interrupts']} interrupts")
        reference = REFERENCE_OF.get(c, "qemu")
        if not c.startswith("qemu") and reference in runs:
            ratios = [h["wall_s"] / q["wall_s"] for h, q in zip(runs[c], runs[reference])]
            out.setdefault("ratio", {})[c] = {"ratio": statistics.median(ratios), "runs": ratios,
                                              "goal": INIT_GOALS.get(c), "reference": reference}
            extra += (f"; {statistics.median(ratios):.2f}x {LABELS[reference]} (per run:"
                      f" {fmt_runs(ratios, digits=2)})")
        out.setdefault("wall_s", {})[c] = med
        print(f"  {label:<22}{med:7.2f} s  (runs: {fmt_runs(walls, digits=2)}{extra})")
    heads = ("Linux version", "Run /init", "/init's end", "Power down", "stop")
    print("  milestones: median wall s since Run(...) / QEMU's start, then guest s (hvsim: its clock; QEMU: the"
          " line's printk time), at the first console line holding each")
    print(f"  {'':<22}" + "".join(f"{h:>17}" for h in heads))
    for c in configs:
        label = LABELS.get(c, f"hvsim {c}")
        cells = []
        for key, _ in MILESTONES:
            marks = [r["milestones"][key] for r in runs[c] if key in r["milestones"]]
            guest = marks[0]["guest_s"] if marks else None
            cells.append(f"{'-':>17}" if not marks else
                         f"{statistics.median(m['wall_s'] for m in marks):>9.2f} / " + (f"{guest:5.2f}" if guest is not None else "    -"))
        stop_guest = (runs[c][0]["milestones"]["power_down"]["guest_s"] if c.startswith("qemu")
                      else runs[c][0]["guest_s"])
        cells.append(f"{statistics.median(r['wall_s'] for r in runs[c]):>9.2f} / "
                     + (f"{stop_guest:5.2f}" if stop_guest is not None else "    -"))
        print(f"  {label:<22}" + "".join(cells))
    return out


# -- the table ------------------------------------------------------------------------------
def goal_rows(report: dict) -> list[tuple[str, float | None, float, str]]:
    """(what, measured ratio or None, goal, how it was measured / why it is missing) for each line of
    the speed goals, from this run's report."""
    def get(*keys):
        node = report
        for k in keys:
            if not isinstance(node, dict) or node.get(k) is None:
                return None
            node = node[k]
        return node

    def ratio(*keys):
        r = get(*keys)
        return r if isinstance(r, (int, float)) else None

    missing = "section not run, or skipped (see above)"
    rows = [
        ("vmlinux to banner, bare_metal / QEMU TCG (PVH loader)", ratio("linux", "vmlinux", "x_qemu", "ratio"), 1.0),
        ("bzImage to banner, bare_metal / QEMU TCG", ratio("linux", "bzimage", "x_qemu", "ratio"), 2.0),
        ("bzImage to banner, efi (EFI stub) / QEMU TCG bzImage", ratio("linux", "efi", "x_qemu", "ratio"), 2.0),
        ("vmlinux to /init + poweroff, bare_metal / QEMU TCG", ratio("init", "ratio", "bare_metal", "ratio"), 1.0),
        ("xen_pv domU to /init / QEMU TCG bare-metal /init", ratio("init", "ratio", "xen_pv", "ratio"), 1.5),
        ("xen_pv dom0 to /init / QEMU TCG + Xen, same dom0", ratio("init", "ratio", "xen_pv_dom0", "ratio"), 1.5),
        ("hypercall round trip / empty Python invalid hook", ratio("hypercall", "ratio", "ratio"), 3.0),
        ("compute loop, bare Unicorn / hvsim", ratio("compute", "overhead", "ratio"), 1.10),
        ("exact instruction budget slowdown", ratio("compute", "budget_slowdown"), 3.0),
        ("hvsim matrix on the vmlinuz, 4 envs / 15 s", ratio("linux_matrix", "x_goal"), 1.0),
    ]
    return [(what, value, goal, "" if value is not None else missing) for what, value, goal in rows]


def print_goals(report: dict) -> None:
    print("speed goals (issue 16): measured ratio (median of this run) against its goal")
    for what, value, goal, why in goal_rows(report):
        if value is None:
            print(f"  {what:<56} {'-':>7}   goal <= {goal:.2f}x  ({why})")
        else:
            verdict = "met" if value <= goal else "NOT met"
            print(f"  {what:<56} {value:6.2f}x   goal <= {goal:.2f}x  {verdict}")


SECTIONS = ("compute", "hypercall", "banner", "matrix", "coverage", "init")


def section_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="N=20M instead of 200M, 5000 hypercalls instead of 20000, and skip the bzImage boot")
    ap.add_argument("--reps", type=int, help="repetitions of each measurement (default 3)")
    ap.add_argument("--n", type=int, help="probe_spin iterations (default 200M, 20M with --quick)")
    ap.add_argument("--hypercalls", type=int, help="hypercalls per loop (default 20000, 5000 with --quick)")
    ap.add_argument("--linux", type=Path, default=DEFAULT_LINUX, help=f"Debian vmlinuz (default {DEFAULT_LINUX})")
    ap.add_argument("--vmlinux", type=Path, default=DEFAULT_VMLINUX,
                    help=f"ELF vmlinux for the /init section (default {DEFAULT_VMLINUX})")
    ap.add_argument("--only", type=section_list, metavar="SECTION[,SECTION...]",
                    help=f"run only these sections: {', '.join(SECTIONS)} (default: all)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.hypercalls is not None and not 1 <= args.hypercalls < 1 << 32:
        ap.error("--hypercalls must be between 1 and 2**32 - 1")
    reps = args.reps or 3
    n = args.n or (20_000_000 if args.quick else 200_000_000)
    import unicorn

    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "unicorn": unicorn.__version__,
              "python": sys.version.split()[0], "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    print(f"hvsim benchmark, {report['date']}, unicorn {report['unicorn']}, python {report['python']}, "
          f"{report['cpus']} cpus, load average {report['load_avg'][0]:.2f}")
    only = set(args.only or SECTIONS)
    # The budgeted N: N/20 rounded down to a power of ten, so that 2N has as many digits (check_counts).
    if "compute" in only:
        report["compute"] = bench_compute(n, 10 ** max(3, len(str(n // 20)) - 1), reps)
    if "hypercall" in only:
        report["hypercall"] = bench_hypercall(args.hypercalls or (5_000 if args.quick else 20_000), reps)
    if "banner" in only:
        report["linux"] = bench_linux(args.linux.expanduser(), reps, not args.quick)
    if "matrix" in only:
        report["matrix"] = bench_matrix(reps)
        report["linux_matrix"] = bench_linux_matrix(args.linux.expanduser(), 1 if args.quick else reps)
    if "coverage" in only:
        report["coverage"] = bench_coverage(n // 4, args.linux.expanduser(), reps)
    if "init" in only:
        report["init"] = bench_init(args.vmlinux.expanduser(), reps)
    print_goals(report)
    report["goals"] = [dict(zip(("what", "ratio", "goal", "missing"), row)) for row in goal_rows(report)]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
