"""Engine-internal CPU fields the unicorn 2.1.4 API does not expose, found by calibration.

Unicorn never delivers exceptions through the guest IDT, so hvsim does (exceptions.py).  Hidden
fields of QEMU's CPUX86State matter for that: ``error_code`` (the #PF/#GP error code) and
``old_exception`` (which QEMU resets only in its own delivery path; left stale, the next #PF becomes a
#DF); and, for privilege changes and interrupt injection, ``hflags`` (CPL, the STI/MOV-SS interrupt
shadow) and the segment caches of CS and SS (``uc_reg_write`` of CS/SS is privilege-checked against
the current CPL, so ring 3 -> ring 0 cannot be done through the register API).  Their offsets inside
the ``uc_context`` blob depend on the build, so they are found at start-up by running a scratch engine
through known faults and instructions and diffing its contexts.  A unicorn whose layout defeats the
calibration makes ``calibrate`` raise, so a changed engine fails loudly, not silently.

The CPUX86State fields used, from qemu/target/i386/cpu.h of unicorn 2.1.4 (``struct CPUX86State``
and ``cpu_x86_load_seg_cache``)::

    target_ulong regs[16];        R + 0       (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15)
    target_ulong eip;             R + 128
    target_ulong eflags, cc_dst, cc_src, cc_src2;  uint32_t cc_op; int32_t df;
    uint32_t hflags;              R + 176     HF_CPL bits 0-1, HF_INHIBIT_IRQ bit 3, HF_CS32 4,
                                              HF_SS32 5, HF_ADDSEG 6, HF_PE 7, HF_LMA 14, HF_CS64 15
    uint32_t hflags2;
    SegmentCache segs[6];         R + 184     ES, CS, SS, DS, FS, GS (R_ES=0 ... R_GS=5)
        SegmentCache = { uint32_t selector; target_ulong base; uint32_t limit; uint32_t flags; }
                       (24 bytes: selector +0, base +8, limit +16, flags +20; ``flags`` is the
                        descriptor's high dword as loaded, DPL in bits 13-14, B bit 22, L bit 21)

R (the offset of ``regs``) is found from magic register values; hflags and the segment caches are
then checked against what the engine reports (CPL 0, PE/LMA/CS64 set in the scratch engine, the
FS/GS bases, the STI and MOV-SS shadows), never trusted blind.
"""

from __future__ import annotations

import ctypes
import functools
import struct

import attrs
from unicorn import UC_HOOK_INTR, Uc
from unicorn import x86_const
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_RIP,
    UC_X86_REG_RSP,
)

from unicorn.unicorn_py3.unicorn import UcError, uclib

from .engine import new_engine

# hflags bits, qemu/target/i386/cpu.h (HF_*_SHIFT) of unicorn 2.1.4.
HF_CPL_MASK = 3
HF_INHIBIT_IRQ = 1 << 3
HF_CS32 = 1 << 4
HF_SS32 = 1 << 5
HF_ADDSEG = 1 << 6
HF_PE = 1 << 7
HF_LMA = 1 << 14
HF_CS64 = 1 << 15
HF_IOBPT = 1 << 24      # blocks call helper_bpt_io after each in/out/ins/outs (traps.py port policy)
# SegmentCache.flags bits (the descriptor high dword), cpu.h DESC_*.
DESC_B = 1 << 22
DESC_L = 1 << 21
DESC_DPL_SHIFT = 13
# Segment register indices in CPUX86State.segs (cpu.h R_ES .. R_GS).
R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)
# Offsets relative to regs[0] (struct CPUX86State layout above); checked by calibrate().
EIP_FROM_REGS = 128
HFLAGS_FROM_REGS = 176
SEGS_FROM_REGS = 184
SEGMENT_CACHE_SIZE = 24
EFLAGS_VM = 1 << 17
CR0_PE = 1 << 0
CR4_OSXSAVE = 1 << 18
MSR_FS_BASE, MSR_GS_BASE = 0xC000_0100, 0xC000_0101
# uc_context_save into an existing context (what the binding's context_update calls), unprototyped.
_CONTEXT_SAVE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
    ctypes.cast(uclib.uc_context_save, ctypes.c_void_p).value)
_GPRS = ("RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", *(f"R{i}" for i in range(8, 16)))


@attrs.frozen
class ContextOffsets:
    old_exception: int
    error_code: int
    exception_is_int: int
    regs: int = -1            # CPUX86State.regs[0]
    hflags: int = -1
    segs: int = -1            # CPUX86State.segs[0]


