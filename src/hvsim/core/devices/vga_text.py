"""VGA text mode: the 80x25 colour text buffer at 0xB8000 and the CRT controller's cursor registers.

The buffer is an MMIO window over 0xB8000-0xBFFFF (32 KiB, eight 4 KiB pages of cells): each cell
is a character byte then an attribute byte (foreground in bits 3:0, background in bits 6:4, bit 7
blink, drawn as the plain background).  The screen shows 25 rows of 80 cells from the CRTC's start
address (registers 0x0C/0x0D, in cells).  CRTC ports 0x3D4 (index) and 0x3D5 (data) hold the
registers; those that matter here are the cursor shape (0x0A/0x0B: start and end scan lines,
bit 5 of 0x0A hides it), the start address and the cursor location (0x0E/0x0F, in cells); the
others are stored and read back.

The screen becomes console channel ``vga``: at most once a frame (70 Hz of guest time, as the CRT
refreshes text mode), and only after a write changed the buffer, the visible rows are compared with
what was last sent, and each row whose text changed is sent as a line (trailing blanks dropped,
blank rows not sent), except the row the cursor is on, which is still being written: it is sent
when the cursor leaves it or the run ends.  A screen moved up by whole rows (a scroll) is
recognised, so scrolled lines are not sent twice.  Characters are code page 437; bytes outside
ASCII are sent as their code page 437 characters.

``png()`` renders the screen (640x400, the 8x16 cells of ``vga_font``, the 16 CGA colours, the
cursor when shown) as a PNG.

Not modelled: graphics modes, the sequencer, graphics controller and attribute controller
registers, fonts loaded by the guest (the built-in one is used), blinking, the monochrome
window at 0xB0000, and the CRTC timing registers' effect.
"""

from __future__ import annotations

from typing import Callable

from .. import png
from .isa_bus import BytePorts
from .vga_font import CELL_HEIGHT, CELL_WIDTH, glyph_rows

TEXT_BASE, TEXT_SIZE = 0xB8000, 0x8000
COLUMNS, ROWS = 80, 25
CRTC_INDEX_PORT, CRTC_DATA_PORT = 0x3D4, 0x3D5
CRTC_REGISTERS = 0x19
CRTC_CURSOR_START, CRTC_CURSOR_END = 0x0A, 0x0B
CRTC_START_HIGH, CRTC_START_LOW, CRTC_CURSOR_HIGH, CRTC_CURSOR_LOW = 0x0C, 0x0D, 0x0E, 0x0F
CURSOR_DISABLE = 0x20
FRAME_NS = 1_000_000_000 // 70
CHANNEL = "vga"
DEFAULT_ATTRIBUTE = 0x07            # light grey on black, as a BIOS clears the screen

# The 16 colours of the CGA/VGA text palette, RGB.
PALETTE = (
    (0x00, 0x00, 0x00), (0x00, 0x00, 0xAA), (0x00, 0xAA, 0x00), (0x00, 0xAA, 0xAA),
    (0xAA, 0x00, 0x00), (0xAA, 0x00, 0xAA), (0xAA, 0x55, 0x00), (0xAA, 0xAA, 0xAA),
    (0x55, 0x55, 0x55), (0x55, 0x55, 0xFF), (0x55, 0xFF, 0x55), (0x55, 0xFF, 0xFF),
    (0xFF, 0x55, 0x55), (0xFF, 0x55, 0xFF), (0xFF, 0xFF, 0x55), (0xFF, 0xFF, 0xFF),
)


