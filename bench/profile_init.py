#!/usr/bin/env python3
"""Where one hvsim boot of Debian's vmlinux to hvsim's /init spends its time (see bench/README.md).

    python bench/profile_init.py [--env bare_metal] [--vmlinux PATH] [--sample-us 1000] [--top 25]

Two views of the same kind of boot (cmdline ``console=ttyS0``, 512M, the embedded init.cpio):
1. Host side: the boot under cProfile: the Python functions with the most own time, the number of
   ``emu_start`` calls and the time inside them (translated guest code plus the native hooks), the
   Python hook callbacks (port I/O, traps) and interrupt delivery.
2. Guest side: a second boot sampled in guest time: a guest-clock event every ``--sample-us``
   microseconds of guest time records RIP at that block boundary; the samples are resolved through
   ``System.map`` beside the vmlinux into kernel functions.  Guest time is blocks x 10 ns, so this
   is where the executed blocks go, which for a TCG engine is roughly where the wall goes.  The
   sampler only reads RIP; its events add stops (one ``emu_start`` each) but change no guest state.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import time
from pathlib import Path

from hvsim import MachineConfig
from hvsim.api import Run
from hvsim.kernels import init_cpio_path
from hvsim.symbols import SymbolTable

DEFAULT_VMLINUX = Path("~/.cache/hvsim/linux/vmlinux").expanduser()


def config(env: str = "bare_metal") -> MachineConfig:
    cmdline = "console=hvc0" if env == "xen_pv" else "console=ttyS0"      # a PV domU has no serial port
    return MachineConfig(memory="512M", cmdline=cmdline, initrd=init_cpio_path(), timeout=600)


def host_profile(env: str, vmlinux: Path, top: int) -> None:
    profile = cProfile.Profile()
    t = time.perf_counter()
    profile.enable()
    result = Run(env, vmlinux, config(env)).execute()
    profile.disable()
    wall = time.perf_counter() - t
    s = result.stats
    print(f"host profile (cProfile), {env}: {result.stop.describe()}, {wall:.2f} s wall under the profiler, "
          f"{s.emu_starts} run-loop emu_starts, {s.blocks / 1e6:.0f}M blocks, {s.interrupts_delivered} interrupts "
          f"{s.interrupts}, {s.faults_delivered} faults, {s.tsc_reads} TSC reads")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def guest_profile(env: str, vmlinux: Path, sample_ns: int, top: int) -> None:
    system_map = vmlinux.with_name("System.map")
    symbols = SymbolTable.from_system_map(system_map) if system_map.is_file() else None
    prepared = Run(env, vmlinux, config(env))
    machine = prepared.machine
    samples: collections.Counter = collections.Counter()

    def sample():
        rip = machine.reg("rip")
        name = symbols.resolve(rip) if symbols and rip >= 1 << 63 else None
        samples[name or ("user space" if rip < 1 << 47 else f"{rip:#x}")] += 1
        machine.clock.schedule_in(sample_ns, sample)

    machine.clock.schedule_in(sample_ns, sample)
    t = time.perf_counter()
    result = prepared.execute()
    wall = time.perf_counter() - t
    total = sum(samples.values())
    print(f"guest profile, {env}: {result.stop.describe()}, {wall:.2f} s wall, guest {result.stats.guest_ns / 1e9:.3f} s,"
          f" {total} samples every {sample_ns / 1000:g} us of guest time ({result.stats.emu_starts} emu_starts"
          f" with the sampler's stops); symbols: {system_map if symbols else 'none (no System.map)'}")
    for name, count in samples.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {count:6d}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="bare_metal")
    ap.add_argument("--vmlinux", type=Path, default=DEFAULT_VMLINUX)
    ap.add_argument("--sample-us", type=float, default=1000.0, help="guest microseconds between samples")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--skip-host", action="store_true", help="only the guest-time profile")
    args = ap.parse_args()
    vmlinux = args.vmlinux.expanduser()
    if not args.skip_host:
        host_profile(args.env, vmlinux, args.top)
    guest_profile(args.env, vmlinux, int(args.sample_us * 1000), args.top)


if __name__ == "__main__":
    main()
