#!/usr/bin/env python3
"""Build the hvsim probe kernel: probe.elf, probe.bzImage and probe.efi.

    python probe/build.py [--out DIR] [--cc gcc] [--ld ld]

Default output: src/hvsim/kernels/ (the committed package data). Needs gcc and GNU ld, nothing else
outside the Python standard library.

The build is reproducible: sources are compiled in sorted order from the probe directory with relative
names and -ffile-prefix-map, nothing embeds a time or a host path, ld gets no build-id, and the gzip
payload has mtime 0. probe.efi is the same objects linked a second time at pe.PROBE_EFI_BASE and
wrapped into a PE32+ EFI application by pe.py. Rebuilding with the same gcc and binutils gives identical bytes. The ELF keeps
its .symtab and gcc's .comment (which names the compiler, so a test can tell whether a rebuild is
expected to match the committed images).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE_DIR = Path(__file__).resolve().parent
REPO = PROBE_DIR.parent
DEFAULT_OUT = REPO / "src" / "hvsim" / "kernels"

sys.path.insert(0, str(PROBE_DIR))
sys.dont_write_bytecode = True  # leave no __pycache__ in the source folder
import bzimage  # noqa: E402  (the sibling module; the build is run as a script)
import pe  # noqa: E402

CFLAGS = [
    "-m64",
    "-std=gnu11",
    "-O2",
    "-ffreestanding",
    "-fno-pic",
    "-fno-pie",
    "-mcmodel=small",
    "-mno-red-zone",
    "-mno-sse",
    "-mno-mmx",
    "-mno-80387",
    "-mgeneral-regs-only",
    "-fno-stack-protector",
    "-fcf-protection=none",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-tree-loop-distribute-patterns",  # or gcc turns memset's own loop into a call to memset
    "-fno-common",
    "-nostdlib",
    "-Wall",
    "-Wextra",
    "-Werror",
]
LDFLAGS = [
    "-m",
    "elf_x86_64",
    "-nostdlib",
    "-static",
    "--build-id=none",
    "-z",
    "max-page-size=4096",
    "-z",
    "noexecstack",
]


def run(cmd: list[str], cwd: Path) -> None:
    env = dict(os.environ, LC_ALL="C", SOURCE_DATE_EPOCH="0")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"build.py: command failed ({result.returncode}): {' '.join(cmd)}")


def sources() -> list[str]:
    names = [p.name for p in PROBE_DIR.iterdir() if p.suffix in (".c", ".S")]
    return sorted(names)


def link_elf(cc: str, ld: str, work: Path) -> tuple[bytes, bytes]:
    """probe.elf (at 0x100000) and the same objects linked at pe.PROBE_EFI_BASE for probe.efi."""
    objects = []
    for name in sources():
        obj = work / (name + ".o")
        run(
            [cc, *CFLAGS, f"-ffile-prefix-map={PROBE_DIR}=probe", "-I.", "-c", name, "-o", str(obj)],
            cwd=PROBE_DIR,
        )
        objects.append(str(obj))
    elf_path, efi_elf_path = work / "probe.elf", work / "probe-efi.elf"
    run([ld, *LDFLAGS, "-T", "probe.ld", "-o", str(elf_path), *objects], cwd=PROBE_DIR)
    run([ld, *LDFLAGS, f"--defsym=PROBE_BASE={pe.PROBE_EFI_BASE:#x}", "-T", "probe.ld", "-o", str(efi_elf_path),
         *objects], cwd=PROBE_DIR)
    return elf_path.read_bytes(), efi_elf_path.read_bytes()


def check_elf(blob: bytes) -> None:
    elf = bzimage.read_elf(blob)
    if elf.entry != bzimage.LOAD_ADDR + bzimage.ENTRY64_OFFSET:
        raise SystemExit(f"build.py: probe.elf entry is {elf.entry:#x}, expected 0x100200")
    for segment in elf.segments:
        if segment.paddr != segment.vaddr:
            raise SystemExit(f"build.py: PT_LOAD at {segment.vaddr:#x} is not identity-mapped")
    value, size = elf.symbols.get("probe_spin", (0, 0))
    if not value or not size:
        raise SystemExit("build.py: probe.elf lacks a sized probe_spin symbol")


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build probe.elf, probe.bzImage and probe.efi.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--cc", default=os.environ.get("CC", "gcc"), help="C compiler (default gcc or $CC)")
    parser.add_argument("--ld", default=os.environ.get("LD", "ld"), help="GNU ld (default ld or $LD)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hvsim-probe-") as tmp:
        elf_blob, efi_elf_blob = link_elf(args.cc, args.ld, Path(tmp))
    check_elf(elf_blob)
    efi_elf = bzimage.read_elf(efi_elf_blob)
    efi_blob = pe.build_pe(efi_elf, efi_elf.symbols["efi_entry"][0])
    # The bzImage header offers linux64; the pvh and pv entries are the payload ELF's Xen notes.
    bz_blob = bzimage.build_bzimage(elf_blob, entries="linux64; pvh and pv in the payload ELF")

    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "probe.elf", elf_blob)
    write_atomically(args.out / "probe.bzImage", bz_blob)
    write_atomically(args.out / "probe.efi", efi_blob)
    print(f"probe.elf      {len(elf_blob):7d} bytes  {args.out / 'probe.elf'}")
    print(f"probe.bzImage  {len(bz_blob):7d} bytes  {args.out / 'probe.bzImage'}")
    print(f"probe.efi      {len(efi_blob):7d} bytes  {args.out / 'probe.efi'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
