"""The PV MMU: mmu_update, mmuext_op, update_va_mapping, and writable-page-table emulation.

The guest's page tables hold machine frame numbers, so the engine walks them directly; the
hypervisor's job is to check each update as Xen does (xen/arch/x86/mm.c, pv/mm.c, pv/ro-page-fault.c)
and keep the engine's translations coherent (every update flushes its TLB).

What is checked, and refused with -EINVAL as Xen refuses it:
- a leaf entry that maps a machine frame the domain does not own: Xen's own frames (M2P, page
  tables, GDT area) always, any frame outside the domain's RAM for a domU (dom0 may map I/O memory
  and the BIOS area);
- a writable mapping of a pinned page-table page;
- a superpage (PSE) entry, and a non-leaf entry naming a frame the domain does not own;
- an update of an L4 slot Xen reserves (256-271), and an update through a frame the domain does
  not own (mmu_update's ``ptr``).
Page-table frames are known by level from pinning and from the non-leaf entries written into
known tables; a store to a read-only-mapped known table is emulated (ptwr) after the same checks.
Pin and unpin are bookkeeping plus, for L4s, Xen's slots copied into the table.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_OP_REG

from hvsim.abi import xen as x
from hvsim.abi import xen_pv as pv
from hvsim.core.errors import GuestMemoryError
from hvsim.xen import Continuation, HypercallError

from .builder import XEN_SLOTS

if TYPE_CHECKING:
    from hvsim.core.machine import Machine
    from hvsim.core.plugin_types import GuestException

    from .builder import XenArea
    from .memory import DomainMemory

PAGE = 0x1000
PF_PRESENT, PF_WRITE = 1, 2
BATCH = 1024            # requests per entry into mmu_update/mmuext_op before Xen-style continuation
XEN_RESERVED_L4 = range(256, 272)
PIN_LEVEL = {pv.MMUEXT_PIN_L1_TABLE: 1, pv.MMUEXT_PIN_L2_TABLE: 2, pv.MMUEXT_PIN_L3_TABLE: 3,
             pv.MMUEXT_PIN_L4_TABLE: 4}
_WIDE = {f"e{r}x": f"r{r}x" for r in "abcd"} | {"esi": "rsi", "edi": "rdi", "ebp": "rbp", "esp": "rsp"} \
    | {f"r{n}d": f"r{n}" for n in range(8, 16)}


class PvMmu:
    def __init__(self, machine: "Machine", dom: "DomainMemory", area: "XenArea", xen, *, dom0: bool, domid: int):
        self.m = machine
        self.xen = xen
        self.domid = domid
        self.dom = dom
        self.area = area
        self.dom0 = dom0
        self.pinned: dict[int, int] = {}        # mfn -> level
        self.levels: dict[int, int] = {}        # every page-table frame known, mfn -> level
        self.user_baseptr = 0
        self.ldt = (0, 0)
        self.flushes = 0
        self._cs = Cs(CS_ARCH_X86, CS_MODE_64)
        self._cs.detail = True

    # -- bookkeeping -------------------------------------------------------------------------------
    def adopt(self, mfn: int, level: int) -> None:
        """Record ``mfn`` as a page table of ``level`` and, below it, every table it names."""
        stack = [(mfn, level)]
        while stack:
            frame, lvl = stack.pop()
            if self.levels.get(frame) == lvl:
                continue
            self.levels[frame] = lvl
            entries = struct.unpack("<512Q", self.m.memory.read(frame * PAGE, PAGE))
            self._adjust_table(frame, lvl, entries)
            if lvl == 1:
                continue
            for slot, entry in enumerate(entries):
                if lvl == 4 and slot in XEN_RESERVED_L4:
                    continue
                if entry & pv.PTE_PRESENT and not (lvl in (2, 3) and entry & pv.PTE_PSE):
                    child = (entry & pv.PTE_ADDR_MASK) >> 12
                    if self.dom.owns(child):
                        stack.append((child, lvl - 1))

    def adjust(self, level: int, value: int) -> int:
        """A present entry as Xen stores it for a 64-bit PV guest (pv/mm.h adjust_guest_l{1,2,3,4}e):
        the guest kernel runs in ring 3, so every level gets _PAGE_USER; an L1 entry written without
        it is marked _PAGE_GUEST_KERNEL, one written with it (a user page) becomes global.  L4
        entries also get _PAGE_ACCESSED.  The guest reads the adjusted value back."""
        if not value & pv.PTE_PRESENT:
            return value
        if level == 1:
            if not value & pv.PTE_USER:
                value |= pv.PTE_GUEST_KERNEL | pv.PTE_USER
            if not value & pv.PTE_GUEST_KERNEL:
                value |= pv.PTE_GLOBAL | pv.PTE_USER
            return value
        return value | pv.PTE_USER | (pv.PTE_ACCESSED if level == 4 else 0)

    def _adjust_table(self, frame: int, level: int, entries) -> None:
        """Validating a new page table adjusts its present entries in place (Xen's alloc_l*_table);
        a table with any entry to adjust is written back whole, in one write."""
        adjust = self.adjust
        adjusted = [entry if level == 4 and slot in XEN_RESERVED_L4 else adjust(level, entry)
                    for slot, entry in enumerate(entries)]
        if adjusted != list(entries):
            self.m.memory.write(frame * PAGE, struct.pack("<512Q", *adjusted))

    def install_xen_slots(self, l4_mfn: int) -> None:
        memory = self.m.memory
        for slot, value in self.area.l4_entries().items():
            at = l4_mfn * PAGE + slot * 8
            if memory.read_u64(at) != value:         # a context switch reloads L4s that have them
                memory.write_u64(at, value)

    def flush(self) -> None:
        self.flushes += 1
        self.m.flush_tlb()

    # -- validation ----------------------------------------------------------------------------------
    def check_entry(self, level: int, slot: int, value: int) -> None:
        """Raise HypercallError(-EINVAL) for an entry Xen would refuse in a level-``level`` table."""
        if level == 4 and slot in XEN_RESERVED_L4:
            raise HypercallError(x.EINVAL, f"L4 slot {slot} belongs to Xen")
        if not value & pv.PTE_PRESENT:
            return
        mfn = (value & pv.PTE_ADDR_MASK) >> 12
        if level > 1:
            if value & pv.PTE_PSE and level in (2, 3):
                raise HypercallError(x.EINVAL, f"L{level} superpage entry {value:#x}: PV guests have none")
            if not self.dom.owns(mfn):
                raise HypercallError(x.EINVAL, f"L{level} entry names frame {mfn:#x}, not the domain's")
            return
        if self.dom.is_private(mfn):
            if mfn != self.area.shared_info // PAGE and mfn not in self.xen.grants.machine_frames():
                raise HypercallError(x.EINVAL, f"frame {mfn:#x} is Xen's own memory")
            return
        if not self.dom.owns(mfn):
            if not self.dom0:
                raise HypercallError(x.EINVAL, f"frame {mfn:#x} is not the domain's memory")
            return
        if value & pv.PTE_RW and mfn in self.pinned:
            raise HypercallError(x.EINVAL, f"writable mapping of pinned L{self.pinned[mfn]} table {mfn:#x}")

    def write_entry(self, entry_ma: int, value: int) -> None:
        """Check and write one entry at machine address ``entry_ma`` (its table's level, if known)."""
        frame = entry_ma // PAGE
        if not self.dom.owns(frame):
            raise HypercallError(x.EINVAL, f"update through frame {frame:#x}, not the domain's")
        level = self.levels.get(frame)
        if level is not None:
            self.check_entry(level, (entry_ma % PAGE) // 8, value)
            value = self.adjust(level, value)
            if level > 1 and value & pv.PTE_PRESENT:
                self.adopt((value & pv.PTE_ADDR_MASK) >> 12, level - 1)
        self.m.memory.write_u64(entry_ma & ~7, value)

    def walk_frames(self, va: int) -> frozenset[int] | None:
        """The machine frames translating ``va`` through the live 4-level tables (the four tables
        walked and the frame reached), or None if the walk ends early or on a superpage."""
        table = self.m.reg("cr3") & pv.PTE_ADDR_MASK
        frames = [table // PAGE]
        try:
            for shift in (39, 30, 21, 12):
                entry = self.m.memory.read_u64(table + ((va >> shift) & 0x1FF) * 8)
                if not entry & pv.PTE_PRESENT or (shift in (30, 21) and entry & pv.PTE_PSE):
                    return None
                table = entry & pv.PTE_ADDR_MASK
                frames.append(table // PAGE)
        except GuestMemoryError:
            return None
        return frozenset(frames)

    def l1_entry_address(self, va: int) -> int:
        """Machine address of the L1 entry mapping ``va`` in the live tables (-EINVAL if none)."""
        table = self.m.reg("cr3") & pv.PTE_ADDR_MASK
        for shift in (39, 30, 21):
            entry = self.m.memory.read_u64(table + ((va >> shift) & 0x1FF) * 8)
            if not entry & pv.PTE_PRESENT or (shift < 39 and entry & pv.PTE_PSE):
                raise HypercallError(x.EINVAL, f"no L1 table maps {va:#x}")
            table = entry & pv.PTE_ADDR_MASK
        return table + ((va >> 12) & 0x1FF) * 8

    # -- hypercalls ----------------------------------------------------------------------------------
    def _resume(self, count: int, done_ptr: int) -> tuple[int, int]:
        """(count, done so far) of a call that may be a continuation: Xen flags the count with
        MMU_UPDATE_PREEMPTED and keeps the running total in the guest's ``done`` word."""
        if not count & pv.MMU_UPDATE_PREEMPTED:
            return count, 0
        done = struct.unpack("<I", self.m.vmem.read(done_ptr, 4))[0] if done_ptr else 0
        return count & ~pv.MMU_UPDATE_PREEMPTED, done

    def _preempt(self, i: int, count: int, a, size: int) -> None:
        """After BATCH requests of a long list: continue with the rest (the caller saves ``done``)."""
        raise Continuation((a[0] + size * i, (count - i) | pv.MMU_UPDATE_PREEMPTED, a[2], a[3]))

    def mmu_update(self, a, info) -> int:
        reqs, done_ptr, domid = a[0], a[2], a[3] & 0xFFFF
        count, done = self._resume(a[1] & 0xFFFF_FFFF, done_ptr)
        info.update(count=count)
        self._check_domid(domid)
        start = done
        requests = GuestArray(self, reqs, 16, count)
        try:
            for i in range(count):
                if i == BATCH and self.xen.preemptible:
                    self._preempt(i, count, a, 16)
                ptr, val = struct.unpack(pv.MMU_UPDATE_FORMAT, requests.item(i))
                cmd = ptr & 3
                if cmd in (pv.MMU_NORMAL_PT_UPDATE, pv.MMU_PT_UPDATE_PRESERVE_AD):
                    self.write_entry(ptr & ~3, val)
                    requests.written(ptr // PAGE)
                elif cmd == pv.MMU_MACHPHYS_UPDATE:
                    mfn = ptr >> 12
                    if not self.dom.owns(mfn):
                        raise HypercallError(x.EINVAL, f"M2P update of frame {mfn:#x}, not the domain's")
                    self.dom.set_m2p(mfn, val)
                    requests.written((self.dom.m2p_base + mfn * 8) // PAGE)
                else:
                    raise HypercallError(x.ENOSYS, f"mmu_update command {cmd}")
                done += 1
        finally:
            info["done"] = done
            if done > start:
                self.flush()
            if done_ptr:              # also on an error, and before a continuation (it carries the total)
                self.m.vmem.write(done_ptr, struct.pack("<I", done))
        return 0

    def update_va_mapping(self, a, info) -> int:
        va, val, flags = a[0], a[1], a[2]
        info.update(va=hex(va), val=hex(val), flags=flags)
        entry = self.l1_entry_address(va)
        self.check_entry(1, (entry % PAGE) // 8, val)
        if not self.dom.owns(entry // PAGE):
            raise HypercallError(x.EINVAL, f"the L1 mapping {va:#x} is not the domain's")
        self.m.memory.write_u64(entry, self.adjust(1, val))
        self.flush()                    # UVMF_NONE too: the engine's TLB is not the guest's to manage
        return 0

    def mmuext_op(self, a, info) -> int:
        ops, done_ptr, domid = a[0], a[2], a[3] & 0xFFFF
        count, done = self._resume(a[1] & 0xFFFF_FFFF, done_ptr)
        self._check_domid(domid)
        names = []
        try:
            for i in range(count):
                if i == BATCH and self.xen.preemptible:
                    self._preempt(i, count, a, 24)
                cmd, arg1, arg2 = struct.unpack(pv.MMUEXT_OP_FORMAT, self.m.vmem.read(ops + 24 * i, 24))
                names.append(pv.MMUEXT_NAMES.get(cmd, f"cmd_{cmd}"))
                self._mmuext(cmd, arg1, arg2)
                done += 1
        finally:
            info.update(op=",".join(dict.fromkeys(names)) or "none", count=count, done=done)
            if done_ptr:
                self.m.vmem.write(done_ptr, struct.pack("<I", done))
        return 0

    def new_baseptr(self, mfn: int) -> None:
        """MMUEXT_NEW_BASEPTR, and a kernel's ``mov`` to CR3 (Xen's new_guest_cr3): the L4 at
        machine frame ``mfn`` becomes the kernel's page table."""
        if not self.dom.owns(mfn):
            raise HypercallError(x.EINVAL, f"new base pointer {mfn:#x} is not the domain's")
        self.install_xen_slots(mfn)
        self.adopt(mfn, 4)
        self.m.set_reg("cr3", mfn * PAGE)          # a CR3 load flushes the engine's TLB

    def _mmuext(self, cmd: int, arg1: int, arg2: int) -> None:
        if cmd in PIN_LEVEL:
            level = PIN_LEVEL[cmd]
            if not self.dom.owns(arg1):
                raise HypercallError(x.EINVAL, f"pin of frame {arg1:#x}, not the domain's")
            if arg1 in self.pinned:
                raise HypercallError(x.EINVAL, f"frame {arg1:#x} is already pinned")
            if level == 4:
                self.install_xen_slots(arg1)
            self.pinned[arg1] = level
            self.adopt(arg1, level)
        elif cmd == pv.MMUEXT_UNPIN_TABLE:
            if self.pinned.pop(arg1, None) is None:
                raise HypercallError(x.EINVAL, f"frame {arg1:#x} is not pinned")
        elif cmd == pv.MMUEXT_NEW_BASEPTR:
            self.new_baseptr(arg1)
        elif cmd == pv.MMUEXT_NEW_USER_BASEPTR:      # 0: no user table; else an L4 of the domain's
            if arg1:
                self._own(arg1)
                self.install_xen_slots(arg1)
                self.adopt(arg1, 4)
            self.user_baseptr = arg1
        elif cmd in (pv.MMUEXT_TLB_FLUSH_LOCAL, pv.MMUEXT_TLB_FLUSH_MULTI, pv.MMUEXT_TLB_FLUSH_ALL,
                     pv.MMUEXT_INVLPG_LOCAL, pv.MMUEXT_INVLPG_MULTI, pv.MMUEXT_INVLPG_ALL):
            self.flush()
        elif cmd == pv.MMUEXT_SET_LDT:
            self.ldt = (arg1, arg2)
        elif cmd in (pv.MMUEXT_FLUSH_CACHE, pv.MMUEXT_FLUSH_CACHE_GLOBAL):
            pass                                         # no caches are modelled
        elif cmd == pv.MMUEXT_CLEAR_PAGE:
            self._own(arg1)
            self.m.memory.fill(arg1 * PAGE, PAGE)
        elif cmd == pv.MMUEXT_COPY_PAGE:
            self._own(arg1)
            self._own(arg2)
            self.m.memory.write(arg1 * PAGE, self.m.memory.read(arg2 * PAGE, PAGE))
        else:
            raise HypercallError(x.ENOSYS, f"mmuext command {cmd}")

    def _own(self, mfn: int) -> None:
        if not self.dom.owns(mfn):
            raise HypercallError(x.EINVAL, f"frame {mfn:#x} is not the domain's")

    def _check_domid(self, domid: int) -> None:
        if domid not in (x.DOMID_SELF, self.domid):
            raise HypercallError(x.ESRCH, f"domain {domid:#x}: only the caller's own tables are modelled")

    # -- writable page tables (ptwr) ---------------------------------------------------------------
    def emulate_pt_write(self, exc: "GuestException") -> str | None:
        """A store to a read-only-mapped page table: perform it after Xen's checks (Xen never lets
        these faults reach the guest).  ``None`` when this is not such a store."""
        if exc.vector != 14 or exc.error_code is None or exc.error_code & 0x1F != PF_PRESENT | PF_WRITE:
            return None
        try:
            target = self.m.vmem.translate(exc.cr2)
            code = self.m.vmem.read(exc.rip, 15)
        except GuestMemoryError:
            return None
        frame = target // PAGE
        level = self.levels.get(frame)
        if level is None:
            return None
        insn = next(self._cs.disasm(code, exc.rip, 1), None)
        if insn is None or insn.mnemonic not in ("mov", "xchg", "cmpxchg") or len(insn.operands) != 2:
            return None
        dst, src = insn.operands
        if dst.type != X86_OP_MEM or dst.size not in (4, 8):
            return None
        size, entry_ma = dst.size, target & ~7
        old = self.m.memory.read_u64(entry_ma)
        if src.type == X86_OP_IMM:
            value = src.imm & ((1 << 8 * size) - 1)
        elif src.type == X86_OP_REG:
            value = self.m.reg(insn.reg_name(src.reg)) & ((1 << 8 * size) - 1)
        else:
            return None
        if size == 4:                     # a half-entry store: merge into the 64-bit entry
            shift = 8 * (target & 4)
            new = (old & ~(0xFFFF_FFFF << shift)) | value << shift
        else:
            new = value
        if insn.mnemonic == "cmpxchg":
            acc = "rax" if size == 8 else "eax"
            expected = self.m.reg(acc) & ((1 << 8 * size) - 1)
            current = (old >> (8 * (target & 4)) if size == 4 else old) & ((1 << 8 * size) - 1)
            flags = self.m.reg("rflags") & ~(1 << 6)
            if current != expected:
                self.m.set_reg("rax", current)
                self.m.set_reg("rflags", flags)
                self.m.set_rip(exc.rip + insn.size)
                return "ptwr emulation (cmpxchg, no change)"
            self.m.set_reg("rflags", flags | 1 << 6)
        try:
            self.check_entry(level, (entry_ma % PAGE) // 8, new)
        except HypercallError:
            return None                   # Xen lets the fault reach the guest
        new = self.adjust(level, new)
        if level > 1 and new & pv.PTE_PRESENT:
            self.adopt((new & pv.PTE_ADDR_MASK) >> 12, level - 1)
        self.m.memory.write_u64(entry_ma, new)
        if insn.mnemonic == "xchg":
            reg = insn.reg_name(src.reg)
            previous = (old >> (8 * (target & 4)) if size == 4 else old) & ((1 << 8 * size) - 1)
            self.m.set_reg(_WIDE.get(reg, reg), previous)
        self.flush()
        self.m.set_rip(exc.rip + insn.size)
        return f"ptwr emulation ({insn.mnemonic} into L{level} {frame:#x})"


class GuestArray:
    """The guest's array of ``count`` fixed-size requests at guest-virtual ``base`` (mmu_update's
    list), read a page at a time instead of one translation per request.

    Reading ahead must not change what a request reads: Xen copies each request from the guest
    when it comes to it, after the earlier requests took effect.  A request can change what the
    rest of the list reads only by writing the page tables that map it, or the list's own frame;
    so the page read ahead is dropped when a request writes into one of the table frames its
    translation walked or into its frame (``written``), and read afresh.  A read that faults is
    the single request's read, so the fault (and the trace's text) is the same as before.  The
    page is the list's own up to its end: an item reaching into the next page is read alone."""

    def __init__(self, mmu: PvMmu, base: int, size: int, count: int):
        self.mmu, self.base, self.size, self.count = mmu, base, size, count
        self.start = self.end = 0               # [start, end): guest-virtual range held in data
        self.data = b""
        self.frames: frozenset[int] = frozenset()

    def item(self, index: int) -> bytes:
        va = (self.base + self.size * index) & 0xFFFF_FFFF_FFFF_FFFF
        if self.start <= va and va + self.size <= self.end:
            offset = va - self.start
            return self.data[offset:offset + self.size]
        vmem = self.mmu.m.vmem
        page_end = (va | (PAGE - 1)) + 1
        if page_end - va < 2 * self.size or self.count - index < 2:
            return vmem.read(va, self.size)     # the last request, or one that reaches the next page
        frames = self.mmu.walk_frames(va)
        if frames is None:
            return vmem.read(va, self.size)     # not a plain 4-level walk: read as Xen would
        try:
            self.data = vmem.read(va, page_end - va)
        except GuestMemoryError:
            return vmem.read(va, self.size)     # the fault, if any, is this request's own
        self.start, self.end, self.frames = va, page_end, frames
        return self.data[:self.size]

    def written(self, frame: int) -> None:
        """A request wrote into machine frame ``frame``."""
        if frame in self.frames:
            self.start = self.end = 0
