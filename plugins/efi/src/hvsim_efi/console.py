"""The consoles: SimpleTextOutput (ConOut, StdErr), SimpleTextInput (ConIn, the machine's scripted keys until ExitBootServices hands those left to the
PS/2 keyboard) and
Graphics Output (a framebuffer in firmware-reserved memory, saved as a PNG when the run ends).

Text output goes to the run's console channels ``efi-conout`` and ``efi-stderr`` as the guest wrote
it (CHAR16 decoded; CR and LF kept).  The text mode is 80x25 (mode 0, the one mode the
specification requires); the cursor follows what was written.
"""

from __future__ import annotations

import struct

import attrs

from hvsim.abi import efi
from hvsim.core import png
from hvsim.core.devices import ConsoleSink
from hvsim.core.devices.keyboard import Key

from .calls import EfiError, service
from .events import Event

COLUMNS, ROWS = 80, 25
DEFAULT_ATTRIBUTE = 0x07               # EFI_LIGHTGRAY on EFI_BLACK


@attrs.define
class TextOutput:
    handle: int
    address: int                      # the protocol interface
    mode_address: int
    sink: ConsoleSink
    attribute: int = DEFAULT_ATTRIBUTE
    column: int = 0
    row: int = 0
    cursor_visible: bool = True

    def mode_bytes(self) -> bytes:
        return struct.pack(efi.TEXT_OUTPUT_MODE_FORMAT, 1, 0, self.attribute, self.column, self.row,
                           self.cursor_visible)

    def advance(self, text: str) -> None:
        for ch in text:
            if ch == "\n":
                self.row = min(self.row + 1, ROWS - 1)
            elif ch == "\r":
                self.column = 0
            elif ch == "\b":
                self.column = max(self.column - 1, 0)
            else:
                self.column += 1
                if self.column >= COLUMNS:
                    self.column, self.row = 0, min(self.row + 1, ROWS - 1)


@attrs.define
class ConsoleIn:
    handle: int
    address: int
    wait_for_key: int


def install_text_output(fw, channel: str) -> TextOutput:
    mode = fw.alloc(efi.BOOT_SERVICES_DATA, 24, 8)
    interface = fw.alloc(efi.BOOT_SERVICES_DATA, efi.TEXT_OUTPUT_SIZE, 8)
    fw.m.memory.write(interface, b"".join(struct.pack("<Q", fw.stubs[("ConOut", n)])
                                          for n in efi.TEXT_OUTPUT_SERVICES) + struct.pack("<Q", mode))
    handle = fw.db.install(fw, 0, efi.SIMPLE_TEXT_OUTPUT_PROTOCOL_GUID, interface)
    sink = ConsoleSink(fw.m, channel)
    fw.m.add_sink(sink)
    console = TextOutput(handle, interface, mode, sink)
    fw.text_outputs[interface] = console
    fw.m.memory.write(mode, console.mode_bytes())
    return console


def install_text_input(fw) -> ConsoleIn:
    interface = fw.alloc(efi.BOOT_SERVICES_DATA, efi.TEXT_INPUT_SIZE, 8)
    wait = fw.events.create(Event(efi.EVT_NOTIFY_WAIT, efi.TPL_NOTIFY, 0, 0, is_key_wait=True))
    fw.m.memory.write(interface, struct.pack("<QQQ", fw.stubs[("ConIn", "Reset")],
                                             fw.stubs[("ConIn", "ReadKeyStroke")], wait))
    handle = fw.db.install(fw, 0, efi.SIMPLE_TEXT_INPUT_PROTOCOL_GUID, interface)
    return ConsoleIn(handle, interface, wait)


def efi_input_key(key: Key) -> tuple[int, int]:
    """A scripted key as ConIn reports it: (ScanCode, UnicodeChar)."""
    if key.name is not None:
        return efi.SCAN_CODES[key.name], 0
    return 0, ord(key.char)


def _output(ctx) -> TextOutput:
    console = ctx.fw.text_outputs.get(ctx.args["This"])
    if console is None:
        raise EfiError(efi.INVALID_PARAMETER, "This is not a text output protocol")
    return console


def _sync(ctx, console: TextOutput) -> None:
    ctx.m.memory.write(console.mode_address, console.mode_bytes())


@service("ConOut", "Reset", "This", "ExtendedVerification")
def text_reset(ctx):
    console = _output(ctx)
    console.column = console.row = 0
    console.attribute = DEFAULT_ATTRIBUTE
    _sync(ctx, console)
    return efi.SUCCESS


