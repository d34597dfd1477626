"""A bare_metal guest polls the i8042 for the scripted keys and writes them to the VGA text
buffer: the keys arrive as set 1 scan codes, the screen row appears on console channel ``vga``,
and ``--vga-png`` saves the screen."""

import shutil
import struct
import zlib

import pytest

from hvsim.cli import main
from hvsim.core.devices.i8042 import TRANSLATE_SET2_TO_SET1
from hvsim.core.devices.keyboard import Key, set2_keystroke

from guestcode import assemble

pytestmark = pytest.mark.skipif(shutil.which("as") is None or shutil.which("ld") is None,
                                reason="GNU as and ld build the guest")

LOAD = 0x200000
TYPED = "hi vga 42"


def _set1_to_ascii() -> bytes:
    table = bytearray(128)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789 ":
        table[TRANSLATE_SET2_TO_SET1[set2_keystroke(Key(char=ch))[0][0]]] = ord(ch)
    return bytes(table)


GUEST = f"""
    mov $0xb8000, %rdi
    lea table(%rip), %rsi
next:
    in $0x64, %al
    test $1, %al
    jz next
    in $0x60, %al
    test $0x80, %al
    jnz next                     # a break code
    cmp $0x1c, %al
    je done                      # Enter
    movzbl %al, %eax
    movb (%rsi,%rax), %al
    test %al, %al
    jz next
    movb %al, (%rdi)
    movb $0x1f, 1(%rdi)          # white on blue
    add $2, %rdi
    jmp next
done:
    mov $0x3d4, %dx              # cursor to row 1
    mov $0x0e, %al
    out %al, %dx
    inc %dx
    xor %al, %al
    out %al, %dx
    dec %dx
    mov $0x0f, %al
    out %al, %dx
    inc %dx
    mov $80, %al
    out %al, %dx
    xor %al, %al
    mov $0x501, %dx
    out %al, %dx
table:
    .byte {", ".join(str(b) for b in _set1_to_ascii())}
"""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    idat = data.index(b"IDAT")
    (idat_length,) = struct.unpack(">I", data[idat - 4:idat])
    width, height = struct.unpack(">II", data[16:24])
    assert len(zlib.decompress(data[idat + 4:idat + 4 + idat_length])) == height * (width * 3 + 1)
    return width, height


def test_typed_keys_reach_the_screen_and_its_png(tmp_path, capsys):
    elf, _ = assemble(GUEST, 64, base=LOAD)
    kernel, png, result = tmp_path / "guest.elf", tmp_path / "screen.png", tmp_path / "run.json"
    kernel.write_bytes(elf)
    status = main(["run", "--env", "bare_metal", str(kernel), "--keys", TYPED + "{enter}", "--vga-png", str(png),
                   "--trace-file", str(tmp_path / "trace.jsonl"), "--json", str(result), "--timeout", "60"])
    out = capsys.readouterr().out
    assert status == 0
    assert f"{TYPED}\n" in out                               # the screen's row, as console output
    import json
    events = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    vga = [e["text"] for e in events if e.get("kind") == "ConsoleOutput" and e.get("channel") == "vga"]
    assert vga == [f"{TYPED}\n"]
    assert _png_size(png.read_bytes()) == (640, 400)
    assert json.loads(result.read_text())["extra"]["vga_png"] == str(png)


def test_the_same_keys_arrive_at_the_same_guest_time(tmp_path, capsys):
    elf, _ = assemble(GUEST, 64, base=LOAD)
    kernel = tmp_path / "guest.elf"
    kernel.write_bytes(elf)
    runs = []
    for n in range(2):
        main(["run", "--env", "bare_metal", str(kernel), "--keys", "ab{enter}", "--json", str(tmp_path / f"{n}.json")])
        import json
        runs.append(json.loads((tmp_path / f"{n}.json").read_text())["stats"])
    capsys.readouterr()
    assert runs[0]["guest_ns"] == runs[1]["guest_ns"] and runs[0]["guest_ns"] > 1_000_000
