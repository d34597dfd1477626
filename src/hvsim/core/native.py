"""Python side of the native helper (``_native.c``): the control block and hook installation."""

from __future__ import annotations

import ctypes
import struct

from unicorn import x86_const
from unicorn.unicorn_const import (
    UC_CTL_IO_READ_WRITE, UC_CTL_IO_WRITE, UC_CTL_TB_REMOVE_CACHE, UC_CTL_TB_REQUEST_CACHE, UC_CTL_TLB_FLUSH,
    UC_CTL_TLB_TYPE, UC_ERR_OK, UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_EDGE_GENERATED, UC_HOOK_INSN, UC_HOOK_INTR,
    UC_HOOK_TLB_FILL, UC_TLB_CPU, UC_TLB_VIRTUAL,
)
from unicorn.unicorn_py3.unicorn import UcError, uclib

from . import _native
from .engine import set_access_exit_checks, sync_pc_flag

STOPPED_BY_REQUEST = _native.STOPPED_BY_REQUEST
STOPPED_BY_INSN_LIMIT = _native.STOPPED_BY_INSN_LIMIT
STOPPED_BY_DEADLINE = _native.STOPPED_BY_DEADLINE
STOPPED_BY_IF_WINDOW = _native.STOPPED_BY_IF_WINDOW
STOPPED_BY_BUDGET_NEAR = _native.STOPPED_BY_BUDGET_NEAR
STOPPED_BY_SMC = _native.STOPPED_BY_SMC
NO_DEADLINE = (1 << 64) - 1

for _name in ("EFLAGS", "RAX", "RCX", "RDX", "MSR", "CS", "RDI", "RSI", "CR0", "CR3", "CR4", "GDTR"):
    if getattr(_native, f"REG_{_name}") != getattr(x86_const, f"UC_X86_REG_{_name}"):  # pragma: no cover
        raise ImportError(f"hvsim native helper: register id {_name} differs from unicorn's; rebuild")
if _native.CTL_TB_REMOVE_CACHE_WRITE != UC_CTL_TB_REMOVE_CACHE | 2 << 26 | 1 << 30:  # pragma: no cover
    raise ImportError("hvsim native helper: UC_CTL_TB_REMOVE_CACHE differs from unicorn's; rebuild")
if _native.CTL_TB_REQUEST_CACHE_RW != UC_CTL_TB_REQUEST_CACHE | 2 << 26 | UC_CTL_IO_READ_WRITE << 30:  # pragma: no cover
    raise ImportError("hvsim native helper: UC_CTL_TB_REQUEST_CACHE differs from unicorn's; rebuild")
if (_native.CTL_TLB_FLUSH_WRITE != UC_CTL_TLB_FLUSH | UC_CTL_IO_WRITE << 30
        or _native.CTL_TLB_TYPE_WRITE != UC_CTL_TLB_TYPE | 1 << 26 | UC_CTL_IO_WRITE << 30):  # pragma: no cover
    raise ImportError("hvsim native helper: UC_CTL_TLB_FLUSH/UC_CTL_TLB_TYPE differ from unicorn's; rebuild")
VTLB_FAULT = _native.VTLB_FAULT
VTLB_HANDOVER = _native.VTLB_HANDOVER
VTLB_ON, VTLB_PAUSED = _native.VTLB_ON, _native.VTLB_PAUSED      # control.vtlb_on
VTLB_HANDOVER_REASONS = {1: "code at CPL 3", 2: "a user page under SMAP with RFLAGS.AC set",
                         3: "a paging mode it does not walk (protection keys, 5-level)",
                         4: "a page table outside RAM", 5: "invlpg (the guest manages its TLB itself)"}
HANDOVER_INVLPG = 5
MAX_RAM_RANGES = 8
TB_CACHE_ENTRIES = 1 << 16


class TbCount(ctypes.Structure):
    """Mirror of ``struct tb_count`` in _native.c: one translated block's instruction count."""

    _fields_ = [("pc", ctypes.c_uint64), ("size", ctypes.c_uint32), ("icount", ctypes.c_uint32)]


if ctypes.sizeof(TbCount) != _native.tb_count_size:  # pragma: no cover - build mismatch
    raise ImportError("hvsim native helper: tb_count layout differs from _native.c; rebuild")


