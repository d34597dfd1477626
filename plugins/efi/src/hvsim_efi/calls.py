"""What a service handler sees: ``EfiError``, the registry of services, and ``CallContext``.

A handler is registered once at import with ``@service(table, name, *parameter_names)`` and called
as ``handler(ctx)``; it returns an EFI status or raises ``EfiError``.  Guest pointers are read and
written through ``ctx``, which goes through the machine's bounds-checked virtual-memory accessor:
a pointer outside RAM becomes EFI_INVALID_PARAMETER recorded with the call, never a host exception.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Callable

from hvsim.abi import efi

PAGE = 0x1000

if TYPE_CHECKING:
    from .firmware import Firmware

# (table, service name) -> (handler, parameter names); filled at import by @service, then read-only.
SERVICES: dict[tuple[str, str], tuple[Callable, tuple[str, ...]]] = {}


class EfiError(Exception):
    """A service fails with ``status``; ``why`` is recorded with the call."""

    def __init__(self, status: int, why: str = ""):
        super().__init__(why or efi.status_name(status))
        self.status = status
        self.why = why


class Cancelled(Exception):
    """Long host-side work gave up because the run is ending (interrupted, wall-clock budget): the
    service returns nothing and the run stops at the next block boundary."""


# Long services work through guest memory this much at a time, checking between chunks whether
# the run is ending (a chunk takes a few milliseconds).
CHUNK = 1 << 21


def service(table: str, name: str, *params: str):
    def register(fn):
        SERVICES[(table, name)] = (fn, params)
        return fn
    return register


class CallContext:
    def __init__(self, fw: "Firmware", table: str, name: str):
        self.fw = fw
        self.m = fw.m
        self.table = table
        self.name = name
        self.args: dict[str, int] = {}
        self.return_address: int | None = None
        self._pages: dict[int, int] = {}
        self.record: dict[str, Any] = {}      # decoded arguments and results shown in the trace
        self.after_call: Callable[[], None] | None = None   # runs once the call is recorded (ends a run)
        self.blocked = False

    def block(self) -> None:
        """The call cannot complete yet: the caller waits in the firmware's idle code (interrupts
        on) and makes the same call again; nothing is recorded or returned this time."""
        self.blocked = True

    # -- argument checks -----------------------------------------------------------------------------
    def pointer(self, name: str) -> int:
        """A pointer argument that must not be NULL."""
        value = self.args[name]
        if value == 0:
            raise EfiError(efi.INVALID_PARAMETER, f"{name} is NULL")
        return value

    # -- guest memory ----------------------------------------------------------------------------------
    # Guest pointers are virtual: translated through the guest's live page tables (which cannot
    # change during a call, so each page is translated once per call), then read or written through
    # the bounds-checked physical accessor.
    def _pieces(self, address: int, size: int):
        """(physical address, offset, length) of the runs that make up ``[address, address+size)``:
        one per translation page (4 KiB, 2 MiB or 1 GiB)."""
        done = 0
        while done < size:
            va = (address + done) & 0xFFFF_FFFF_FFFF_FFFF
            page = va - va % PAGE
            found = self._pages.get(page)
            if found is None:
                found = self._pages[page] = self.m.vmem.translate_extent(page)
            pa, extent = found
            n = min(size - done, extent - va % PAGE)
            yield pa + va % PAGE, done, n
            done += n

    def _checked(self, address: int, size: int) -> list[tuple[int, int, int]]:
        """Every run translated and inside guest RAM, before anything is written (all or nothing)."""
        pieces = list(self._pieces(address, size))
        for pa, _, n in pieces:
            self.m.memory.check(pa, n)
        return pieces

    def check_range(self, address: int, size: int) -> None:
        """GuestMemoryError unless the whole range is mapped guest RAM."""
        self._checked(address, size)

    def _continue(self) -> None:
        if self.m.run_ending:
            raise Cancelled()

    def read(self, address: int, size: int) -> bytes:
        return b"".join(self.m.memory.read(pa, n) for pa, _, n in self._checked(address, size))

    def write(self, address: int, data: bytes) -> None:
        for pa, offset, n in self._checked(address, len(data)):
            self.m.memory.write(pa, data[offset:offset + n])

    def fill(self, address: int, size: int, value: int) -> None:
        """Set ``size`` bytes to ``value``, in chunks; ``Cancelled`` if the run is ending."""
        for pa, _, n in self._checked(address, size):
            for at in range(0, n, CHUNK):
                self._continue()
                self.m.memory.fill(pa + at, min(CHUNK, n - at), value)

    def copy(self, destination: int, source: int, size: int) -> None:
        """memmove in chunks (from the end when the destination overlaps the source above it);
        both ranges are checked whole first.  ``Cancelled`` if the run is ending."""
        self.check_range(source, size)
        self.check_range(destination, size)
        starts = range(0, size, CHUNK)
        if source < destination < source + size:
            starts = reversed(starts)
        for at in starts:
            self._continue()
            n = min(CHUNK, size - at)
            self.write(destination + at, self.read(source + at, n))

    def chunks(self, address: int, size: int):
        """The bytes of the range, a chunk at a time; ``Cancelled`` if the run is ending."""
        self.check_range(address, size)
        for at in range(0, size, CHUNK):
            self._continue()
            yield self.read(address + at, min(CHUNK, size - at))

    def read_u32(self, address: int) -> int:
        return struct.unpack("<I", self.read(address, 4))[0]

    def read_u64(self, address: int) -> int:
        return struct.unpack("<Q", self.read(address, 8))[0]

    def write_u32(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<I", value & 0xFFFF_FFFF))

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<Q", value & 0xFFFF_FFFF_FFFF_FFFF))

    def guid(self, name: str) -> bytes:
        """The GUID an argument points at (recorded by name)."""
        raw = self.read(self.pointer(name), 16)
        self.record[name] = efi.guid_name(raw)
        return raw

    def ucs2(self, address: int, limit: int = 1 << 16) -> str:
        """A NUL-terminated CHAR16 string (at most ``limit`` characters)."""
        out = bytearray()
        while len(out) < 2 * limit:
            chunk = self.read(address + len(out), 2)
            if chunk == b"\0\0":
                return out.decode("utf-16-le", "replace")
            out += chunk
        raise EfiError(efi.INVALID_PARAMETER, f"string at {address:#x} has no terminator within {limit} characters")
