"""A PS/2 keyboard (the device on the i8042's first port) and the scripted typist that drives it.

``parse_keys`` reads the ``--keys`` syntax into ``Key`` records, neutral of any interface (EFI's
ConIn maps them to EFI input keys, this keyboard to scan codes).  ``Ps2Keyboard`` is the keyboard's
own controller: it answers the host commands of an MF2 keyboard and queues the bytes it sends,
which the i8042 takes one at a time when its output buffer is free.  ``ScriptedTyping`` types the
keys on it, one keystroke (make then break codes, with Shift around shifted characters) each time
the keyboard has sent everything before and is scanning, ``KEY_INTERVAL_NS`` of guest time after
that, so the same guest sees the same keys at the same points of its execution.

Modelled commands: 0xFF reset (0xFA, then 0xAA: the self-test passed at once), 0xFE resend, 0xF6
set defaults, 0xF5 disable (defaults, scanning off), 0xF4 enable, 0xF3 typematic rate/delay
(stored: scripted keys are never held long enough to repeat), 0xF2 identify (0xAB 0x83, an MF2
keyboard), 0xF0 scan-code set (0 reports it; sets 1 and 2 are produced, set 3 is refused with
0xFE), 0xEE echo, 0xED LEDs (stored).  Other bytes answer 0xFE (resend), as a keyboard does
for a command it does not know.  The keyboard's buffer holds ``BUFFER_SIZE`` bytes; a keystroke
that does not fit is dropped and the buffer ends with the overrun code (0x00 in sets 1 and 2).

Not modelled: the wire (a byte is sent as soon as the controller can take it), parity and
timeouts, key repeat, keys other than the US layout's main block, arrows, editing keys and F1-F12.

Scan codes: IBM's set 2 (the PS/2 default); set 1 is the same keys through the 8042's translation
table (``i8042.TRANSLATE_SET2_TO_SET1``).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Callable

import attrs

# --- host commands and replies (IBM PS/2 keyboard technical reference) ----------------------------
CMD_LEDS, CMD_ECHO, CMD_SCAN_SET, CMD_IDENTIFY, CMD_TYPEMATIC = 0xED, 0xEE, 0xF0, 0xF2, 0xF3
CMD_ENABLE, CMD_DISABLE, CMD_DEFAULTS, CMD_RESEND, CMD_RESET = 0xF4, 0xF5, 0xF6, 0xFE, 0xFF
ACK, RESEND, BAT_OK, ECHO = 0xFA, 0xFE, 0xAA, 0xEE
MF2_ID = (0xAB, 0x83)
OVERRUN = 0x00
BREAK_PREFIX, EXTENDED_PREFIX = 0xF0, 0xE0
DEFAULT_TYPEMATIC = 0x2B          # 10.9 characters/s after 500 ms
BUFFER_SIZE = 16

KEY_START_NS = 1_000_000          # the first key: 1 ms of guest time after typing starts
KEY_INTERVAL_NS = 100_000         # between keystrokes: 100 us after the previous one was read

# Set 2 make codes, US layout: the key a character is on (shift needed for the second table).
_UNSHIFTED = {
    **dict(zip("abcdefghijklmnopqrstuvwxyz",
               (0x1C, 0x32, 0x21, 0x23, 0x24, 0x2B, 0x34, 0x33, 0x43, 0x3B, 0x42, 0x4B, 0x3A, 0x31, 0x44,
                0x4D, 0x15, 0x2D, 0x1B, 0x2C, 0x3C, 0x2A, 0x1D, 0x22, 0x35, 0x1A))),
    **dict(zip("1234567890", (0x16, 0x1E, 0x26, 0x25, 0x2E, 0x36, 0x3D, 0x3E, 0x46, 0x45))),
    "`": 0x0E, "-": 0x4E, "=": 0x55, "[": 0x54, "]": 0x5B, "\\": 0x5D, ";": 0x4C, "'": 0x52,
    ",": 0x41, ".": 0x49, "/": 0x4A, " ": 0x29, "\r": 0x5A, "\t": 0x0D, "\b": 0x66,
}
_SHIFTED = {**{c.upper(): _UNSHIFTED[c] for c in "abcdefghijklmnopqrstuvwxyz"},
            **dict(zip("~!@#$%^&*()_+{}|:\"<>?", (_UNSHIFTED[c] for c in "`1234567890-=[]\\;',./")))}
LEFT_SHIFT = 0x12
# Named keys: (extended, set 2 code).
NAMED_KEYS = {
    "esc": (False, 0x76), "f1": (False, 0x05), "f2": (False, 0x06), "f3": (False, 0x04), "f4": (False, 0x0C),
    "f5": (False, 0x03), "f6": (False, 0x0B), "f7": (False, 0x83), "f8": (False, 0x0A), "f9": (False, 0x01),
    "f10": (False, 0x09), "f11": (False, 0x78), "f12": (False, 0x07),
    "up": (True, 0x75), "down": (True, 0x72), "left": (True, 0x6B), "right": (True, 0x74), "home": (True, 0x6C),
    "end": (True, 0x69), "insert": (True, 0x70), "delete": (True, 0x71), "pageup": (True, 0x7D),
    "pagedown": (True, 0x7A),
}
CHARACTER_NAMES = {"enter": "\r", "tab": "\t", "backspace": "\b"}


@attrs.frozen
class Key:
    """One scripted keystroke: a character (``char``) or a named key without one (``name``)."""

    char: str | None = None
    name: str | None = None


def parse_keys(text: str) -> list[Key]:
    """``--keys`` syntax: characters as typed, a newline or ``{enter}`` is Enter (CR), ``{tab}``,
    ``{backspace}``, named keys ``{esc}``, ``{up}``, ``{f1}``..., ``{{`` a literal brace."""
    keys: list[Key] = []
    for match in re.finditer(r"\{\{|\{([a-z0-9]+)\}|(?s:.)", text):
        token, name = match.group(0), match.group(1)
        if token == "{{":
            keys.append(Key(char="{"))
        elif name is not None:
            if name in CHARACTER_NAMES:
                keys.append(Key(char=CHARACTER_NAMES[name]))
            elif name in NAMED_KEYS:
                keys.append(Key(name=name))
            else:
                raise ValueError(f"unknown key {{{name}}}; known: "
                                 + ", ".join(sorted([*CHARACTER_NAMES, *NAMED_KEYS])))
        elif token == "\n":
            keys.append(Key(char="\r"))
        elif ord(token) > 0xFFFF:
            raise ValueError(f"key {token!r} is outside UCS-2")
        else:
            keys.append(Key(char=token))
    return keys


def set2_keystroke(key: Key) -> list[bytes] | None:
    """The set 2 codes of pressing and releasing ``key``, one entry per make or break code
    (``None``: no key of the US layout types it)."""
    if key.name is not None:
        extended, code = NAMED_KEYS[key.name]
        prefix = bytes([EXTENDED_PREFIX]) if extended else b""
        return [prefix + bytes([code]), prefix + bytes([BREAK_PREFIX, code])]
    if key.char in _UNSHIFTED:
        code = _UNSHIFTED[key.char]
        return [bytes([code]), bytes([BREAK_PREFIX, code])]
    if key.char in _SHIFTED:
        code = _SHIFTED[key.char]
        return [bytes([LEFT_SHIFT]), bytes([code]), bytes([BREAK_PREFIX, code]), bytes([BREAK_PREFIX, LEFT_SHIFT])]
    return None


def set2_to_set1(code: bytes, translate: bytes) -> bytes:
    """A set 2 make or break code in set 1, through the 8042's ``translate`` table (a break's 0xF0
    becomes bit 7 of the code after it)."""
    out, released = bytearray(), False
    for byte in code:
        if byte == BREAK_PREFIX:
            released = True
            continue
        out.append(translate[byte] | (0x80 if released else 0))
        released = False
    return bytes(out)


class Ps2Keyboard:
    """The keyboard; ``data_ready`` is called when it has a byte for the controller, ``drained``
    when its buffer empties while scanning (the typist's cue)."""

    def __init__(self, translate: bytes, *, data_ready: Callable[[], None] = lambda: None):
        self.translate = translate
        self.data_ready = data_ready
        self.drained: Callable[[], None] = lambda: None
        self.queue: deque[int] = deque()
        self.last_sent = ACK
        self._argument_of: int | None = None     # the command whose parameter byte comes next
        self._defaults()

    def _defaults(self) -> None:
        self.scanning = True
        self.scan_set = 2
        self.typematic = DEFAULT_TYPEMATIC
        self.leds = 0

    # --- the controller's side -----------------------------------------------------------------
    def has_data(self) -> bool:
        return bool(self.queue)

    def take(self) -> int:
        """The next byte for the controller (call only when ``has_data``)."""
        self.last_sent = self.queue.popleft()
        if not self.queue and self.scanning:
            self.drained()
        return self.last_sent

    def receive(self, byte: int) -> None:
        """A byte the host sent (i8042 data port write)."""
        command, self._argument_of = self._argument_of, None
        if command is not None and byte not in (CMD_RESET, CMD_RESEND):
            self._parameter(command, byte)
            return
        if byte == CMD_RESEND:
            self._reply(self.last_sent)
            return
        if byte == CMD_RESET:
            self.queue.clear()
            self._defaults()
            self._reply(ACK, BAT_OK)
        elif byte == CMD_DEFAULTS:
            self._defaults()
            self._reply(ACK)
        elif byte == CMD_DISABLE:
            self._defaults()
            self.scanning = False
            self.queue.clear()
            self._reply(ACK)
        elif byte == CMD_ENABLE:
            self.scanning = True
            self.queue.clear()
            self._reply(ACK)
        elif byte == CMD_IDENTIFY:
            self._reply(ACK, *MF2_ID)
        elif byte == CMD_ECHO:
            self._reply(ECHO)
        elif byte in (CMD_LEDS, CMD_TYPEMATIC, CMD_SCAN_SET):
            self._argument_of = byte
            self._reply(ACK)
        else:
            self._reply(RESEND)

    def _parameter(self, command: int, value: int) -> None:
        if command == CMD_LEDS:
            self.leds = value & 0x07
            self._reply(ACK)
        elif command == CMD_TYPEMATIC:
            self.typematic = value & 0x7F
            self._reply(ACK)
        elif value == 0:
            self._reply(ACK, self.scan_set)
        elif value in (1, 2):
            self.scan_set = value
            self._reply(ACK)
        else:
            self._reply(RESEND)

    def _reply(self, *data: int) -> None:
        """Command replies go out even while scanning is off, ahead of nothing: the host waits for them."""
        self.queue.extend(data)
        self.data_ready()

    # --- keys ------------------------------------------------------------------------------------
    def ready_for_key(self) -> bool:
        return self.scanning and not self.queue

    def press(self, key: Key) -> bool:
        """Type ``key`` (make and break codes in the current set); False when the US layout has no
        key for it (nothing is sent)."""
        codes = set2_keystroke(key)
        if codes is None:
            return False
        if self.scan_set == 1:
            codes = [set2_to_set1(code, self.translate) for code in codes]
        data = b"".join(codes)
        if len(self.queue) + len(data) > BUFFER_SIZE:
            if not self.queue or self.queue[-1] != OVERRUN:
                if len(self.queue) == BUFFER_SIZE:
                    self.queue.pop()
                self.queue.append(OVERRUN)
        else:
            self.queue.extend(data)
        self.data_ready()
        return True


class ScriptedTyping:
    """Types ``keys`` on ``keyboard`` in guest time (see the module docstring); ``note`` records
    keys the layout cannot type."""

    def __init__(self, clock, keyboard: Ps2Keyboard, note: Callable[[str], None]):
        self.clock = clock
        self.keyboard = keyboard
        self.note = note
        self.keys: deque[Key] = deque()
        self.typed = 0
        self._timer = None
        keyboard.drained = self._drained

    def start(self, keys, delay_ns: int = KEY_START_NS) -> None:
        """Begin typing ``keys`` ``delay_ns`` from now (after those not yet typed)."""
        self.keys.extend(keys)
        self._schedule(delay_ns)

    def _drained(self) -> None:
        self._schedule(KEY_INTERVAL_NS)

    def _schedule(self, delay_ns: int) -> None:
        if self.keys and self._timer is None:
            self._timer = self.clock.schedule_in(delay_ns, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self.keyboard.ready_for_key():
            return                   # the keyboard calls back (drained) once it can take a key
        while self.keys:
            key = self.keys.popleft()
            if self.keyboard.press(key):
                self.typed += 1
                return
            self.note(f"keyboard: no key of the US layout types {key.char!r}; skipped")
