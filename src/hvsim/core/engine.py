"""How hvsim opens a Unicorn engine: 64-bit mode, with a CPU model that implements SVM.

The model is AMD EPYC.  hvsim needs SVM to trap MSR accesses (svm.py), which rules out Unicorn's
default (Haswell); of the models with SVM, EPYC is the one whose TCG-supported features come
closest to that default (SSE4.2, POPCNT, AES, XSAVE, FSGSBASE, SMEP, SMAP, 1 GiB pages).  The
guest never sees SVM: the CPUID answers hide it (cpuid.py).  Every engine hvsim opens, including
the scratch engines that probe CPUID and calibrate context offsets, goes through here so they
all agree.
"""

from __future__ import annotations

import ctypes
import functools
import struct

from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_EXEC, Uc
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_CPU_X86_EPYC, UC_X86_REG_CR2, UC_X86_REG_RIP

CPU_MODEL = UC_CPU_X86_EPYC
uclib.uc_context_size.restype = ctypes.c_size_t


def new_engine() -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_cpu_model(CPU_MODEL)
    return uc


def fetch_physical(uc: Uc, linear: int) -> int | None:
    """The guest-physical address the engine itself fetches an instruction at ``linear`` from, or
    None when that fetch would fault.

    The engine answers from its TLB first, so this is the translation the CPU *used*: after the
    host rewrote guest page tables without a TLB flush (as hardware, the engine keeps running on
    the cached mapping until ``invlpg``/a CR3 load) it still finds code that a fresh walk of the
    page tables no longer reaches.  ``uc_vmem_translate`` (unicorn 2.1, not wrapped by the 2.1.4
    Python binding) probes without raising, but a probe that misses the TLB and faults sets CR2 as
    a #PF would (CR2 is put back here) and leaves that #PF as the engine's pending exception: ask
    only when a None answer ends the run (the run loop's ``hlt`` check).
    """
    cr2 = uc.reg_read(UC_X86_REG_CR2)
    physical = ctypes.c_uint64()
    status = uclib.uc_vmem_translate(uc._uch, ctypes.c_uint64(linear), UC_PROT_EXEC, ctypes.byref(physical))
    if uc.reg_read(UC_X86_REG_CR2) != cr2:
        uc.reg_write(UC_X86_REG_CR2, cr2)
    return physical.value if status == 0 else None


# --- the per-access exit check ---------------------------------------------------------------------
#
# Unicorn 2.1.4 follows every guest load and store with a call to helper_check_exit_request
# (tcg-op.c check_exit_request; unicorn issue #823), so that a stop asked for during the access
# (an unmapped access a hook refused, uc_emu_stop from an MMIO callback, a mapping changed from a
# hook) takes effect at once instead of at the next block: about a third of the time of
# store-heavy code such as a bzImage's decompressor (guest-store-speed.md C2).  The engine skips
# the call while its uc_struct field `no_exit_request` is set (a workaround it has for ARM IT
# blocks), read when a block is translated.  hvsim sets it: its own stops come from the native
# block hook, at block starts, and its faults longjmp; a stop asked for inside an access still
# happens, at the next block start, with the state the engine reached there.  The exit check after
# a UC_HOOK_CODE callback is the same call, so the per-instruction counter (native.py) turns the
# field off again before it adds its hook.
#
# The field has no API.  uc_priv.h (2.1.4) ends the struct with ... target_page_size (u32),
# target_page_align (u32), qemu_host_page_size (u64), qemu_real_host_page_size (u64),
# qemu_icache_linesize (int), context_content (int), cpu_context_size (int), next_pc (u64),
# hook_insert, first_tb, no_exit_request, init_done (bools): the page-size run is found in the
# initialised struct and every neighbour is checked before one byte is written.
_PAGE_RUN = struct.pack("<IIQQ", 4096, 4095, 4096, 4096)
_SEARCH = 8192


def _exit_check_field(uc: Uc) -> int | None:
    """The address of ``no_exit_request`` in ``uc``'s uc_struct, or None when the layout is not
    the one expected (the field is then left alone)."""
    uc.ctl_get_page_size()                     # makes the engine initialise the struct
    base = uc._uch.value
    raw = ctypes.string_at(base, _SEARCH)
    at = raw.find(_PAGE_RUN)
    if at < 0 or raw.find(_PAGE_RUN, at + 1) >= 0:
        return None
    linesize, content, context_size = struct.unpack_from("<iii", raw, at + 24)
    bools = (at + 24 + 12 + 7 & ~7) + 8
    hook_insert, _first_tb, no_exit_request, init_done = raw[bools:bools + 4]
    header = uclib.uc_context_size(uc._uch) - context_size
    if not (0 < linesize <= 4096 and content == 1 and 0 < header <= 64 and hook_insert in (0, 1)
            and no_exit_request in (0, 1) and init_done == 1):
        return None
    return base + bools + 2


def set_access_exit_checks(uc: Uc, enabled: bool) -> bool:
    """Whether blocks translated from now on check for a stop after each guest memory access (the
    engine's default) or not; False when the engine's layout is not recognised and nothing
    changed."""
    field = _exit_check_field(uc)
    if field is None:
        return False
    ctypes.memmove(field, b"\x00" if enabled else b"\x01", 1)
    return True


# --- the "PC was set" flag -------------------------------------------------------------------------
#
# uc_reg_write of RIP sets the uc_struct field `skip_sync_pc_on_exit`, so that the exit it causes
# keeps the new RIP instead of restoring one from the block.  The engine clears the field only in
# helper_check_exit_request when an exit is taken; a RIP written from a hook outside a block (an
# exception or #VMEXIT hook: the run resumes without such an exit) leaves it set, and from then on
# the hooks called inside blocks (port I/O, memory, RDTSC) run without the engine syncing RIP to
# their instruction: they read the RIP of some earlier block start.  The native block hook clears
# it at block starts, where the block's own address is the right RIP either way.
#
# It is the struct's last field (uc_priv.h, 2.1.4, Linux x86-64): after no_exit_request come
# init_done, sigjmp_buf jmp_bufs[UC_MAX_NESTED_LEVEL = 64] (200 bytes each), int nested_level,
# last_tb, empty_view, u32 tcg_buffer_size, unmapped_regions, i32 snapshot_level, u64 nested, and
# three bools, the third this one.  The offset is checked by writing RIP on a scratch engine.
_JMP_BUFS = 64 * 200


@functools.lru_cache(maxsize=1)
def _sync_pc_offset() -> int | None:
    uc = new_engine()
    uc.mem_map(0, 0x1000)
    exit_check = _exit_check_field(uc)
    if exit_check is None:
        return None
    base = uc._uch.value
    jmp_bufs = (exit_check - base + 2 + 7) & ~7
    tail = jmp_bufs + _JMP_BUFS          # nested_level; last_tb +8, empty_view +16, tcg_buffer_size +24,
    offset = tail + 58                   # unmapped_regions +32, snapshot_level +40, nested +48, bools +56
    before = ctypes.string_at(base + tail, 64)
    uc.reg_write(UC_X86_REG_RIP, 0x1000)
    after = ctypes.string_at(base + tail, 64)
    changed = [i for i in range(64) if before[i] != after[i]]
    if changed != [58] or after[58] != 1:
        return None
    return offset


def sync_pc_flag(uc: Uc) -> int | None:
    """The address of ``uc``'s skip_sync_pc_on_exit field, or None when the engine's layout is not
    the one expected (see above)."""
    offset = _sync_pc_offset()
    if offset is None:
        return None
    uc.ctl_get_page_size()                     # the struct is initialised
    return uc._uch.value + offset
