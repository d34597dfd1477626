"""Guest memory: the one bounds-checked accessor for guest-physical memory, and guest-virtual reads.

Every read or write a plugin makes on guest memory goes through ``GuestMemory`` (physical) or
``VirtualMemory`` (through the guest's live page tables).  An access that leaves host-backed memory
raises ``GuestMemoryError``, which plugins turn into a guest-visible error (``-EFAULT``,
``EFI_INVALID_PARAMETER``) and the core into a recorded fault: never a host crash.
"""

from __future__ import annotations

import bisect
import ctypes
import struct
from typing import TYPE_CHECKING, Callable

from unicorn import UcError
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
)

from .cpu import MSR_EFER
from .errors import GuestMemoryError
from .native import Walker
from .registers import RegisterFile

if TYPE_CHECKING:
    from unicorn import Uc

PAGE_SIZE = 0x1000
_ADDR_MASK = 0x000F_FFFF_FFFF_F000
# 4-level paging translates 48-bit linear addresses; bits 63:47 must all equal bit 47 (canonical),
# else the access is #GP(0) (SDM vol. 1 §3.3.7.1).  5-level paging (CR4.LA57) is not modelled.
LINEAR_ADDRESS_BITS = 48
_PAGING_REGISTERS = (UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4)
# uc_mem_read without the binding's argument conversion and bytearray copy; reads up to a page go
# through one buffer allocated per accessor.
_MEM_READ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t)(
    ctypes.cast(uclib.uc_mem_read, ctypes.c_void_p).value)
# uc_mem_write the same way, from a bytes object (ctypes passes its buffer as the pointer)
_MEM_WRITE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t)(
    ctypes.cast(uclib.uc_mem_write, ctypes.c_void_p).value)
_SCRATCH = PAGE_SIZE