@attrs.frozen
class SegmentCache:
    """One QEMU segment cache: the selector and the hidden part the CPU loaded with it."""

    selector: int
    base: int
    limit: int
    flags: int                # descriptor high dword: type bits 8-11, S 12, DPL 13-14, P 15, L 21, B 22, G 23

    @property
    def dpl(self) -> int:
        return (self.flags >> DESC_DPL_SHIFT) & 3


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
    regs, hflags, segs = _calibrate_cpu_state()
    return ContextOffsets(offsets_old[0], error_code, exception_is_int, regs, hflags, segs)


def _calibrate_cpu_state() -> tuple[int, int, int]:
    """Find regs[0], hflags and segs[0] in the blob and check them against the engine's view."""
    uc = new_engine()
    uc.mem_map(0, 0x10000)
    # sti; nop; mov %eax,%ss (null SS is legal at CPL0 in 64-bit mode); nop; hlt
    uc.mem_write(_ENTRY, bytes.fromhex("fb 90 8ed0 90 f4"))
    magic = [0x5A5A_0000_0000_0011 | i << 8 for i in range(16)]
    for name, value in zip(_GPRS, magic):
        uc.reg_write(getattr(x86_const, f"UC_X86_REG_{name}"), value)
    uc.msr_write(MSR_FS_BASE, 0x0F5_0000_1000)
    uc.msr_write(MSR_GS_BASE, 0x0A5_0000_2000)
    uc.reg_write(UC_X86_REG_RIP, _ENTRY)
    blob = _blob(uc)
    regs = [o for o in range(0, len(blob) - 128, 8)
            if all(struct.unpack_from("<Q", blob, o + 8 * i)[0] == v for i, v in enumerate(magic))]
    if len(regs) != 1:
        raise RuntimeError(f"unicorn context calibration: regs candidates {regs}")
    r = regs[0]
    hflags, segs = r + HFLAGS_FROM_REGS, r + SEGS_FROM_REGS

    def check(what: str, ok: bool) -> None:
        if not ok:
            raise RuntimeError(f"unicorn context calibration: {what} does not match the 2.1.4 CPUX86State layout")

    check("eip", struct.unpack_from("<Q", blob, r + EIP_FROM_REGS)[0] == _ENTRY)
    hf = struct.unpack_from("<I", blob, hflags)[0]
    check("hflags", hf & (HF_CPL_MASK | HF_PE | HF_LMA | HF_CS64 | HF_INHIBIT_IRQ) == HF_PE | HF_LMA | HF_CS64)
    for reg, base in ((R_FS, 0x0F5_0000_1000), (R_GS, 0x0A5_0000_2000)):
        check(f"segs[{reg}].base", struct.unpack_from("<Q", blob, segs + SEGMENT_CACHE_SIZE * reg + 8)[0] == base)
    # The interrupt shadow: set by sti and by mov to SS, gone one instruction later.
    uc.reg_write(UC_X86_REG_RSP, 0x8000)
    uc.reg_write(x86_const.UC_X86_REG_RAX, 0)           # the selector mov %eax,%ss loads
    shadows = []
    rip = _ENTRY
    for _ in range(4):
        uc.emu_start(rip, 0, count=1)
        rip = uc.reg_read(UC_X86_REG_RIP)
        shadows.append(bool(struct.unpack_from("<I", _blob(uc), hflags)[0] & HF_INHIBIT_IRQ))
    check("hflags.INHIBIT_IRQ", shadows == [True, False, True, False])
    # A segment cache written in the blob is what the register API then reports.
    state = EngineState(uc, ContextOffsets(-1, -1, -1, r, hflags, segs))
    state.load_segments(cs=SegmentCache(0x33, 0, 0xFFFF_FFFF, 0x00AF_FB00),
                        ss=SegmentCache(0x2B, 0, 0xFFFF_FFFF, 0x00CF_F300), cpl=3)
    check("segs[CS]/segs[SS]", (uc.reg_read(x86_const.UC_X86_REG_CS), uc.reg_read(x86_const.UC_X86_REG_SS)) == (0x33, 0x2B))
    check("hflags.CPL", state.cpl() == 3)
    return r, hflags, segs


