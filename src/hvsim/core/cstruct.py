"""C-struct-like records: attrs classes whose fields carry a ``struct`` format code.

    @cstruct
    class E820Entry:
        addr: int = field("Q")
        size: int = field("Q")
        type: int = field("I")

    E820Entry.SIZE == 20; E820Entry(1, 2, 3).pack(); E820Entry.unpack(buf, offset)

Layouts are little-endian and packed (``<``): pad explicitly with a ``"4x"``-style field when the C
struct has padding, so the record states the ABI's real layout.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

_FORMAT_KEY = "hvsim.cstruct.format"


def field(fmt: str, default: Any = 0) -> Any:
    """A struct field with ``struct`` format ``fmt`` (``"Q"``, ``"16s"``, ``"4x"`` padding)."""
    return attrs.field(default=default, metadata={_FORMAT_KEY: fmt})


def cstruct(cls):
    """Make ``cls`` an attrs class with ``FORMAT``, ``SIZE``, ``pack()`` and ``unpack()``."""
    cls = attrs.define(cls, slots=True)
    fmts = [f.metadata[_FORMAT_KEY] for f in attrs.fields(cls)]
    cls.FORMAT = "<" + "".join(fmts)
    cls.SIZE = struct.calcsize(cls.FORMAT)
    cls._STRUCT = struct.Struct(cls.FORMAT)
    names = [f.name for f in attrs.fields(cls) if not f.metadata[_FORMAT_KEY].endswith("x")]

    def pack(self) -> bytes:
        return self._STRUCT.pack(*(getattr(self, n) for n in names))

    @classmethod
    def unpack(klass, buffer: bytes, offset: int = 0):
        return klass(**dict(zip(names, klass._STRUCT.unpack_from(buffer, offset))))

    cls.pack = pack
    cls.unpack = unpack
    return cls