class VgaText:
    """The text buffer and CRTC; ``console(channel, text)`` receives the captured lines and
    ``clock`` paces the frames."""

    def __init__(self, clock, console: Callable[[str, str], None]):
        self.clock = clock
        self.console = console
        self.ports = [CRTC_INDEX_PORT, CRTC_DATA_PORT]
        self.buffer = bytearray(bytes([0x20, DEFAULT_ATTRIBUTE]) * (TEXT_SIZE // 2))
        self.crtc = bytearray(CRTC_REGISTERS)
        self.crtc[CRTC_CURSOR_START], self.crtc[CRTC_CURSOR_END] = 0x0D, 0x0E     # an underline
        self.crtc_index = 0
        self.sent = [""] * ROWS          # what the console last got for each screen row
        self.shown = [""] * ROWS         # the rows at the last frame
        self._frame = None

    # --- the MMIO window -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.buffer[offset:offset + size].ljust(size, b"\xff"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")[:max(TEXT_SIZE - offset, 0)]
        if self.buffer[offset:offset + len(data)] != data:
            self.buffer[offset:offset + len(data)] = data
            self._changed()

    # --- the CRTC ports --------------------------------------------------------------------------
    def _in_range(self) -> bool:
        return self.crtc_index < CRTC_REGISTERS

    def read_port(self, port: int) -> int:
        if port == CRTC_INDEX_PORT:
            return self.crtc_index
        return self.crtc[self.crtc_index] if self._in_range() else 0xFF

    def write_port(self, port: int, value: int) -> None:
        if port == CRTC_INDEX_PORT:
            self.crtc_index = value & 0xFF
        elif self._in_range():
            self.crtc[self.crtc_index] = value & 0xFF
            if self.crtc_index in (CRTC_START_HIGH, CRTC_START_LOW, CRTC_CURSOR_HIGH, CRTC_CURSOR_LOW):
                self._changed()

    @property
    def start(self) -> int:
        return self.crtc[CRTC_START_HIGH] << 8 | self.crtc[CRTC_START_LOW]

    @property
    def cursor(self) -> int:
        return self.crtc[CRTC_CURSOR_HIGH] << 8 | self.crtc[CRTC_CURSOR_LOW]

    def cursor_row(self) -> int | None:
        row = (self.cursor - self.start) // COLUMNS
        return row if 0 <= row < ROWS and self.cursor >= self.start else None

    # --- the screen ------------------------------------------------------------------------------
    def cell(self, row: int, column: int) -> tuple[int, int]:
        """(character, attribute) of a screen cell."""
        at = 2 * ((self.start + row * COLUMNS + column) % (TEXT_SIZE // 2))
        return self.buffer[at], self.buffer[at + 1]

    def rows(self) -> list[str]:
        return [bytes(self.cell(r, c)[0] for c in range(COLUMNS)).decode("cp437").rstrip(" \0")
                for r in range(ROWS)]

    def _changed(self) -> None:
        if self._frame is None:
            now = self.clock.now()
            self._frame = self.clock.schedule(now - now % FRAME_NS + FRAME_NS, self._capture)

    def _capture(self, final: bool = False) -> None:
        self._frame = None
        rows = self.rows()
        scrolled = next((k for k in range(ROWS) if self._moved_up_by(k, rows)), 0)
        if scrolled:
            self.sent = self.sent[scrolled:] + [""] * scrolled
        held = None if final else self.cursor_row()
        for row, text in enumerate(rows):
            if row != held and text != self.sent[row]:
                self.sent[row] = text
                if text:
                    self.console(CHANNEL, text + "\n")
        self.shown = [self.sent[row] for row in range(ROWS)]

    def _moved_up_by(self, k: int, rows: list[str]) -> bool:
        """Whether the rows sent at the last frame are still there, ``k`` rows higher (rows sent
        blank, and rows written since to places that were blank, do not count against it)."""
        compared = [(rows[i], self.shown[i + k]) for i in range(ROWS - k) if self.shown[i + k]]
        return bool(compared) and all(now == before for now, before in compared) or (k == 0 and not compared)

    def flush(self) -> None:
        """The run ended: send what is on the screen and not yet sent, the cursor's row included."""
        if self._frame is not None:
            self._frame.cancel()
        self._capture(final=True)

    def png(self) -> bytes:
        """The screen as a 640x400 RGB PNG."""
        width = COLUMNS * CELL_WIDTH
        pixels = bytearray(width * ROWS * CELL_HEIGHT * 3)
        cursor_row = self.cursor_row()
        cursor_shown = cursor_row is not None and not self.crtc[CRTC_CURSOR_START] & CURSOR_DISABLE
        first, last = self.crtc[CRTC_CURSOR_START] & 0x1F, self.crtc[CRTC_CURSOR_END] & 0x1F
        for row in range(ROWS):
            for column in range(COLUMNS):
                char, attribute = self.cell(row, column)
                fg, bg = bytes(PALETTE[attribute & 0x0F]), bytes(PALETTE[(attribute >> 4) & 0x07])
                glyph = bytearray(glyph_rows(char))
                if cursor_shown and row == cursor_row and column == (self.cursor - self.start) % COLUMNS:
                    for line in range(first, min(last, CELL_HEIGHT - 1) + 1):
                        glyph[line] = 0xFF
                for line, bits in enumerate(glyph):
                    at = ((row * CELL_HEIGHT + line) * width + column * CELL_WIDTH) * 3
                    pixels[at:at + CELL_WIDTH * 3] = b"".join(fg if bits >> x & 1 else bg for x in range(CELL_WIDTH))
        return png.encode_rgb(width, ROWS * CELL_HEIGHT, bytes(pixels))


class CrtcPorts(BytePorts):
    """The CRTC's two ports as a port device (``Machine.ports``)."""

    def __init__(self, vga: VgaText):
        self.vga = vga
        self.ports = vga.ports

    def _read_byte(self, port: int) -> int:
        return self.vga.read_port(port) if port in self.ports else 0xFF

    def _write_byte(self, port: int, value: int) -> None:
        if port in self.ports:
            self.vga.write_port(port, value)