class NativeControl(ctypes.Structure):
    """Mirror of ``struct hvsim_control`` in _native.c (the layout is checked at import)."""

    _fields_ = [
        ("stop_request", ctypes.c_int32),
        ("stopped_by", ctypes.c_int32),
        ("blocks", ctypes.c_uint64),
        ("insns", ctypes.c_uint64),
        ("insn_limit", ctypes.c_uint64),
        ("emu_stop", ctypes.c_void_p),
        ("reg_read", ctypes.c_void_p),
        ("reg_write", ctypes.c_void_p),
        ("deadline_blocks", ctypes.c_uint64),
        ("want_if", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("ns_per_block", ctypes.c_uint64),
        ("skipped_ns", ctypes.c_uint64),
        ("tsc_reads", ctypes.c_uint64),
        ("tsc_offset", ctypes.c_uint64),
        ("rep_fast", ctypes.c_int32),
        ("ram_count", ctypes.c_int32),
        ("ram", (ctypes.c_uint64 * 2) * MAX_RAM_RANGES),
        ("rep_chunks", ctypes.c_uint64),
        ("rep_elements", ctypes.c_uint64),
        ("mem_read", ctypes.c_void_p),
        ("mem_write", ctypes.c_void_p),
        ("ctl", ctypes.c_void_p),
        ("site_pc", ctypes.c_uint64 * 1024),
        ("site_kind", ctypes.c_uint8 * 1024),
        ("count_blocks", ctypes.c_int32),
        ("reserved2", ctypes.c_int32),
        ("cur_pc", ctypes.c_uint64),
        ("cur_size", ctypes.c_uint64),
        ("cur_icount", ctypes.c_uint64),
        ("tb_cache", ctypes.POINTER(TbCount)),
        ("tb_cache_mask", ctypes.c_uint64),
        ("tb_lookups", ctypes.c_uint64),
        ("smc_restarts", ctypes.c_uint64),
        ("vtlb_on", ctypes.c_int32),
        ("vtlb_event", ctypes.c_int32),
        ("vtlb_handover", ctypes.c_int32),
        ("vtlb_fetch", ctypes.c_int32),
        ("vtlb_probing", ctypes.c_int32),
        ("reserved3", ctypes.c_int32),
        ("vtlb_code", ctypes.c_void_p),
        ("vtlb_clean", ctypes.c_void_p),
        ("vtlb_pages", ctypes.c_uint64),
        ("vtlb_fills", ctypes.c_uint64),
        ("vtlb_faults", ctypes.c_uint64),
        ("vtlb_flushes", ctypes.c_uint64),
        ("vtlb_code_pages", ctypes.c_uint64),
        ("pc_was_set", ctypes.c_void_p),
        ("mem_regions", ctypes.c_void_p),
        ("uc_free", ctypes.c_void_p),
        ("memory_mapping", ctypes.c_void_p),
        ("ram_addr", ctypes.c_void_p),
        ("invalidate_phys", ctypes.c_void_p),
        ("code_forgets", ctypes.c_uint64),
        ("tsc_aux_at", ctypes.c_void_p),
    ]


if ctypes.sizeof(NativeControl) != _native.control_size:  # pragma: no cover - build mismatch
    raise ImportError("hvsim native helper: control block layout differs from _native.c; rebuild")

_EMU_STOP = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
_REG_READ = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value
_REG_WRITE = ctypes.cast(uclib.uc_reg_write, ctypes.c_void_p).value
_MEM_READ = ctypes.cast(uclib.uc_mem_read, ctypes.c_void_p).value
_MEM_WRITE = ctypes.cast(uclib.uc_mem_write, ctypes.c_void_p).value
_CTL = ctypes.cast(uclib.uc_ctl, ctypes.c_void_p).value
_MEM_REGIONS = ctypes.cast(uclib.uc_mem_regions, ctypes.c_void_p).value
_UC_FREE = ctypes.cast(uclib.uc_free, ctypes.c_void_p).value
# libunicorn's own functions behind UC_CTL_TB_REMOVE_CACHE, exported by its x86_64 build (_native.c,
# hvsim_forget_code): the control takes a linear address, these a guest-physical one.
_MEMORY_MAPPING = ctypes.cast(uclib.find_memory_mapping_x86_64, ctypes.c_void_p).value
_RAM_ADDR = ctypes.cast(uclib.memory_region_get_ram_addr_x86_64, ctypes.c_void_p).value
_INVALIDATE_PHYS = ctypes.cast(uclib.tb_invalidate_phys_range_x86_64, ctypes.c_void_p).value
_TRANSLATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p)(
    _native.translate)
