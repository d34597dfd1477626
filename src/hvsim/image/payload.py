"""Compressed kernel payloads: recognise the compression by its magic and decompress it.

A bzImage (protocol 2.08+) points at its compressed ``vmlinux`` with payload_offset/payload_length.
The kernel build (scripts/Makefile.lib ``size_append``) appends a 4-byte uncompressed size after
every format except gzip, so every decompressor here stops at the end of the first stream and
ignores what follows.

Every failure is an ``ImageError`` naming the image and the format; no decompressor exception
escapes.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from typing import Optional

from hvsim.core.errors import ImageError

#: Refuse payloads that decompress to more than this (a real vmlinux is ~30-100 MiB).
MAX_DECOMPRESSED = 1 << 30

#: (compression, magic) in the order we test them; from lib/decompress.c compressed_formats[].
MAGICS: tuple[tuple[str, bytes], ...] = (
    ("gzip", b"\x1f\x8b"),
    ("xz", b"\xfd7zXZ\x00"),
    ("bzip2", b"BZh"),
    ("lz4", b"\x02\x21\x4c\x18"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("lzma", b"\x5d\x00"),
)
COMPRESSIONS = tuple(kind for kind, _ in MAGICS)

#: lib/decompress_unlz4.c: legacy frame magic and the fixed 8 MiB uncompressed block size.
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_BLOCK = 8 << 20
#: LZ4_COMPRESSBOUND(8 MiB): the largest a compressed legacy block can be.
LZ4_LEGACY_BOUND = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK // 255 + 16


def detect(data: bytes) -> Optional[str]:
    """The compression whose magic ``data`` starts with, or None."""
    for kind, magic in MAGICS:
        if data.startswith(magic):
            return kind
    return None


def decompress(kind: str, data: bytes, *, where: str = "payload",
               limit: int = MAX_DECOMPRESSED) -> bytes:
    """Decompress one stream of ``kind`` (one of COMPRESSIONS); trailing bytes are ignored.

    ``where`` names the thing in error messages (e.g. ``"vmlinuz: payload"``).
    """
    try:
        handler = _HANDLERS[kind]
    except KeyError:
        raise ImageError(f"{where}: unknown compression {kind!r} "
                         f"(known: {', '.join(COMPRESSIONS)})") from None
    try:
        out = handler(data, limit)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{where}: out of memory decompressing {kind} data") from None
    except Exception as exc:  # every decompressor has its own exception types
        raise ImageError(f"{where}: corrupt {kind} data ({type(exc).__name__}: {exc})") from None
    if isinstance(out, str):  # a handler's reason for refusing
        raise ImageError(f"{where}: {kind} data {out}")
    return out


def _too_big(limit: int) -> str:
    return f"decompresses to more than {limit} bytes"


def _stdlib_stream(decompressor, data: bytes, limit: int) -> bytes | str:
    out = decompressor.decompress(data, limit + 1)
    if len(out) > limit:
        return _too_big(limit)
    if not decompressor.eof:
        return "is truncated (stream has no end)"
    return out


def _xz(data: bytes, limit: int) -> bytes | str:
    return _stdlib_stream(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), data, limit)


def _lzma(data: bytes, limit: int) -> bytes | str:
    return _stdlib_stream(lzma.LZMADecompressor(format=lzma.FORMAT_ALONE), data, limit)


def _bzip2(data: bytes, limit: int) -> bytes | str:
    return _stdlib_stream(bz2.BZ2Decompressor(), data, limit)


def _gzip(data: bytes, limit: int) -> bytes | str:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = decompressor.decompress(data, limit + 1)
    if len(out) > limit:
        return _too_big(limit)
    if not decompressor.eof:
        return "is truncated (stream has no end)"
    return out


def _lz4(data: bytes, limit: int) -> bytes | str:
    import lz4.block

    if len(data) < 4 or struct.unpack_from("<I", data)[0] != LZ4_LEGACY_MAGIC:
        return "has no LZ4 legacy frame magic"
    chunks: list[bytes] = []
    total = 0
    pos = 4
    while len(data) - pos >= 4:
        size = struct.unpack_from("<I", data, pos)[0]
        if size == LZ4_LEGACY_MAGIC:  # a concatenated frame starts
            pos += 4
            continue
        left = len(data) - pos - 4
        if size == 0 or size > left or size > LZ4_LEGACY_BOUND:
            # The legacy frame has no end marker: what cannot be a block header ends it.  After
            # at least one block that is trailing data (Linux appends the uncompressed size).
            if chunks:
                break
            return f"is truncated (block at {pos:#x} claims {size} bytes, {left} left)"
        block = lz4.block.decompress(data[pos + 4:pos + 4 + size],
                                     uncompressed_size=LZ4_LEGACY_BLOCK)
        pos += 4 + size
        total += len(block)
        if total > limit:
            return _too_big(limit)
        chunks.append(block)
    if not chunks:
        return "has no blocks"
    return b"".join(chunks)


def _zstd(data: bytes, limit: int) -> bytes | str:
    import zstandard

    # decompressobj streams (Linux's frames may not record the content size) and stops at the end
    # of the first frame, leaving the appended size bytes in unused_data.  Feeding small slices
    # bounds how far past ``limit`` one call can expand.
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    chunks: list[bytes] = []
    total = 0
    for pos in range(0, len(data), _ZSTD_FEED):
        chunk = decompressor.decompress(data[pos:pos + _ZSTD_FEED])
        total += len(chunk)
        if total > limit:
            return _too_big(limit)
        chunks.append(chunk)
        if decompressor.eof:
            return b"".join(chunks)
    return "is truncated (frame has no end)"


_ZSTD_FEED = 4096


_HANDLERS = {
    "xz": _xz,
    "lzma": _lzma,
    "gzip": _gzip,
    "bzip2": _bzip2,
    "lz4": _lz4,
    "zstd": _zstd,
}
