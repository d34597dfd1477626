"""The ISA bus's view of a byte-wide port device: a 16- or 32-bit ``in``/``out`` is split into byte
cycles on consecutive ports, lowest first, as the bus does."""

from __future__ import annotations


class BytePorts:
    """Mix-in: a device implements ``_read_byte(port)`` and ``_write_byte(port, value)``."""

    def read(self, port: int, size: int) -> int:
        if size == 1:                   # nearly every access: one byte cycle
            return self._read_byte(port)
        value = 0
        for i in range(max(size, 1)):
            value |= self._read_byte(port + i) << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        if size == 1:
            self._write_byte(port, value & 0xFF)
            return
        for i in range(max(size, 1)):
            self._write_byte(port + i, (value >> (8 * i)) & 0xFF)