# uc_ctl(uc, UC_CTL_WRITE(UC_CTL_TLB_FLUSH, 0)): the binding's ctl wrapper costs more than the flush
_CTL_NO_ARGS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)(_CTL)
_FORGET_CODE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)(
    _native.forget_code)


# --- where the engine keeps IA32_TSC_AUX -------------------------------------------------------------
#
# RDTSCP returns TSC_AUX in ECX; the native hook would read it with uc_reg_read (helper_rdmsr and its
# SVM intercept check) on every RDTSCP, millions in a Linux boot.  The engine keeps it in its CPU
# state (CPUX86State.tsc_aux, which uc_context_save copies from the start of the state): the field is
# found by writing two marks through the MSR and looking for the one qword that follows them in the
# context, then in the engine's heap reached from its uc_struct (only addresses /proc/self/maps shows
# readable are read).  It is used only when the whole state found there equals the context and a
# third mark written through the MSR shows up there and in no other copy; otherwise the hook reads
# the MSR as before.
_MSR_TSC_AUX = 0xC0000103
_AUX_MARKS = (0x5AD1_C0DE_0000_0001, 0x5AD1_C0DE_0000_0002, 0x5AD1_C0DE_0000_0003)
_UC_STRUCT_SCAN = 8192          # bytes of uc_struct whose qwords are tried as pointers
_HEAP_SCAN = 1 << 18            # bytes searched after each such pointer


