"""Engine-internal CPU fields the unicorn 2.1.4 API does not expose, found by calibration.

Unicorn never delivers exceptions through the guest IDT, so hvsim does (exceptions.py).  Two hidden
fields of QEMU's CPUX86State matter for that: ``error_code`` (the #PF/#GP error code) and
``old_exception`` (which QEMU resets only in its own delivery path; left stale, the next #PF becomes a
#DF).  Their offsets inside the ``uc_context`` blob depend on the build, so they are found at start-up
by running a scratch engine through known faults and diffing its contexts.  A unicorn whose layout
defeats the calibration makes ``calibrate`` raise, so a changed engine fails loudly, not silently.
"""

from __future__ import annotations

import ctypes
import functools
import struct

import attrs
from unicorn import UC_HOOK_INTR, Uc
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_RIP,
)

from .engine import new_engine


@attrs.frozen
class ContextOffsets:
    old_exception: int
    error_code: int
    exception_is_int: int


# Scratch guest: int3; write to an unmapped page (#PF err 2); read another (#PF err 0); hlt.
_CODE = bytes.fromhex(
    "cc"                              # int3
    "48c7042500000040 01000000"       # movq $1, 0x40000000
    "488b042500002040"                # mov 0x40200000, %rax
    "f4"                              # hlt
)
_ENTRY = 0x1000


def _blob(uc: Uc) -> bytes:
    ctx = uc.context_save()
    return ctypes.string_at(ctx.context.value, ctx.size)


@functools.lru_cache(maxsize=1)
def calibrate() -> ContextOffsets:
    """Find the hidden fields' offsets (cached: the layout is fixed for a loaded libunicorn)."""
    uc = new_engine()
    uc.mem_map(0, 1 << 20)
    uc.mem_write(_ENTRY, _CODE)
    pml4, pdpt, pd = 0x10000, 0x11000, 0x12000
    uc.mem_write(pml4, struct.pack("<Q", pdpt | 3))
    uc.mem_write(pdpt, struct.pack("<Q", pd | 3))
    uc.mem_write(pd, struct.pack("<Q", 0x83))            # 0-2 MiB identity; 1 GiB+ not present
    uc.reg_write(UC_X86_REG_CR3, pml4)
    uc.reg_write(UC_X86_REG_CR4, 0x20)
    uc.reg_write(UC_X86_REG_CR0, 0x80000011)
    snaps: list[tuple[int, bytes]] = []
    offsets_old: list[int] = []

    def on_interrupt(uc, intno, _):
        snaps.append((intno, _blob(uc)))
        if len(snaps) >= 3:
            uc.emu_stop()
            return
        if intno == 14:   # skip the faulting instruction; the engine left old_exception = 14
            blob = uc.context_save()
            ctypes.memmove(blob.context.value + offsets_old[0], struct.pack("<i", -1), 4)
            uc.context_restore(blob)
            uc.reg_write(UC_X86_REG_RIP, uc.reg_read(UC_X86_REG_RIP) + 12)

    before = _blob(uc)
    # First run: stop at the first #PF to find old_exception, then continue with it known.
    def first(uc, intno, _):
        if intno == 14:
            after = _blob(uc)
            offsets_old.extend(
                o for o in range(0, len(before) - 4, 4)
                if _i32(before, o) == -1 and _i32(after, o) == 14
            )
            uc.emu_stop()

    h = uc.hook_add(UC_HOOK_INTR, first)
    uc.emu_start(_ENTRY, 0, count=10)
    uc.hook_del(h)
    if len(offsets_old) != 1:
        raise RuntimeError(f"unicorn context calibration: old_exception candidates {offsets_old}")
    # Second run from the start: int3, #PF(write), #PF(read).
    blob = uc.context_save()
    ctypes.memmove(blob.context.value + offsets_old[0], struct.pack("<i", -1), 4)
    uc.context_restore(blob)
    uc.hook_add(UC_HOOK_INTR, on_interrupt)
    uc.emu_start(_ENTRY, 0, count=10)
    if [s[0] for s in snaps] != [3, 14, 14]:
        raise RuntimeError(f"unicorn context calibration: saw vectors {[s[0] for s in snaps]}")
    (_, b_int), (_, b_pfw), (_, b_pfr) = snaps
    size = min(len(b_int), len(b_pfw), len(b_pfr)) - 4
    err = [o for o in range(0, size, 4) if _i32(b_pfw, o) == 2 and _i32(b_pfr, o) == 0 and o != offsets_old[0]]
    is_int = [o for o in range(0, size, 4) if _i32(b_int, o) == 1 and _i32(b_pfw, o) == 0 and _i32(b_pfr, o) == 0]
    err = [o for o in err if _i32(b_int, o) != 2]
    if not err or not is_int:
        raise RuntimeError(f"unicorn context calibration: error_code {err}, exception_is_int {is_int}")
    # error_code and exception_is_int sit next to each other in CPUX86State; take the pair.
    pairs = [(e, i) for e in err for i in is_int if abs(e - i) <= 16]
    error_code, exception_is_int = pairs[0] if pairs else (err[0], is_int[0])
    return ContextOffsets(offsets_old[0], error_code, exception_is_int)


def _i32(blob: bytes, offset: int) -> int:
    return struct.unpack_from("<i", blob, offset)[0]


class EngineState:
    """Reads and patches the hidden fields of one engine's CPU."""

    def __init__(self, uc: Uc, offsets: ContextOffsets):
        self._uc = uc
        self.offsets = offsets

    def pending_exception(self) -> tuple[int, bool]:
        """(error_code, raised_by_int_instruction) of the exception being reported to a hook."""
        ctx = self._uc.context_save()
        base = ctx.context.value
        err = struct.unpack("<i", ctypes.string_at(base + self.offsets.error_code, 4))[0]
        is_int = struct.unpack("<i", ctypes.string_at(base + self.offsets.exception_is_int, 4))[0]
        return err & 0xFFFF_FFFF, bool(is_int)

    def clear_exception(self) -> None:
        """Forget the exception in flight, as QEMU's own delivery would (old_exception = -1)."""
        ctx = self._uc.context_save()
        ctypes.memmove(ctx.context.value + self.offsets.old_exception, struct.pack("<i", -1), 4)
        self._uc.context_restore(ctx)

    def interrupt_shadow(self) -> bool:   # placeholder until the hflags calibration lands (branch ring)
        return False
