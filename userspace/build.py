#!/usr/bin/env python3
"""Build hvsim's /init and the initramfs that holds it: init.cpio.

    python userspace/build.py [--out DIR] [--cc gcc]

Default output: src/hvsim/kernels/init.cpio (committed package data, beside the probe images).
Needs gcc (it links the static executable itself) and nothing outside the Python standard library.

The build is reproducible, with the probe's approach (probe/build.py): the one source is compiled
from this folder by a relative name with -ffile-prefix-map, the link has no build-id, nothing
embeds a time or a host path, and the cpio is written here with fixed metadata (see
``newc_archive``).  The executable keeps gcc's ``.comment`` (it names the compiler, so a test can
tell whether a rebuild is expected to match the committed archive).
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from dataclasses import dataclass

USERSPACE_DIR = Path(__file__).resolve().parent
REPO = USERSPACE_DIR.parent
DEFAULT_OUT = REPO / "src" / "hvsim" / "kernels"
SOURCE = "init.c"

CFLAGS = [
    "-m64",
    "-std=gnu11",
    "-O2",
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-pic",
    "-no-pie",
    "-fno-stack-protector",          # no TLS is set up, so no canary to read
    "-fcf-protection=none",
    "-mgeneral-regs-only",           # no SSE state in use: fewer things for an emulator to get right
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-tree-loop-distribute-patterns",
    "-Wall",
    "-Wextra",
    "-Werror",
]
LDFLAGS = [
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=4096",
    "-Wl,-z,noseparate-code",
    "-Wl,-z,noexecstack",
    "-Wl,-z,norelro",
    "-s",                            # no symbols; .comment stays
]

# The newc ("new ASCII") cpio format: a 110-byte header of "070701" and thirteen 8-digit hex
# fields, the NUL-terminated name, padding to 4 bytes, the data, padding to 4 bytes; the archive
# ends with an entry named "TRAILER!!!".  (Linux: Documentation/driver-api/early-userspace/
# buffer-format.rst; init/initramfs.c reads it.)
NEWC_MAGIC = b"070701"
NEWC_TRAILER = "TRAILER!!!"
# The console device: major 5, minor 1 (Documentation/admin-guide/devices.txt).
CONSOLE_MAJOR, CONSOLE_MINOR = 5, 1


@dataclass(frozen=True)
class CpioEntry:
    """One file of the archive: ``mode`` holds the type bits (stat.S_IF*) and the permissions."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def newc_archive(entries: list[CpioEntry]) -> bytes:
    """The newc cpio of ``entries``, sorted by name, with mtime 0, uid and gid 0, one link each,
    device 0:0 and inode numbers 1, 2, ... in that order: the same entries give the same bytes."""
    out = bytearray()
    ordered = sorted(entries, key=lambda e: e.name) + [CpioEntry(NEWC_TRAILER, 0)]
    for ino, entry in enumerate(ordered, start=1):
        name = entry.name.encode() + b"\0"
        is_trailer = entry.name == NEWC_TRAILER
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        fields = [
            0 if is_trailer else ino, entry.mode, 0, 0, 0 if is_trailer else nlink, 0, len(entry.data),
            0, 0, entry.rdev[0], entry.rdev[1], len(name), 0,
        ]
        header = NEWC_MAGIC + b"".join(b"%08x" % f for f in fields)
        out += header + name + _pad4(len(header) + len(name))
        out += entry.data + _pad4(len(entry.data))
    return bytes(out)


def initramfs_entries(init_elf: bytes) -> list[CpioEntry]:
    """/init (0755), the mount points /proc and /sys, /dev, and /dev/console (so the kernel can
    open the initial console before /init runs)."""
    return [
        CpioEntry("dev", stat.S_IFDIR | 0o755),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(CONSOLE_MAJOR, CONSOLE_MINOR)),
        CpioEntry("init", stat.S_IFREG | 0o755, init_elf),
        CpioEntry("proc", stat.S_IFDIR | 0o555),
        CpioEntry("sys", stat.S_IFDIR | 0o555),
    ]


def compile_init(cc: str, work: Path) -> bytes:
    output = work / "init"
    cmd = [cc, *CFLAGS, f"-ffile-prefix-map={USERSPACE_DIR}=userspace", *LDFLAGS, "-o", str(output), SOURCE]
    env = dict(os.environ, LC_ALL="C", SOURCE_DATE_EPOCH="0")
    result = subprocess.run(cmd, cwd=USERSPACE_DIR, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"build.py: command failed ({result.returncode}): {' '.join(cmd)}")
    return output.read_bytes()


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build /init and init.cpio.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--cc", default=os.environ.get("CC", "gcc"), help="C compiler (default gcc or $CC)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hvsim-init-") as tmp:
        init_elf = compile_init(args.cc, Path(tmp))
    if init_elf[:4] != b"\x7fELF":
        raise SystemExit("build.py: the compiler did not produce an ELF executable")
    archive = newc_archive(initramfs_entries(init_elf))
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "init.cpio", archive)
    print(f"init       {len(init_elf):7d} bytes")
    print(f"init.cpio  {len(archive):7d} bytes  {args.out / 'init.cpio'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
