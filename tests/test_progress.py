"""The live progress line: shown on a terminal (a pty here) for runs longer than ~2 s, redrawn in
place with guest time, blocks, wall seconds and the last console line; absent on a pipe and with
--quiet; one line per column for the matrix."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

from guests import PRINT_THEN_SPIN, SPIN, debugcon_print, elf_guest

from hvsim import MachineConfig
from hvsim.matrix import run_matrix
from hvsim.progress import ProgressLine, describe, last_console_line
from hvsim.core.events import ConsoleOutput

HVSIM = [sys.executable, "-m", "hvsim.cli"]
PROGRESS = re.compile(r"hvsim: bare_metal: guest (\d+\.\d{3}) s, ([\d.]+[kMG]?) blocks, (\d+\.\d) s wall(: ([^\r\x1b\n]*))?")


def on_pty(*args, columns: int = 200) -> tuple[int, str, str]:
    """Run hvsim with stderr on a pty (stdout on a pipe); return (status, stdout, what the pty got)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "HVSIM_DEBUG"}
    env["COLUMNS"] = str(columns)
    process = subprocess.Popen([*HVSIM, *map(str, args)], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:          # EIO: the child closed its side
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    out = process.stdout.read().decode()
    process.wait(10)
    return process.returncode, out, seen.decode("utf-8", "replace")


def test_a_long_run_on_a_terminal_shows_a_progress_line_redrawn_in_place(tmp_path):
    guest = tmp_path / "guest.elf"
    guest.write_bytes(elf_guest(debugcon_print(b"booting the thing\n") + SPIN))
    status, out, screen = on_pty("run", "--env", "bare_metal", guest, "--timeout", "4")

    assert status == 30 and "booting the thing" in out
    samples = [m for m in PROGRESS.finditer(screen)]
    assert len(samples) >= 3, screen
    # redrawn in place (carriage return, erase line), never scrolled: no newline between samples
    assert "\r\x1b[K" in screen and screen.count("\n") == screen.count("hvsim: bare_metal: timeout")
    assert all(m.group(5) == "booting the thing" for m in samples)
    walls = [float(m.group(3)) for m in samples]
    guest_s = [float(m.group(1)) for m in samples]
    assert walls[0] >= 2.0 and walls == sorted(walls) and guest_s == sorted(guest_s) and guest_s[-1] > 0
    assert len(samples) <= 4 * 2.5 + 2          # at most four a second over the ~2 s it is shown
    # erased before the stop line, which stands on its own line
    stop = screen[screen.index("hvsim: bare_metal: timeout") - 3:]
    assert stop.startswith("\x1b[J") or stop[2:].startswith("\r") or "\x1b[J" in screen, repr(stop)
    assert screen.rstrip().splitlines()[-1].lstrip("\r\x1b[J").startswith("hvsim: bare_metal: timeout")


def test_no_progress_line_with_quiet_on_a_short_run_or_on_a_pipe(tmp_path):
    guest = tmp_path / "guest.elf"
    guest.write_bytes(elf_guest(PRINT_THEN_SPIN))
    status, _, screen = on_pty("run", "--env", "bare_metal", guest, "--timeout", "3", "--quiet")
    assert status == 30 and not PROGRESS.search(screen) and "\x1b[" not in screen
    status, _, screen = on_pty("run", "--env", "bare_metal", guest, "--timeout", "1")
    assert status == 30 and not PROGRESS.search(screen) and "\x1b[" not in screen
    done = subprocess.run([*HVSIM, "run", "--env", "bare_metal", str(guest), "--timeout", "3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 30 and "guest " not in done.stderr and "\x1b[" not in done.stderr


def test_the_matrix_shows_its_columns_progress_on_a_terminal(tmp_path):
    guest = tmp_path / "guest.elf"
    guest.write_bytes(elf_guest(PRINT_THEN_SPIN))
    status, _, screen = on_pty("matrix", guest, "--envs", "bare_metal", "--timeout", "4")

    assert status == 6, screen                   # the reference timed out: nothing compared
    assert len(re.findall(r"hvsim: bare_metal: guest \d+\.\d{3} s, [^\r]* blocks, [^\r]* s wall: go", screen)) >= 2
    assert "did not boot to a comparable record" in screen.splitlines()[-1]


def test_matrix_columns_send_samples_from_their_processes(tmp_path):
    guest = tmp_path / "guest.elf"
    guest.write_bytes(elf_guest(PRINT_THEN_SPIN))
    seen = []
    run_matrix(guest, MachineConfig(timeout=1.6), ["bare_metal"], progress=lambda env, s: seen.append((env, s)))
    assert len(seen) >= 2 and {env for env, _ in seen} == {"bare_metal"}
    assert [s["blocks"] for _, s in seen] == sorted(s["blocks"] for _, s in seen) and seen[-1][1]["last_line"] == "go"


def test_several_lines_are_redrawn_together_with_the_cursor_moved_back_up():
    screen = Screen()
    lines = ProgressLine(screen, ["bare_metal", "efi"], width=80, delay=0, interval=0)
    sample = {"guest_ns": 1, "blocks": 1, "wall_seconds": 1, "last_line": ""}
    lines.update("bare_metal", sample)
    lines.update("efi", sample)
    assert screen.text.endswith("\r\x1b[Khvsim: bare_metal: guest 0.000 s, 1 blocks, 1.0 s wall\n"
                                "\r\x1b[Khvsim: efi: guest 0.000 s, 1 blocks, 1.0 s wall")
    lines.update("efi", sample)
    assert "\r\x1b[1A\x1b[J" in screen.text and lines.shown == 2


class Screen:
    text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_the_line_is_cut_to_the_terminal_width_and_restarts_after_a_partial_guest_line():
    screen = Screen()
    line = ProgressLine(screen, ["efi"], width=40, delay=0, interval=0)
    line.wrote("partial")
    line.update("efi", {"guest_ns": 1_500_000_000, "blocks": 2_500_000, "wall_seconds": 3.25,
                        "last_line": "x" * 100})
    assert screen.text.startswith("\n\r\x1b[K") and len(screen.text.split("\x1b[K")[1]) == 39
    assert screen.text.split("\x1b[K")[1].startswith("hvsim: efi: guest 1.500 s, 2.5M blocks")
    line.clear()
    assert screen.text.endswith("\r\x1b[J") and line.shown == 0
    assert describe({"guest_ns": 0, "blocks": 12, "wall_seconds": 2, "last_line": "a\x07b"}) == \
        "guest 0.000 s, 12 blocks, 2.0 s wall: a b"


def test_the_last_console_line_is_the_last_complete_or_partial_nonblank_line():
    events = [ConsoleOutput(channel="serial0", text="one\ntw"), ConsoleOutput(channel="serial0", text="o\n\n")]
    assert last_console_line(events) == "two"
    assert last_console_line([]) == ""
