"""The live progress line on stderr: what a long run is doing while it runs.

A *sample* of a running ``hvsim.api.Run`` is read from outside the engine's thread (the native
control block's counters and the machine's event list, which the engine only appends to), never
from a per-block hook, so sampling costs the run nothing::

    {"guest_ns": int, "blocks": int, "wall_seconds": float, "last_line": str}

``ProgressLine`` draws samples on a terminal: it stays hidden for the first ``delay`` seconds (a
short run shows nothing), then redraws in place (carriage return, erase line) at most every
``interval`` seconds, one line per run (the matrix's columns each get theirs, redrawn together
with the cursor moved back up).  It is used only when stderr is a terminal; ``clear()`` erases it
before anything else is written to the terminal (guest console, hvsim's stop line).  It does not
model progress towards an end: hvsim cannot know how far a guest is from its end.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from .core.events import ConsoleOutput

# Scan this many of the newest events for the last console line (the line is a hint, not a record).
EVENTS_SCANNED = 256
ERASE_LINE = "\r\x1b[K"      # ECMA-48: carriage return, then EL (erase to the end of the line)
CURSOR_UP = "\x1b[{}A"       # ECMA-48 CUU
ERASE_BELOW = "\x1b[J"       # ECMA-48 ED 0: from the cursor to the end of the screen


def sample(prepared, started: float) -> dict:
    """The counters of the running ``prepared`` (an ``hvsim.api.Run``), ``started`` being the
    ``time.monotonic()`` at which it started."""
    m = prepared.machine
    return {"guest_ns": int(m.clock.now()), "blocks": int(m.native.control.blocks),
            "wall_seconds": time.monotonic() - started, "last_line": last_console_line(m.events)}


def last_console_line(events: list) -> str:
    """The last non-blank line of console text among the newest events ('' if none)."""
    text = ""
    for event in reversed(events[-EVENTS_SCANNED:]):
        if isinstance(event, ConsoleOutput):
            text = event.text + text
            lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
            if len(lines) > 1 or (lines and text.startswith(("\n", "\r"))):
                return lines[-1].strip()
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return lines[-1].strip() if lines else ""


def describe(sample_: dict) -> str:
    """One sample as text: ``guest 1.234 s, 12.3M blocks, 4.0 s wall: <last line>``."""
    text = (f"guest {sample_['guest_ns'] / 1e9:.3f} s, {_count(sample_['blocks'])} blocks, "
            f"{sample_['wall_seconds']:.1f} s wall")
    line = "".join(c if c.isprintable() else " " for c in sample_.get("last_line") or "")
    return f"{text}: {line}" if line else text


def _count(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


class ProgressLine:
    """Progress lines drawn on ``stream`` (a terminal) for the runs named in ``names``."""

    def __init__(self, stream: TextIO, names: list[str], *, width: int = 80, delay: float = 2.0,
                 interval: float = 0.25):
        self.stream, self.names, self.width = stream, list(names), max(width, 20)
        self.delay, self.interval = delay, interval
        self.texts: dict[str, str] = {}
        self.shown = 0                     # lines on the screen now
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._midline = False              # the terminal's cursor follows text without a newline
        self.lock = threading.RLock()      # the engine's thread clears, the sampling thread draws

    def update(self, name: str, sample_: dict) -> None:
        """Record ``name``'s latest sample and redraw if due."""
        with self.lock:
            self.texts[name] = describe(sample_)
            now = time.monotonic()
            if now - self.started < self.delay or now - self._last_draw < self.interval:
                return
            self._last_draw = now
            self._draw()

    def finish(self, name: str, text: str) -> None:
        """Show ``text`` as ``name``'s final state (the matrix keeps finished columns listed)."""
        with self.lock:
            self.texts[name] = text

    def _draw(self) -> None:
        lines = []
        for name in self.names:
            if name in self.texts:
                prefix = f"hvsim: {name}: " if len(self.names) > 1 or name else "hvsim: "
                lines.append(_fit(prefix + self.texts[name], self.width - 1))
        self._erase()
        if self._midline:                  # do not overwrite a partial line of the guest's
            self.stream.write("\n")
            self._midline = False
        self.stream.write("\n".join(ERASE_LINE + line for line in lines))
        self.stream.flush()
        self.shown = len(lines)

    def _erase(self) -> None:
        if self.shown:
            # to the first line's start, then ED: erase from there to the end of the screen
            self.stream.write("\r" + (CURSOR_UP.format(self.shown - 1) if self.shown > 1 else "") + ERASE_BELOW)
        self.shown = 0

    def wrote(self, text: str) -> None:
        """Note that ``text`` went to the same terminal (after ``clear``)."""
        with self.lock:
            if text:
                self._midline = not text.endswith(("\n", "\r"))

    def clear(self) -> None:
        """Erase the lines from the screen (they come back at the next due update)."""
        with self.lock:
            if self.shown:
                self._erase()
                self.stream.flush()


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
