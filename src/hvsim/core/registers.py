"""Register access straight through libunicorn, for the trap path.

The Unicorn 2.1.4 Python binding spends ~2 us on every ``reg_read``: it picks a value class per
register id (a generator over six ranges), builds a ctypes object, calls ``uc_reg_read`` through
argument conversion and unwraps the result.  A trap reads a dozen registers or more, so that was
most of a hypercall's cost.  ``RegisterFile`` calls ``uc_reg_read``/``uc_reg_write`` and
``uc_reg_read_batch`` itself for the registers whose value is one 64-bit integer (general, segment
selector, control, flags, RIP), with buffers allocated once, and hands every other id (MSR, GDTR/IDTR
and the other table registers, x87, SSE/AVX) to the binding unchanged.  What the guest sees is the
same: these are the same engine calls, only without the binding's per-call Python work.

The engine writes only as many bytes as the register has (a selector is 2, EAX 4), so buffers are
zeroed before every read.
"""

from __future__ import annotations

import ctypes
import struct
from typing import TYPE_CHECKING, Sequence

from unicorn import x86_const
from unicorn.unicorn_const import UC_ERR_OK
from unicorn.unicorn_py3.arch.intel import UcIntel
from unicorn.unicorn_py3.unicorn import UcError, uclib

if TYPE_CHECKING:
    from unicorn import Uc

_U64 = 0xFFFF_FFFF_FFFF_FFFF
_VOID_P = ctypes.c_void_p


def _unprototyped(function) -> "ctypes._CFuncPtr":
    """``function`` of libunicorn (returning ``uc_err``) as a function pointer without argument
    types: ctypes passes prebuilt ``c_void_p`` objects (the engine handle, buffer addresses) and
    Python ints (register ids and counts, C ``int``) as they are, without a conversion per argument
    and per call.  Every pointer argument must therefore be a ``c_void_p``, never a bare int."""
    pointer = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.cast(function, _VOID_P).value)
    pointer.argtypes = None
    return pointer


_REG_READ = _unprototyped(uclib.uc_reg_read)             # (uc, int regid, void *value)
_REG_WRITE = _unprototyped(uclib.uc_reg_write)           # (uc, int regid, const void *value)
_REG_READ_BATCH = _unprototyped(uclib.uc_reg_read_batch)  # (uc, int *regs, void *const *vals, int count)
_MSR = x86_const.UC_X86_REG_MSR


class _UcX86Msr(ctypes.Structure):
    """``struct uc_x86_msr`` (unicorn/x86.h): the MSR index and its value."""

    _fields_ = [("rid", ctypes.c_uint32), ("value", ctypes.c_uint64)]


def is_plain(reg_id: int) -> bool:
    """The binding reads ``reg_id`` as one unsigned 64-bit integer (no MSR/table/FP/vector class)."""
    return UcIntel._select_reg_class(reg_id) is ctypes.c_uint64


class _Batch:
    """Preallocated arrays for one ``uc_reg_read_batch`` over a fixed list of register ids."""

    def __init__(self, ids: Sequence[int]):
        n = len(ids)
        self.n = n
        self.ids = (ctypes.c_int * n)(*ids)
        self.values = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self.values)
        self.pointers = (_VOID_P * n)(*(base + 8 * i for i in range(n)))
        self.ids_at, self.pointers_at = _VOID_P(ctypes.addressof(self.ids)), _VOID_P(ctypes.addressof(self.pointers))
        self.view = memoryview(self.values).cast("B")      # zeroed and unpacked without ctypes objects
        self.zeros = bytes(8 * n)
        self.unpack = struct.Struct(f"<{n}Q").unpack_from


class RegisterFile:
    """Reads and writes one engine's registers by Unicorn id, the plain ones without the binding."""

    def __init__(self, uc: "Uc"):
        self._uc = uc
        self._handle = _VOID_P(uc._uch.value)
        self._buffer = ctypes.c_uint64()
        self._buffer_at = _VOID_P(ctypes.addressof(self._buffer))
        self._msr = _UcX86Msr()
        self._msr_at = _VOID_P(ctypes.addressof(self._msr))
        self._plain: dict[int, bool] = {}
        self._batches: dict[tuple[int, ...], _Batch] = {}

    def _is_plain(self, reg_id: int) -> bool:
        plain = self._plain.get(reg_id)
        if plain is None:
            plain = self._plain[reg_id] = is_plain(reg_id)
        return plain

    def read(self, reg_id: int):
        plain = self._plain.get(reg_id)
        if not plain and (plain is False or not self._is_plain(reg_id)):
            return self._uc.reg_read(reg_id)
        buffer = self._buffer
        buffer.value = 0
        status = _REG_READ(self._handle, reg_id, self._buffer_at)
        if status != UC_ERR_OK:
            raise UcError(status, reg_id)
        return buffer.value

    def write(self, reg_id: int, value) -> None:
        plain = self._plain.get(reg_id)
        if not plain and (plain is False or not self._is_plain(reg_id)):
            self._uc.reg_write(reg_id, value)
            return
        self._buffer.value = value & _U64
        status = _REG_WRITE(self._handle, reg_id, self._buffer_at)
        if status != UC_ERR_OK:
            raise UcError(status, reg_id)

    def read_many(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        """The values of ``ids`` (plain registers only) in one engine call."""
        batch = self._batches.get(ids)
        if batch is None:
            bad = [i for i in ids if not self._is_plain(i)]
            if bad:
                raise ValueError(f"register ids {bad} are not plain 64-bit registers")
            batch = self._batches[ids] = _Batch(ids)
        view = batch.view
        view[:] = batch.zeros
        status = _REG_READ_BATCH(self._handle, batch.ids_at, batch.pointers_at, batch.n)
        if status != UC_ERR_OK:
            raise UcError(status)
        return batch.unpack(view)

    def msr_read(self, index: int) -> int:
        msr = self._msr
        msr.rid, msr.value = index, 0
        status = _REG_READ(self._handle, _MSR, self._msr_at)
        if status != UC_ERR_OK:
            raise UcError(status, _MSR)
        return msr.value