@functools.lru_cache(maxsize=1)
def xcr0_offset() -> int | None:
    """The offset of XCR0 (CPUX86State.xcr0, which the register API does not reach) in the context:
    the one 8-byte field that follows ``xsetbv`` on a scratch engine through 3, 1 and 3 again
    (RAX, which holds each value too, excluded).  None when it is not found."""
    uc = new_engine()
    uc.mem_map(0, 0x10000)
    uc.mem_write(_ENTRY, bytes.fromhex("0f01d1 f4"))            # xsetbv; hlt
    uc.reg_write(UC_X86_REG_CR4, uc.reg_read(UC_X86_REG_CR4) | CR4_OSXSAVE)
    candidates: set[int] | None = None
    for value in (3, 1, 3):
        for name, v in (("RCX", 0), ("RDX", 0), ("RAX", value)):
            uc.reg_write(getattr(x86_const, f"UC_X86_REG_{name}"), v)
        uc.emu_start(_ENTRY, 0, count=1)
        blob = _blob(uc)
        holding = {o for o in range(0, len(blob) - 8, 8) if struct.unpack_from("<Q", blob, o)[0] == value}
        candidates = holding if candidates is None else candidates & holding
    found = sorted((candidates or set()) - {calibrate().regs})      # regs[0] is RAX
    return found[0] if len(found) == 1 else None


def _i32(blob: bytes, offset: int) -> int:
    return struct.unpack_from("<i", blob, offset)[0]