@service("ConOut", "OutputString", "This", "String")
def output_string(ctx):
    console = _output(ctx)
    text = ctx.ucs2(ctx.pointer("String"))
    console.sink.put(text.encode("utf-8", "surrogateescape"))
    console.advance(text)
    _sync(ctx, console)
    return efi.SUCCESS


@service("ConOut", "TestString", "This", "String")
def test_string(ctx):
    _output(ctx)
    text = ctx.ucs2(ctx.pointer("String"))
    return efi.UNSUPPORTED if any(0xD800 <= ord(c) <= 0xDFFF for c in text) else efi.SUCCESS


@service("ConOut", "QueryMode", "This", "ModeNumber", "Columns", "Rows")
def query_mode(ctx):
    _output(ctx)
    columns, rows = ctx.pointer("Columns"), ctx.pointer("Rows")
    if ctx.args["ModeNumber"] != 0:
        raise EfiError(efi.UNSUPPORTED, "only mode 0 (80x25) exists")
    ctx.write_u64(columns, COLUMNS)
    ctx.write_u64(rows, ROWS)
    return efi.SUCCESS


@service("ConOut", "SetMode", "This", "ModeNumber")
def set_mode(ctx):
    console = _output(ctx)
    if ctx.args["ModeNumber"] != 0:
        raise EfiError(efi.UNSUPPORTED, "only mode 0 (80x25) exists")
    console.column = console.row = 0
    _sync(ctx, console)
    return efi.SUCCESS


@service("ConOut", "SetAttribute", "This", "Attribute")
def set_attribute(ctx):
    console = _output(ctx)
    if ctx.args["Attribute"] > 0x7F:
        raise EfiError(efi.UNSUPPORTED, f"attribute {ctx.args['Attribute']:#x}")
    console.attribute = ctx.args["Attribute"]
    _sync(ctx, console)
    return efi.SUCCESS


@service("ConOut", "ClearScreen", "This")
def clear_screen(ctx):
    console = _output(ctx)
    console.column = console.row = 0
    _sync(ctx, console)
    return efi.SUCCESS


@service("ConOut", "SetCursorPosition", "This", "Column", "Row")
def set_cursor_position(ctx):
    console = _output(ctx)
    if ctx.args["Column"] >= COLUMNS or ctx.args["Row"] >= ROWS:
        raise EfiError(efi.UNSUPPORTED, f"({ctx.args['Column']}, {ctx.args['Row']}) is outside 80x25")
    console.column, console.row = ctx.args["Column"], ctx.args["Row"]
    _sync(ctx, console)
    return efi.SUCCESS


@service("ConOut", "EnableCursor", "This", "Visible")
def enable_cursor(ctx):
    console = _output(ctx)
    console.cursor_visible = bool(ctx.args["Visible"] & 0xFF)
    _sync(ctx, console)
    return efi.SUCCESS


@service("ConIn", "Reset", "This", "ExtendedVerification")
def input_reset(ctx):
    if ctx.args["This"] != ctx.fw.con_in.address:
        raise EfiError(efi.INVALID_PARAMETER, "This is not ConIn")
    return efi.SUCCESS


@service("ConIn", "ReadKeyStroke", "This", "Key")
def read_key_stroke(ctx):
    if ctx.args["This"] != ctx.fw.con_in.address:
        raise EfiError(efi.INVALID_PARAMETER, "This is not ConIn")
    out = ctx.pointer("Key")
    if not ctx.fw.keys:
        return efi.NOT_READY
    scan, char = efi_input_key(ctx.fw.keys.pop(0))
    ctx.write(out, struct.pack(efi.INPUT_KEY_FORMAT, scan, char))
    ctx.record["key"] = f"scan {scan:#x}" if scan else repr(chr(char))
    return efi.SUCCESS


# -- Graphics Output ------------------------------------------------------------------------------
@attrs.define
class Framebuffer:
    base: int
    width: int
    height: int
    png: str | None
    interface: int = 0
    info: int = 0

    @property
    def size(self) -> int:
        return self.width * self.height * 4


