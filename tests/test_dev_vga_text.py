"""VGA text mode through its MMIO window and CRTC ports: rows captured as console lines a frame
after they change, scrolls recognised, the screen rendered as a PNG."""

import struct
import zlib

from hvsim.core.clock import GuestClock
from hvsim.core.devices.vga_text import FRAME_NS, CrtcPorts, VgaText

from fakeclock import FakeControl


class Rig:
    def __init__(self):
        self.ctl = FakeControl()
        self.clock = GuestClock(self.ctl)
        self.lines = []
        self.vga = VgaText(self.clock, lambda channel, text: self.lines.append((channel, text)))
        self.crtc = CrtcPorts(self.vga)

    def put(self, row, text, attribute=0x07):
        for column, ch in enumerate(text):
            self.vga.write(2 * (row * 80 + column), 2, ord(ch) | attribute << 8)

    def cursor(self, row, column):
        at = row * 80 + column
        self.crtc.write(0x3D4, 2, 0x0E | (at >> 8) << 8)     # index then data, as one 16-bit out
        self.crtc.write(0x3D4, 2, 0x0F | (at & 0xFF) << 8)

    def next_frame(self):
        deadline = self.clock.next_deadline()
        assert deadline is not None
        self.ctl.blocks = -(-deadline // 10)
        self.clock.run_due()


def test_a_row_is_sent_once_the_cursor_left_it():
    rig = Rig()
    rig.cursor(1, 0)
    rig.put(0, "hello")
    rig.put(1, "wor")
    assert rig.lines == [] and rig.clock.next_deadline() == FRAME_NS    # sent at the next frame
    rig.next_frame()
    assert rig.lines == [("vga", "hello\n")]                 # row 1 holds the cursor
    rig.put(1, "world")
    rig.cursor(2, 0)
    rig.next_frame()
    assert rig.lines[1:] == [("vga", "world\n")]
    assert rig.clock.next_deadline() is None                 # no change, no frame scheduled


def test_a_scroll_does_not_send_lines_again_and_flush_sends_the_cursor_row():
    rig = Rig()
    rig.cursor(24, 0)
    for row in range(24):
        rig.put(row, f"line {row}")
    rig.next_frame()
    assert len(rig.lines) == 24
    for row in range(24):                                    # scroll up one row by copying
        rig.put(row, f"line {row + 1}".ljust(8))
    rig.put(23, "line 24")
    rig.put(24, "prompt>")
    rig.next_frame()
    assert rig.lines[24:] == [("vga", "line 24\n")]
    rig.vga.flush()
    assert rig.lines[-1] == ("vga", "prompt>\n")


def test_crtc_registers_read_back_and_the_start_address_moves_the_screen():
    rig = Rig()
    rig.crtc.write(0x3D4, 1, 0x0C)
    rig.crtc.write(0x3D5, 1, 0x00)
    rig.crtc.write(0x3D4, 1, 0x0D)
    rig.crtc.write(0x3D5, 1, 80)                              # the screen starts one row down
    assert rig.crtc.read(0x3D5, 1) == 80 and rig.crtc.read(0x3D4, 1) == 0x0D
    rig.put(1, "top row now")
    assert rig.vga.rows()[0] == "top row now"
    assert rig.vga.read(160, 2) == ord("t") | 0x07 << 8


def _decode_png(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, {}
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length:at + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = [raw[y * (width * 3 + 1) + 1:(y + 1) * (width * 3 + 1)] for y in range(height)]
    return width, height, depth, colour, rows


def test_the_png_shows_the_characters_in_their_colours():
    rig = Rig()
    rig.put(0, "A", attribute=0x1E)                          # yellow on blue
    width, height, depth, colour, rows = _decode_png(rig.vga.png())
    assert (width, height, depth, colour) == (640, 400, 8, 2)
    cell = [rows[y][:8 * 3] for y in range(16)]
    pixels = {bytes(row[x:x + 3]) for row in cell for x in range(0, 24, 3)}
    assert pixels == {b"\x00\x00\xaa", b"\xff\xff\x55"}     # background and foreground only
    assert bytes(rows[0][2 * 3:3 * 3]) == b"\xff\xff\x55"    # the top of the A (row 0 bits 2-3)
    assert set(bytes(rows[100][300:303])) == {0}             # elsewhere: black