class EngineState:
    """Reads and patches the hidden fields of one engine's CPU."""

    def __init__(self, uc: Uc, offsets: ContextOffsets):
        self._uc = uc
        self.offsets = offsets
        self._ctx = None          # one context reused by the cheap readers (context_update)
        self._code_view = None    # (context, its pointer, hflags, CS base, EIP) for code_position, read in place
        self._handle = uc._uch.value

    def _hflags(self) -> int:
        if self._ctx is None:
            self._ctx = self._uc.context_save()
        else:
            self._uc.context_update(self._ctx)
        return struct.unpack("<I", ctypes.string_at(self._ctx.context.value + self.offsets.hflags, 4))[0]

    def interrupt_shadow(self) -> bool:
        """True while the CPU blocks external interrupts for one instruction after ``sti`` or a
        load of SS (QEMU's HF_INHIBIT_IRQ).  NMI blocking is not modelled here."""
        return bool(self._hflags() & HF_INHIBIT_IRQ)

    def cpl(self) -> int:
        """The current privilege level as the engine enforces it (hflags, not CS.RPL)."""
        return self._hflags() & HF_CPL_MASK

    def code_segment(self) -> tuple[int, int]:
        """``(base, bits)`` of the code segment the CPU executes with now, from its hidden state:
        64 when hflags has CS64 (base 0), else 32 or 16 from CS32, with the segment cache's base."""
        _, base, bits = self.code_position()
        return base, bits

    def code_position(self) -> tuple[int, int, int]:
        """``(rip, base, bits)``: RIP (CPUX86State.eip, what ``uc_reg_read`` of RIP answers) and the
        code segment as ``code_segment`` gives it, from one context update (~5 KiB copied) into a
        context kept for it, read in place: what a trap reads first."""
        view = self._code_view
        if view is None:
            ctx = self._uc.context_save()
            at = ctx.context.value
            view = self._code_view = (
                ctx, ctx.context, ctypes.c_uint32.from_address(at + self.offsets.hflags),
                ctypes.c_uint64.from_address(at + self.offsets.segs + SEGMENT_CACHE_SIZE * R_CS + 8),
                ctypes.c_uint64.from_address(at + self.offsets.regs + EIP_FROM_REGS))
        else:
            status = _CONTEXT_SAVE(self._handle, view[1])
            if status:
                raise UcError(status)
        _, _, hflags, cs_base, eip = view
        if hflags.value & HF_CS64:
            return eip.value, 0, 64
        return eip.value, cs_base.value & 0xFFFF_FFFF, 32 if hflags.value & HF_CS32 else 16

    def segment(self, reg: int) -> SegmentCache:
        """The segment cache of ``reg`` (R_ES .. R_GS) with its hidden part."""
        ctx = self._uc.context_save()
        raw = ctypes.string_at(ctx.context.value + self.offsets.segs + SEGMENT_CACHE_SIZE * reg, SEGMENT_CACHE_SIZE)
        selector, _, base, limit, flags = struct.unpack("<IIQII", raw)
        return SegmentCache(selector, base, limit, flags)

    def load_segments(self, *, cs: SegmentCache | None = None, ss: SegmentCache | None = None,
                      cpl: int | None = None) -> None:
        """Load CS and/or SS with the given hidden state, then set the CPL, bypassing the
        privilege checks of ``uc_reg_write`` (which cannot move the CPU to an inner ring).

        The hflags the engine derives from segment caches are recomputed as QEMU's
        ``cpu_x86_load_seg_cache`` does (SS first, then CS, as its interrupt paths load them):
        CPL from SS.DPL, CS32/CS64 from CS.B/CS.L (CS64 only with LMA), SS32 from SS.B and ADDSEG.
        ``cpl`` (when given) overrides the SS.DPL-derived CPL, as SYSCALL's fixed selectors need.
        """
        ctx = self._uc.context_save()
        base = ctx.context.value
        hflags_at, segs_at = base + self.offsets.hflags, base + self.offsets.segs
        hflags = struct.unpack("<I", ctypes.string_at(hflags_at, 4))[0]
        cr0 = self._uc.reg_read(UC_X86_REG_CR0)
        eflags = self._uc.reg_read(UC_X86_REG_EFLAGS)

        def seg_at(reg: int) -> int:
            return segs_at + SEGMENT_CACHE_SIZE * reg

        def read_seg(reg: int) -> tuple[int, int, int, int, int]:
            return struct.unpack("<IIQII", ctypes.string_at(seg_at(reg), SEGMENT_CACHE_SIZE))

        for reg, seg in ((R_SS, ss), (R_CS, cs)):
            if seg is None:
                continue
            ctypes.memmove(seg_at(reg), struct.pack("<IIQII", seg.selector & 0xFFFF, 0, seg.base & 0xFFFF_FFFF_FFFF_FFFF,
                                                    seg.limit & 0xFFFF_FFFF, seg.flags & 0xFFFF_FFFF), SEGMENT_CACHE_SIZE)
            if reg == R_CS:
                if hflags & HF_LMA and seg.flags & DESC_L:
                    hflags = (hflags | HF_CS32 | HF_SS32 | HF_CS64) & ~HF_ADDSEG
                else:
                    hflags = (hflags & ~(HF_CS32 | HF_CS64)) | (HF_CS32 if seg.flags & DESC_B else 0)
            else:
                hflags = (hflags & ~HF_CPL_MASK) | seg.dpl
            new = HF_SS32 if read_seg(R_SS)[4] & DESC_B else 0
            if hflags & HF_CS64:
                pass                  # long mode: DS/ES/SS bases are taken as zero
            elif not cr0 & CR0_PE or eflags & EFLAGS_VM or not hflags & HF_CS32:
                new |= HF_ADDSEG
            elif read_seg(R_DS)[2] | read_seg(R_ES)[2] | read_seg(R_SS)[2]:
                new |= HF_ADDSEG
            hflags = (hflags & ~(HF_SS32 | HF_ADDSEG)) | new
        if cpl is not None:
            hflags = (hflags & ~HF_CPL_MASK) | (cpl & 3)
        ctypes.memmove(hflags_at, struct.pack("<I", hflags), 4)
        self._uc.context_restore(ctx)

    def io_breakpoint_checks(self) -> bool:
        """Whether hflags has HF_IOBPT: translated ``in``/``out``/``ins``/``outs`` then end in the
        engine's I/O-breakpoint check (``helper_bpt_io``), which raises #DB right after the access
        when an enabled DR7 I/O breakpoint covers the port."""
        return bool(self._hflags() & HF_IOBPT)

    def enable_io_breakpoint_checks(self) -> None:
        """Set HF_IOBPT, which the engine sets only when the guest itself loads DR7 with an
        enabled I/O breakpoint (``cpu_x86_update_dr7``); a guest DR7 load recomputes it.  Blocks
        translated from now on carry the check (the flag is part of a block's lookup key)."""
        ctx = self._uc.context_save()
        at = ctx.context.value + self.offsets.hflags
        hflags = struct.unpack("<I", ctypes.string_at(at, 4))[0]
        ctypes.memmove(at, struct.pack("<I", hflags | HF_IOBPT), 4)
        self._uc.context_restore(ctx)

    def write_xcr0(self, value: int) -> bool:
        """Load XCR0 as ``xsetbv`` would (for an environment that emulates the instruction: a PV
        kernel's, which is not in ring 0); False, changing nothing, when its field is not found."""
        offset = xcr0_offset()
        if offset is None:
            return False
        ctx = self._uc.context_save()
        ctypes.memmove(ctx.context.value + offset, struct.pack("<Q", value), 8)
        self._uc.context_restore(ctx)
        return True

    def replace_word(self, old: int, new: int) -> bool:
        """Replace the one 64-bit field of the CPU state that holds ``old`` (4-byte aligned in the
        context) with ``new``; False, changing nothing, unless exactly one field holds it.  For
        state the engine has no register for and whose value hvsim wrote itself (svm.py: the
        intercept bits VMRUN loaded)."""
        ctx = self._uc.context_save()
        raw = ctypes.string_at(ctx.context.value, ctx.size)
        needle = struct.pack("<Q", old)
        found = [at for at in range(0, len(raw) - 7, 4) if raw[at:at + 8] == needle]
        if len(found) != 1:
            return False
        ctypes.memmove(ctx.context.value + found[0], struct.pack("<Q", new), 8)
        self._uc.context_restore(ctx)
        return True

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