class GuestMemory:
    """Bounds-checked guest-physical memory over the engine's mapped regions."""

    def __init__(self, uc: "Uc", regions: list[tuple[int, int]]):
        self._uc = uc
        self._handle = uc._uch.value
        self._scratch = ctypes.create_string_buffer(_SCRATCH)
        self._scratch_at = ctypes.addressof(self._scratch)
        self._scratch_view = memoryview(self._scratch).cast("B")
        self._word = ctypes.c_uint64()
        self._word_at = ctypes.addressof(self._word)
        self.walker = Walker()          # the native page walk (VirtualMemory.translate) reads only these
        self._set_regions(sorted(regions))
        # Called as ``after_write(address, size)`` after every write: the machine drops the
        # engine's translations of code in the range (the engine does not see host stores).
        self.after_write: Callable[[int, int], None] | None = None

    def add_region(self, start: int, size: int) -> None:
        """Make an engine-mapped range (``Machine.add_private_memory``) reachable through this accessor."""
        self._set_regions(sorted(self._regions + [(start, size)]))

    def remove_region(self, start: int, size: int) -> None:
        """Take ``[start, start+size)`` out of this accessor (the engine maps a device there instead)."""
        end, kept = start + size, []
        for s, n in self._regions:
            if s < end and start < s + n:
                kept += [(a, b - a) for a, b in ((s, start), (end, s + n)) if b > a]
            else:
                kept.append((s, n))
        self._set_regions(sorted(kept))

    def _set_regions(self, regions: list[tuple[int, int]]) -> None:
        self._regions = regions
        self._starts = [s for s, _ in regions]
        self._ends = [s + n for s, n in regions]
        self.walker.set_ranges(list(zip(self._starts, self._ends)))

    @property
    def regions(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._regions)

    def contains(self, address: int, size: int = 1) -> bool:
        if address < 0 or size < 0:
            return False
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return False
        start, length = self._regions[i]
        return address + size <= start + length

    def check(self, address: int, size: int) -> None:
        if not self.contains(address, size):
            raise GuestMemoryError(address, size)

    def read(self, address: int, size: int) -> bytes:
        # ``check`` inline: this is on every trap's path (the instruction bytes)
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0 or address < 0 or size < 0 or address + size > self._ends[i]:
            raise GuestMemoryError(address, size)
        if size == 0:
            return b""
        if size > _SCRATCH:
            return bytes(self._uc.mem_read(address, size))
        status = _MEM_READ(self._handle, address, self._scratch_at, size)
        if status:
            raise UcError(status)
        return self._scratch_view[:size].tobytes()

    def write(self, address: int, data: bytes) -> None:
        size = len(data)
        i = bisect.bisect_right(self._starts, address) - 1      # ``check`` inline (page-table updates)
        if i < 0 or address < 0 or address + size > self._ends[i]:
            raise GuestMemoryError(address, size)
        if size:
            status = _MEM_WRITE(self._handle, address, bytes(data), size)
            if status:
                raise UcError(status)
            if self.after_write is not None:
                self.after_write(address, size)

    def fill(self, address: int, size: int, byte: int = 0) -> None:
        self.check(address, size)
        chunk = bytes([byte]) * min(size, 1 << 20)
        done = 0
        while done < size:
            n = min(len(chunk), size - done)
            self._uc.mem_write(address + done, chunk[:n])
            done += n
        if size and self.after_write is not None:
            self.after_write(address, size)

    def read_u8(self, address: int) -> int:
        return self._read_word(address, 1) & 0xFF

    def read_u16(self, address: int) -> int:
        return self._read_word(address, 2) & 0xFFFF

    def read_u32(self, address: int) -> int:
        return self._read_word(address, 4) & 0xFFFF_FFFF

    def read_u64(self, address: int) -> int:
        return self._read_word(address, 8)

    def _read_word(self, address: int, size: int) -> int:
        """``size`` bytes (at most 8) as a little-endian integer, with bytes above them left over
        from the last read (the callers mask them): straight into one 8-byte buffer, no bytes
        object in between (page-table walks, event-channel bits)."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0 or address < 0 or address + size > self._ends[i]:
            raise GuestMemoryError(address, size)
        status = _MEM_READ(self._handle, address, self._word_at, size)
        if status:
            raise UcError(status)
        return self._word.value

    def write_u8(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<B", value & 0xFF))

    def write_u16(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<H", value & 0xFFFF))

    def write_u32(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<I", value & 0xFFFF_FFFF))

    def write_u64(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<Q", value & 0xFFFF_FFFF_FFFF_FFFF))

    def read_cstring(self, address: int, limit: int = 4096) -> bytes:
        """Bytes up to (not including) the first NUL, reading at most ``limit`` bytes."""
        out = bytearray()
        while len(out) < limit:
            n = min(256, limit - len(out), PAGE_SIZE - (address + len(out)) % PAGE_SIZE)
            chunk = self.read(address + len(out), n)
            nul = chunk.find(b"\0")
            if nul >= 0:
                return bytes(out + chunk[:nul])
            out += chunk
        return bytes(out)

    def read_struct(self, record_type, address: int):
        return record_type.unpack(self.read(address, record_type.SIZE))

    def write_struct(self, address: int, record) -> None:
        self.write(address, record.pack())


def is_canonical(vaddr: int) -> bool:
    """``vaddr`` (an unsigned 64-bit value) has bits 63:47 all equal."""
    top = (vaddr & 0xFFFF_FFFF_FFFF_FFFF) >> (LINEAR_ADDRESS_BITS - 1)
    return top == 0 or top == (1 << (65 - LINEAR_ADDRESS_BITS)) - 1


class VirtualMemory:
    """Guest-virtual access through the page tables the guest has live now (CR0/CR3/CR4/EFER).

    Handles paging off, 2-level 32-bit (4 MiB pages with PSE), 3-level PAE and 4-level long mode with
    2 MiB and 1 GiB pages.  A non-present entry raises ``GuestMemoryError`` naming the virtual address,
    and so does, in long mode, a non-canonical address (the CPU's #GP(0)): its upper bits are never
    dropped, so it cannot alias low memory.  Permissions (R/W, U/S, NX) are not checked.
    """

    def __init__(self, uc: "Uc", physical: GuestMemory):
        self._uc = uc
        self._handle = uc._uch.value
        self._regs = RegisterFile(uc)
        self._phys = physical

    def translate(self, vaddr: int) -> int:
        pa = self._phys.walker.translate(self._handle, vaddr)      # 4-level paging, no fault: natively
        if pa is not None:
            return pa
        try:
            cr0, cr3, cr4 = self._regs.read_many(_PAGING_REGISTERS)
            efer = self._regs.msr_read(MSR_EFER)
        except UcError as exc:  # pragma: no cover - engine refuses register reads only when closed
            raise GuestMemoryError(vaddr, 1, f"cannot read paging registers: {exc}") from None
        if not cr0 & (1 << 31):
            return vaddr & 0xFFFF_FFFF if not efer & (1 << 10) else vaddr
        if efer & (1 << 10):                      # long mode: 4-level
            if not is_canonical(vaddr):
                raise GuestMemoryError(vaddr, 1, "non-canonical address (#GP in long mode)")
            return self._walk4(vaddr, cr3 & _ADDR_MASK)
        if cr4 & (1 << 5):                        # PAE: PDPT of 4 entries
            vaddr &= 0xFFFF_FFFF
            pdpte = self._read_entry((cr3 & 0xFFFF_FFE0) + ((vaddr >> 30) & 3) * 8, vaddr, 8)
            return self._walk(vaddr, pdpte & _ADDR_MASK, ((21, 8), (12, 8)), (21,))
        vaddr &= 0xFFFF_FFFF                      # 2-level, 4-byte entries
        pde = self._read_entry((cr3 & 0xFFFF_F000) + (vaddr >> 22) * 4, vaddr, 4)
        if pde & 0x80 and cr4 & 0x10:
            return (pde & 0xFFC0_0000) | (vaddr & 0x3F_FFFF)
        pte = self._read_entry((pde & 0xFFFF_F000) + ((vaddr >> 12) & 0x3FF) * 4, vaddr, 4)
        return (pte & 0xFFFF_F000) | (vaddr & 0xFFF)

    def translate_extent(self, vaddr: int) -> tuple[int, int]:
        """``translate`` and the bytes from ``vaddr`` to the end of its translation's page (a 4 KiB,
        2 MiB or 1 GiB page, or the rest of a 4 KiB page when paging is off or not 4-level)."""
        pa = self.translate(vaddr)
        regs = self._regs
        if regs.read(UC_X86_REG_CR0) & (1 << 31) and regs.msr_read(MSR_EFER) & (1 << 10):
            found = self._leaf(vaddr)
            if found is not None and found[0] == pa:
                return pa, found[1]
        return pa, PAGE_SIZE - vaddr % PAGE_SIZE

    def _leaf(self, vaddr: int) -> tuple[int, int] | None:
        """Long mode: where ``vaddr`` translates, as (physical address, bytes left in its page: 4 KiB,
        2 MiB or 1 GiB), or None when the walk ends at a non-present entry or outside RAM."""
        cr3 = self._regs.read(UC_X86_REG_CR3)
        table = cr3 & _ADDR_MASK
        for shift in (39, 30, 21, 12):
            try:
                entry = self._phys.read_u64(table + ((vaddr >> shift) & 0x1FF) * 8)
            except GuestMemoryError:
                return None
            if not entry & 1:
                return None
            if shift == 12 or (shift in (30, 21) and entry & 0x80):
                break
            table = entry & _ADDR_MASK
        mask = (1 << shift) - 1
        return (entry & _ADDR_MASK & ~mask) | (vaddr & mask), (1 << shift) - (vaddr & mask)

    def _read_entry(self, paddr: int, vaddr: int, size: int) -> int:
        try:
            entry = self._phys.read_u64(paddr) if size == 8 else self._phys.read_u32(paddr)
        except GuestMemoryError:
            raise GuestMemoryError(vaddr, 1, f"page-table entry at {paddr:#x} is outside guest RAM") from None
        if not entry & 1:
            raise GuestMemoryError(vaddr, 1, "not mapped in the guest page tables")
        return entry

    def _walk4(self, vaddr: int, table: int) -> int:
        """``_walk`` for 4-level paging, its reads inline (every hypercall argument comes this way):
        the same entries read, the same errors."""
        phys = self._phys
        starts, ends, handle, word, word_at = phys._starts, phys._ends, phys._handle, phys._word, phys._word_at
        for shift in (39, 30, 21, 12):
            at = table + ((vaddr >> shift) & 0x1FF) * 8
            i = bisect.bisect_right(starts, at) - 1
            if i < 0 or at + 8 > ends[i]:
                raise GuestMemoryError(vaddr, 1, f"page-table entry at {at:#x} is outside guest RAM")
            status = _MEM_READ(handle, at, word_at, 8)
            if status:
                raise UcError(status)
            entry = word.value
            if not entry & 1:
                raise GuestMemoryError(vaddr, 1, "not mapped in the guest page tables")
            if entry & 0x80 and shift in (30, 21):
                mask = (1 << shift) - 1
                return (entry & _ADDR_MASK & ~mask) | (vaddr & mask)
            table = entry & _ADDR_MASK
        return table | (vaddr & 0xFFF)

    def _walk(self, vaddr: int, table: int, levels, large_shifts) -> int:
        for shift, _ in levels:
            entry = self._read_entry(table + ((vaddr >> shift) & 0x1FF) * 8, vaddr, 8)
            if shift in large_shifts and entry & 0x80:
                mask = (1 << shift) - 1
                return (entry & _ADDR_MASK & ~mask) | (vaddr & mask)
            table = entry & _ADDR_MASK
        return table | (vaddr & 0xFFF)

    def read(self, vaddr: int, size: int) -> bytes:
        if 0 < size <= PAGE_SIZE - vaddr % PAGE_SIZE and 0 <= vaddr <= 0xFFFF_FFFF_FFFF_FFFF:   # one page
            return self._phys.read(self.translate(vaddr), size)
        out = bytearray()
        while len(out) < size:
            va = (vaddr + len(out)) & 0xFFFF_FFFF_FFFF_FFFF
            n = min(size - len(out), PAGE_SIZE - va % PAGE_SIZE)
            out += self._phys.read(self.translate(va), n)
        return bytes(out)

    def write(self, vaddr: int, data: bytes) -> None:
        done = 0
        # translate every page first so a fault leaves memory untouched
        pieces = []
        while done < len(data):
            va = (vaddr + done) & 0xFFFF_FFFF_FFFF_FFFF
            n = min(len(data) - done, PAGE_SIZE - va % PAGE_SIZE)
            pieces.append((self.translate(va), data[done:done + n]))
            done += n
        for paddr, piece in pieces:
            self._phys.write(paddr, piece)
