"""Function names from a Linux image's own kallsyms tables, for an ELF vmlinux without ``.symtab``.

Linux's build (scripts/kallsyms.c) emits, in ``.rodata``, the tables kernel/kallsyms.c reads to
name addresses; Debian's vmlinux keeps them though it strips ``.symtab``.  Their symbols are only in
``System.map``, so this finds them by their structure:

- ``kallsyms_token_table``: 256 NUL-terminated tokens, back to back; ``kallsyms_token_index``
  (256 little-endian u16, 8-byte aligned after the table) holds each token's offset in the table,
  the first 0 and strictly increasing.
- ``kallsyms_relative_base`` (u64, a kernel virtual address), ``kallsyms_num_syms`` (u32) and
  ``kallsyms_names`` (at the next 8-byte boundary): one entry per symbol, a length (one byte; Linux
  6.1 and later: two, ULEB128-style, when the first has bit 7 set) then that many token numbers.
  Expanded, an entry's first character is the symbol's ``nm`` type, the rest its name.
- ``kallsyms_offsets`` (u32 per symbol) ends at ``kallsyms_relative_base`` (8-byte aligned).
  CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86-64): an offset >= 0 is the address itself, a negative one
  means ``relative_base - 1 - offset``; without it every offset is added to ``relative_base``.
- ``kallsyms_markers`` (u32 per 256 symbols, after the names, 8-byte aligned): where entry
  256*i starts in the names; used here to confirm a candidate.

Not modelled: CONFIG_KALLSYMS_BASE_RELATIVE=n (``kallsyms_addresses``, absolute u64 per symbol) and
32-bit kernels; for those ``read_kallsyms`` finds nothing and returns None.
"""

from __future__ import annotations

import re
import struct

# scripts/kallsyms.c: the token table has one token per byte value.
TOKENS = 256
# scripts/kallsyms.c output_label(): every table starts on an 8-byte boundary (x86-64).
TABLE_ALIGN = 8
# scripts/kallsyms.c: kallsyms_markers has one entry per this many symbols.
MARKER_STRIDE = 256
# Sanity bounds for a candidate kallsyms_num_syms (a Linux image has tens of thousands of symbols).
MIN_SYMS, MAX_SYMS = 256, 4_000_000
# Lowest x86-64 kernel-half address: kallsyms_relative_base is _text (0xffffffff81000000 and up).
KERNEL_HALF = 0xFFFF_FFFF_8000_0000

# A u16 0 followed by a small u16: the start of a token index (token 0's offset, token 1's).
_INDEX_START = re.compile(rb"\x00\x00[\x02-\x40]\x00", re.DOTALL)
# The top five bytes of a little-endian u64 kernel-half address.
_KERNEL_POINTER_TOP = re.compile(rb"(?=[\x80-\xff]\xff\xff\xff\xff)", re.DOTALL)


def _align(value: int) -> int:
    return (value + TABLE_ALIGN - 1) & ~(TABLE_ALIGN - 1)


def read_kallsyms(segments) -> list[tuple[int, str, str]] | None:
    """(address, nm type, name) of every symbol in the image's kallsyms tables, or None when no
    segment holds them.  ``segments``: objects with ``vaddr`` and ``data`` (PT_LOAD segments)."""
    for segment in segments:
        data = segment.data
        tokens = _find_tokens(data, segment.vaddr)
        if tokens is None:
            continue
        token_start, table = tokens
        found = _find_names(data, segment.vaddr, token_start, table)
        if found is not None:
            return found
    return None


def _find_tokens(data: bytes, vaddr: int) -> tuple[int, list[bytes]] | None:
    """(file offset of kallsyms_token_table, its 256 tokens), or None."""
    for match in _INDEX_START.finditer(data):
        at = match.start()
        if (vaddr + at) % TABLE_ALIGN or at + 2 * TOKENS > len(data):
            continue
        index = struct.unpack_from(f"<{TOKENS}H", data, at)
        if any(b <= a for a, b in zip(index, index[1:])):
            continue
        # The table ends (NUL-terminated last token) at most TABLE_ALIGN - 1 bytes before the index.
        for pad in range(TABLE_ALIGN):
            end = at - pad                       # one past the last token's NUL
            if end < 1 or data[end - 1] != 0:
                continue
            last = data.rfind(b"\x00", 0, end - 1)
            start = last + 1 - index[-1]
            if start < 0 or last + 1 - start != index[-1]:
                continue
            table = _tokens(data, start, end, index)
            if table is not None:
                return start, table
    return None


def _tokens(data: bytes, start: int, end: int, index) -> list[bytes] | None:
    """The 256 tokens if every index entry starts a non-empty NUL-terminated token in [start, end)."""
    blob = data[start:end]
    bounds = list(index) + [end - start]
    table = []
    for i in range(TOKENS):
        token = blob[bounds[i]:bounds[i + 1]]
        if len(token) < 2 or token[-1] != 0 or 0 in token[:-1]:
            return None
        table.append(token[:-1])
    return table


def _find_names(data: bytes, vaddr: int, token_start: int,
                table: list[bytes]) -> list[tuple[int, str, str]] | None:
    """Scan back from the token table for relative_base + num_syms whose names decode and whose
    markers confirm them."""
    candidates = [m.start() - 3 for m in _KERNEL_POINTER_TOP.finditer(data, 0, token_start)]
    for base_at in reversed(candidates):
        if base_at < 0 or (vaddr + base_at) % TABLE_ALIGN or base_at + 16 > token_start:
            continue
        base, count = struct.unpack_from("<QI", data, base_at)
        if base < KERNEL_HALF or not MIN_SYMS <= count <= MAX_SYMS:
            continue
        offsets_at = base_at - _align(4 * count)
        if offsets_at < 0:
            continue
        names = _decode_names(data, base_at + 16, count, token_start)
        if names is None:
            continue
        entries, starts, names_end = names
        markers_at = base_at + 16 + _align(names_end)     # names_end is relative
        markers = (count + MARKER_STRIDE - 1) // MARKER_STRIDE
        if markers_at + 4 * markers > token_start:
            continue
        marks = struct.unpack_from(f"<{markers}I", data, markers_at)
        if any(marks[i] != starts[i * MARKER_STRIDE] for i in range(markers)):
            continue
        offsets = struct.unpack_from(f"<{count}i", data, offsets_at)
        absolute_percpu = any(o < 0 for o in offsets)
        symbols = []
        for offset, tokens in zip(offsets, entries):
            if absolute_percpu:
                address = offset if offset >= 0 else base - 1 - offset
            else:
                address = base + (offset & 0xFFFF_FFFF)
            text = b"".join(table[t] for t in tokens).decode("ascii", "replace")
            if text:
                symbols.append((address & 0xFFFF_FFFF_FFFF_FFFF, text[0], text[1:]))
        return symbols
    return None


def _decode_names(data: bytes, at: int, count: int, limit: int):
    """(token numbers per entry, each entry's offset from the names' start, end offset) or None
    when ``count`` entries do not fit before ``limit``."""
    entries, starts = [], []
    pos = at
    for _ in range(count):
        if pos >= limit:
            return None
        starts.append(pos - at)
        length = data[pos]
        pos += 1
        if length & 0x80:
            if pos >= limit:
                return None
            length = (length & 0x7F) | (data[pos] << 7)
            pos += 1
        if length == 0 or pos + length > limit:
            return None
        entries.append(data[pos:pos + length])
        pos += length
    return entries, starts, pos - at