def install_gop(fw, width: int, height: int, png: str | None) -> Framebuffer:
    fb_size = width * height * 4
    base = fw.alloc(efi.RESERVED_MEMORY, fb_size, 0x1000)
    info = fw.put(efi.BOOT_SERVICES_DATA, struct.pack(efi.GOP_MODE_INFO_FORMAT, 0, width, height,
                                                      efi.PIXEL_BLUE_GREEN_RED_RESERVED_8BIT_PER_COLOR,
                                                      0, 0, 0, 0, width), 8)
    mode = fw.put(efi.BOOT_SERVICES_DATA, struct.pack(efi.GOP_MODE_FORMAT, 1, 0, info, 36, base, fb_size), 8)
    interface = fw.put(efi.BOOT_SERVICES_DATA, b"".join(
        struct.pack("<Q", fw.stubs[("GOP", n)]) for n in efi.GOP_SERVICES) + struct.pack("<Q", mode), 8)
    fb = Framebuffer(base, width, height, png, interface, info)
    fw.db.install(fw, 0, efi.GRAPHICS_OUTPUT_PROTOCOL_GUID, interface)
    return fb


def _gop(ctx) -> Framebuffer:
    fb = ctx.fw.gop
    if fb is None or ctx.args["This"] != fb.interface:
        raise EfiError(efi.INVALID_PARAMETER, "This is not the graphics output protocol")
    return fb


@service("GOP", "QueryMode", "This", "ModeNumber", "SizeOfInfo", "Info")
def gop_query_mode(ctx):
    fb = _gop(ctx)
    size_out, info_out = ctx.pointer("SizeOfInfo"), ctx.pointer("Info")
    if ctx.args["ModeNumber"] != 0:
        raise EfiError(efi.INVALID_PARAMETER, f"mode {ctx.args['ModeNumber']} (MaxMode is 1)")
    copy = ctx.fw.pool.allocate(efi.BOOT_SERVICES_DATA, 36)
    ctx.write(copy, ctx.m.memory.read(fb.info, 36))
    ctx.write_u64(size_out, 36)
    ctx.write_u64(info_out, copy)
    return efi.SUCCESS


@service("GOP", "SetMode", "This", "ModeNumber")
def gop_set_mode(ctx):
    fb = _gop(ctx)
    if ctx.args["ModeNumber"] != 0:
        raise EfiError(efi.UNSUPPORTED, f"mode {ctx.args['ModeNumber']} (MaxMode is 1)")
    ctx.m.memory.fill(fb.base, fb.size)
    return efi.SUCCESS


@service("GOP", "Blt", "This", "BltBuffer", "BltOperation", "SourceX", "SourceY", "DestinationX",
         "DestinationY", "Width", "Height", "Delta")
def gop_blt(ctx):
    fb = _gop(ctx)
    a = ctx.args
    op, w, h = a["BltOperation"], a["Width"], a["Height"]
    if op > efi.BLT_VIDEO_TO_VIDEO or w == 0 or h == 0:
        raise EfiError(efi.INVALID_PARAMETER, f"operation {op}, {w}x{h}")
    src = (a["SourceX"], a["SourceY"])
    dst = (a["DestinationX"], a["DestinationY"])
    video_src = op in (efi.BLT_VIDEO_TO_BLT_BUFFER, efi.BLT_VIDEO_TO_VIDEO)
    video_dst = op != efi.BLT_VIDEO_TO_BLT_BUFFER
    for (x, y), on_video in ((src, video_src), (dst, video_dst)):
        if on_video and (x + w > fb.width or y + h > fb.height):
            raise EfiError(efi.INVALID_PARAMETER, f"rectangle at ({x}, {y}) {w}x{h} leaves the {fb.width}x{fb.height} screen")
    delta = a["Delta"] or w * 4
    buffer = a["BltBuffer"]
    memory = ctx.m.memory
    if op == efi.BLT_VIDEO_FILL:
        pixel = ctx.read(ctx.pointer("BltBuffer"), 4)
        for row in range(h):
            memory.write(fb.base + ((dst[1] + row) * fb.width + dst[0]) * 4, pixel * w)
        return efi.SUCCESS
    for row in range(h):
        if video_src:
            line = memory.read(fb.base + ((src[1] + row) * fb.width + src[0]) * 4, w * 4)
        else:
            line = ctx.read(buffer + (src[1] + row) * delta + src[0] * 4, w * 4)
        if video_dst:
            memory.write(fb.base + ((dst[1] + row) * fb.width + dst[0]) * 4, line)
        else:
            ctx.write(buffer + (dst[1] + row) * delta + dst[0] * 4, line)
    return efi.SUCCESS


def framebuffer_png(memory, fb: Framebuffer) -> bytes:
    """The framebuffer (BGRX pixels) as an RGB PNG."""
    pixels = memory.read(fb.base, fb.size)
    rgb = bytearray(fb.width * fb.height * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = pixels[2::4], pixels[1::4], pixels[0::4]
    return png.encode_rgb(fb.width, fb.height, bytes(rgb))