def _readable_ranges() -> list[tuple[int, int]]:
    """The process's anonymous read-write mappings (the C heap among them): never a file's, where a
    read past the file's end would fault."""
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if fields[1].startswith("rw") and (len(fields) < 6 or fields[5] == "[heap]"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        return []
    return ranges


def _cpu_state(uc) -> bytes:
    """The engine's CPU state as uc_context_save copies it: the context after its header, whose
    first field (size_t context_size) is the state's size."""
    ctx = uc.context_save()
    raw = ctypes.string_at(ctx.context.value, ctx.size)
    size = struct.unpack_from("<Q", raw)[0]
    return raw[len(raw) - size:] if 0 < size <= len(raw) else b""


def _follows_writes(uc, address: int, readable: list[tuple[int, int]]) -> bool:
    """``address`` is readable and holds what the next two writes of TSC_AUX write."""
    if not any(start <= address and address + 8 <= end for start, end in readable):
        return False
    for mark in _AUX_MARKS[1:]:
        uc.msr_write(_MSR_TSC_AUX, mark)
        if ctypes.c_uint64.from_address(address).value != mark:
            return False
    return True


_aux_layout: list[tuple[int, int]] = []      # (qword of uc_struct, distance from its pointer): found once


def tsc_aux_address(uc) -> int | None:
    """The address of ``uc``'s CPUX86State.tsc_aux, or None when it cannot be found for sure."""
    original = uc.msr_read(_MSR_TSC_AUX)
    try:
        base, readable = uc._uch.value, _readable_ranges()
        if not any(start <= base and base + _UC_STRUCT_SCAN <= end for start, end in readable):
            return None
        words = struct.unpack(f"<{_UC_STRUCT_SCAN // 8}Q", ctypes.string_at(base, _UC_STRUCT_SCAN))
        for index, distance in _aux_layout:          # where it was in the first engine searched
            if _follows_writes(uc, words[index] + distance, readable):
                return words[index] + distance
        found = _search_tsc_aux(uc, words, readable)
        if found is None or not _follows_writes(uc, found, readable):
            return None
        pointers = [(found - word, index) for index, word in enumerate(words) if 0 <= found - word < _HEAP_SCAN]
        if pointers:
            distance, index = min(pointers)
            _aux_layout[:] = [(index, distance)]
        return found
    finally:
        uc.msr_write(_MSR_TSC_AUX, original)


def _search_tsc_aux(uc, words, readable) -> int | None:
    offsets = []
    for mark in _AUX_MARKS[:2]:
        uc.msr_write(_MSR_TSC_AUX, mark)
        raw = _cpu_state(uc)
        needle = struct.pack("<Q", mark)
        offsets.append([at for at in range(0, len(raw) - 7, 8) if raw[at:at + 8] == needle])
    if len(offsets[0]) != 1 or offsets[0] != offsets[1]:
        return None
    offset, state = offsets[0][0], _cpu_state(uc)

    def span(address: int) -> int:
        """Readable bytes from ``address`` (0: none)."""
        for start, end in readable:
            if start <= address < end:
                return end - address
        return 0

    mark = struct.pack("<Q", _AUX_MARKS[1])
    candidates = set()
    for pointer in set(words):
        size = min(span(pointer), _HEAP_SCAN) if pointer % 8 == 0 else 0
        if size < len(state):
            continue
        heap = ctypes.string_at(pointer, size)
        at = heap.find(mark)
        while at >= 0:
            start = at - offset
            if start >= 0 and heap[start:start + len(state)] == state:
                candidates.add(pointer + start + offset)
            at = heap.find(mark, at + 1)
    # copies of the state (the contexts saved above) match too; only the engine's own field
    # follows a new write
    uc.msr_write(_MSR_TSC_AUX, _AUX_MARKS[2])
    live = [address for address in candidates
            if span(address) >= 8 and ctypes.c_uint64.from_address(address).value == _AUX_MARKS[2]]
    return live[0] if len(live) == 1 else None


class Walker(ctypes.Structure):
    """Mirror of ``struct hvsim_walker`` in _native.c: what ``translate`` needs, the ranges of
    guest-physical memory its page-table reads may touch (``set_ranges``)."""

    _fields_ = [
        ("reg_read", ctypes.c_void_p),
        ("mem_read", ctypes.c_void_p),
        ("count", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("ranges", (ctypes.c_uint64 * 2) * _native.WALK_RANGES),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.reg_read, self.mem_read = _REG_READ, _MEM_READ
        self._at = ctypes.addressof(self)
        self._pa = ctypes.c_uint64()
        self._pa_at = ctypes.addressof(self._pa)

    def set_ranges(self, ranges: list[tuple[int, int]]) -> None:
        """``[start, end)`` ranges; more than fit leave the native walk off (``translate`` None)."""
        fits = len(ranges) <= _native.WALK_RANGES
        for i, (start, end) in enumerate(ranges if fits else ()):
            self.ranges[i][0], self.ranges[i][1] = start, end
        self.count = len(ranges) if fits else 0

    def translate(self, handle: int, vaddr: int) -> int | None:
        """The guest-physical address of ``vaddr`` through the live 4-level tables, or None when
        paging is not 4-level or the walk would fail (the caller walks again, for the error)."""
        if not self.count or _TRANSLATE(handle, self._at, vaddr, self._pa_at):
            return None
        return self._pa.value


if ctypes.sizeof(Walker) != _native.walker_size:  # pragma: no cover - build mismatch
    raise ImportError("hvsim native helper: walker layout differs from _native.c; rebuild")


class NativeHooks:
    """Installs the native hooks on one engine and owns their control block: the block hook
    (guest time, deadlines, the IF window, and ``rep stos``/``rep movs`` run a page at a time in
    ``ram``, the guest-physical RAM ranges), RDTSC/RDTSCP answered with guest time, and, when an
    instruction budget is asked for, the instruction counter (which turns the rep fast path off:
    it counts every iteration as the engine runs it).

    The budget counts a block's instructions when the block starts (``_native.c``, budget_block);
    a block left part-way by a CPU exception or intercept is corrected in ``_on_interrupt``, one left
    by a stop from a hook in ``settle_stop``, both by decoding the block up to where it stopped
    (``attach`` gives the machine's code reader).  The last part-block before the budget runs out
    is counted per instruction (``count_each_instruction``, which the run loop calls at
    STOPPED_BY_BUDGET_NEAR).  ``per_instruction=True`` counts the whole run per instruction (the
    reference the per-block count is tested against; ``PER_INSTRUCTION`` is its default)."""

    PER_INSTRUCTION = False

    def __init__(self, uc, *, insn_limit: int | None = None, ns_per_block: int = 10,
                 ram: list[tuple[int, int]] = (), rep_fast: bool = True, per_instruction: bool | None = None):
        self.control = NativeControl()
        self.control.emu_stop = _EMU_STOP
        self.control.reg_read = _REG_READ
        self.control.reg_write = _REG_WRITE
        self.control.mem_read = _MEM_READ
        self.control.mem_write = _MEM_WRITE
        self.control.ctl = _CTL
        self.control.mem_regions = _MEM_REGIONS
        self.control.uc_free = _UC_FREE
        self.control.memory_mapping = _MEMORY_MAPPING
        self.control.ram_addr = _RAM_ADDR
        self.control.invalidate_phys = _INVALIDATE_PHYS
        if len(ram) > MAX_RAM_RANGES:
            raise ValueError(f"at most {MAX_RAM_RANGES} RAM ranges for the rep fast path, got {len(ram)}")
        for i, (start, size) in enumerate(ram):
            self.control.ram[i][0], self.control.ram[i][1] = start, start + size
        self.control.ram_count = len(ram)
        self.ram = list(ram)
        self.control.rep_fast = int(rep_fast and insn_limit is None and bool(ram))
        self.control.deadline_blocks = NO_DEADLINE
        self.control.ns_per_block = ns_per_block
        self._uc = uc
        self._handle = uc._uch.value
        self._control_at = ctypes.addressof(self.control)
        # hvsim's stops happen at block starts (this hook): the engine's check after every guest
        # memory access is not needed, and costs a third of store-heavy code (engine.py)
        self.access_exit_checks = not set_access_exit_checks(uc, False)
        self._zero = ctypes.c_uint8(0)      # stands in for the engine's flag when it cannot be found
        self.control.pc_was_set = sync_pc_flag(uc) or ctypes.addressof(self._zero)
        self._add(UC_HOOK_BLOCK, _native.block_hook)
        self._add(UC_HOOK_INSN, _native.rdtsc_hook, x86_const.UC_X86_INS_RDTSC)
        self.control.tsc_aux_at = tsc_aux_address(uc)
        self._add(UC_HOOK_INSN, _native.rdtscp_hook, x86_const.UC_X86_INS_RDTSCP)
        self._per_instruction = False
        self._code = None
        if insn_limit is not None:
            self.control.insn_limit = insn_limit
            if self.PER_INSTRUCTION if per_instruction is None else per_instruction:
                self.count_each_instruction()
            else:
                self._tb_cache = (TbCount * TB_CACHE_ENTRIES)()
                self.control.tb_cache = self._tb_cache
                self.control.tb_cache_mask = TB_CACHE_ENTRIES - 1
                self.control.count_blocks = 1
                self._add(UC_HOOK_EDGE_GENERATED, _native.tb_hook)
                # before the trap dispatcher's, which moves RIP to the handler
                uc.hook_add(UC_HOOK_INTR, self._on_interrupt)

    def add_ram(self, start: int, size: int) -> None:
        """Let the native page walker and rep fast path read ``[start, start+size)`` too: host RAM
        outside the guest's memory map (a hypervisor's own frames, ``Machine.add_private_memory``),
        where a guest's page tables may live.  Its pages are not tracked as code (the bitmaps cover
        the guest's RAM only)."""
        c = self.control
        if c.ram_count >= MAX_RAM_RANGES:
            raise ValueError(f"at most {MAX_RAM_RANGES} RAM ranges for the native walker")
        c.ram[c.ram_count][0], c.ram[c.ram_count][1] = start, start + size
        c.ram_count += 1

    def enable_virtual_tlb(self) -> None:
        """Fill the engine's TLB with the native walker (``_native.c``, vtlb_fill), which withholds
        exec from pages never fetched so that stores to identity-mapped data stay on the engine's
        fast path.  Call after guest mode is entered; ``invlpg`` must be intercepted (the engine's
        entries do not remember large pages).  Refused fills come back as UC_ERR_EXCEPTION from
        ``emu_start`` with ``control.vtlb_event`` saying why (VTLB_FAULT: the engine's walker is
        in charge until ``resume_virtual_tlb``; VTLB_HANDOVER: for good)."""
        end = max((start + size for start, size in self.ram), default=0)
        pages = (end + 0xFFF) >> 12
        self._vtlb_code = (ctypes.c_uint8 * pages)()
        self._vtlb_clean = (ctypes.c_uint8 * pages)()
        c = self.control
        c.vtlb_code = ctypes.addressof(self._vtlb_code)
        c.vtlb_clean = ctypes.addressof(self._vtlb_clean)
        c.vtlb_pages = pages
        c.vtlb_on = VTLB_ON
        self._add(UC_HOOK_TLB_FILL, _native.tlb_fill_hook)
        self._uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self._uc._Uc__ctl_w(UC_CTL_TLB_FLUSH)

    def resume_virtual_tlb(self) -> None:
        """After a fault the native walker left to the engine's (VTLB_FAULT): drop the code the
        engine translated meanwhile, whose pages the native walker has not seen fetched, and fill
        the TLB natively again."""
        if self.control.vtlb_on != VTLB_PAUSED:
            return
        self.control.vtlb_on = VTLB_ON
        self._uc.ctl_flush_tb()
        self._uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self._uc._Uc__ctl_w(UC_CTL_TLB_FLUSH)

    def hand_over(self, why: int) -> None:
        """Leave the TLB to the engine's own walker for the rest of the run (``why``: a key of
        VTLB_HANDOVER_REASONS); its entries stay, they are the guest's translations too."""
        if self.control.vtlb_on:
            self.control.vtlb_on = 0
            self.control.vtlb_handover = why
            self._uc.ctl_set_tlb_mode(UC_TLB_CPU)

    @property
    def virtual_tlb(self) -> bool:
        """True while the native walker fills the TLB (False before it is enabled and after it
        handed over to the engine's own walker)."""
        return bool(self.control.vtlb_on)

    def handover_reason(self) -> str | None:
        why = self.control.vtlb_handover
        return VTLB_HANDOVER_REASONS.get(why, f"reason {why}") if why else None

    def block_entered_again(self, rip: int) -> None:
        """The engine left the block it entered last at ``rip`` without running the instruction
        there (a TLB fill refused) and enters a block at ``rip`` next: count the block once, and
        charge only its instructions before ``rip`` (the block at ``rip`` charges the rest)."""
        self.control.blocks -= 1
        if self._per_instruction:
            self.control.insns -= 1          # the instruction hook counted it, and will again
        elif self._code is not None and self.control.count_blocks:
            self.charge_upto(self._code[0](rip), inclusive=False)

    def attach(self, code_address, read, bits) -> None:
        """How to decode guest code for the budget: ``code_address(rip)`` (linear address),
        ``read(linear, size)`` (bytes), ``bits()`` (16, 32 or 64: the code segment's size)."""
        self._code = (code_address, read, bits)

    def count_each_instruction(self) -> None:
        """From here on count per instruction (exact at any point, ~15x slower): the translated
        code is dropped so that every block is translated again with the instruction hook."""
        if self._per_instruction:
            return
        self._per_instruction = True
        self.control.count_blocks = 0
        # the instruction hook stops before an instruction through the exit check after it
        self.access_exit_checks = self.access_exit_checks or set_access_exit_checks(self._uc, True)
        self._add(UC_HOOK_CODE, _native.insn_hook)
        self._uc.ctl_flush_tb()

    def charge_upto(self, end: int, inclusive: bool) -> None:
        """The block charged last stopped at linear address ``end``: charge only its instructions
        that start before ``end`` (or at it, when ``inclusive``: the instruction there was begun,
        as a fault's is).  Nothing changes when ``end`` is not inside the block."""
        c = self.control
        if not c.count_blocks or self._code is None:
            return
        start, size = c.cur_pc, c.cur_size
        if not (start <= end < start + size if inclusive else start < end < start + size):
            return
        from .disasm import disassemble_one   # capstone, only on this rare path
        _, read, bits = self._code
        code, mode, at, n = read(start, size), bits(), 0, 0
        while at < size and (at <= end - start if inclusive else at < end - start):
            _, length = disassemble_one(code[at:], start + at, mode)
            if not length:
                break
            at += length
            n += 1
        c.insns -= c.cur_icount - n
        c.cur_icount = n

    def settle_stop(self, rip: int) -> None:
        """The engine stopped with RIP at ``rip``: the instructions from there to the end of the
        block did not run."""
        if self._code is not None and self.control.count_blocks:
            self.charge_upto(self._code[0](rip), inclusive=False)

    def smc_restarted(self, rip: int) -> None:
        """The block charged last was left at ``rip`` by a store into its own code, which the engine
        abandoned (it runs the store again, in a block of its own, on resume) and which the native
        hook could not settle (STOPPED_BY_SMC): charge the block up to and including the store, as
        the per-instruction count does."""
        if self._code is not None:
            self.charge_upto(self._code[0](rip), inclusive=True)

    def _on_interrupt(self, uc, intno, user_data) -> None:
        if self._code is not None and self.control.count_blocks:
            self.charge_upto(self._code[0](uc.reg_read(x86_const.UC_X86_REG_RIP)), inclusive=True)

    def _add(self, hook_type: int, function_address: int, *insn: int) -> None:
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            self._uc._uch, ctypes.byref(handle), hook_type,
            ctypes.c_void_p(function_address),
            ctypes.cast(ctypes.byref(self.control), ctypes.c_void_p),
            ctypes.c_uint64(1), ctypes.c_uint64(0), *(ctypes.c_int(i) for i in insn),
        )
        if status != UC_ERR_OK:
            raise UcError(status)

    def forget_code(self, start: int, end: int) -> None:
        """Drop the engine's translations of code in guest-physical ``[start, end)``, through
        whatever linear address it was fetched (``_native.c``, hvsim_forget_code): after a host
        write there, the guest runs what is in memory now."""
        if _FORGET_CODE(self._handle, self._control_at, start, end):  # pragma: no cover - out of memory
            raise UcError(1)

    def flush_tlb(self) -> None:
        """Drop the engine's TLB (``UC_CTL_TLB_FLUSH``)."""
        status = _CTL_NO_ARGS(self._handle, _native.CTL_TLB_FLUSH_WRITE)
        if status:  # pragma: no cover - the engine refuses the control only when closed
            raise UcError(status)

    def request_stop(self) -> None:
        """Thread- and signal-safe: the run stops at the next block start."""
        self.control.stop_request = 1

    def rearm(self) -> None:
        self.control.stop_request = 0
        self.control.stopped_by = 0


class CoverageSet(ctypes.Structure):
    """Mirror of ``struct hvsim_coverage`` in _native.c: the block addresses a coverage hook saw."""

    _fields_ = [
        ("slots", ctypes.POINTER(ctypes.c_uint64)),
        ("capacity", ctypes.c_uint64),
        ("count", ctypes.c_uint64),
        ("has_zero", ctypes.c_int32),
        ("failed", ctypes.c_int32),
    ]


if ctypes.sizeof(CoverageSet) != _native.coverage_size:  # pragma: no cover - build mismatch
    raise ImportError("hvsim native helper: coverage set layout differs from _native.c; rebuild")

_COVERAGE_FREE = ctypes.CFUNCTYPE(None, ctypes.POINTER(CoverageSet))(_native.coverage_free)


class NativeCoverage:
    """A native ``UC_HOOK_BLOCK`` recording every executed block's start address (one hash-set
    probe per block, no Python); ``addresses()`` reads the set once, after the run."""

    def __init__(self, uc):
        self.blocks = CoverageSet()
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            uc._uch, ctypes.byref(handle), UC_HOOK_BLOCK, ctypes.c_void_p(_native.coverage_hook),
            ctypes.cast(ctypes.byref(self.blocks), ctypes.c_void_p), ctypes.c_uint64(1), ctypes.c_uint64(0),
        )
        if status != UC_ERR_OK:
            raise UcError(status)
        self._uc = uc   # the hook lives as long as the engine; keep the set alive with it

    @property
    def complete(self) -> bool:
        return not self.blocks.failed

    def addresses(self) -> list[int]:
        b = self.blocks
        found = []
        if b.capacity:
            table = (ctypes.c_uint64 * b.capacity).from_address(ctypes.addressof(b.slots.contents))
            found = [address for address in memoryview(table).cast("B").cast("Q") if address]
        return sorted(found + ([0] if b.has_zero else []))

    def __del__(self):
        _COVERAGE_FREE(ctypes.byref(self.blocks))
