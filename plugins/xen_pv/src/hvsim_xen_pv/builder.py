"""The PV domain builder: the start-of-day virtual address space as Xen's tools lay it out
(xen-abi.md §3.2; tools/libs/guest/xg_dom_core.c xc_dom_build_image, xg_dom_x86.c).

In pseudo-physical order from VIRT_BASE, each part page-aligned and mapped 1:1 (pfn = (va -
VIRT_BASE) >> 12): the kernel's PT_LOADs at VIRT_BASE + p_paddr - PADDR_OFFSET; the initrd (unless
the kernel has the MOD_START_PFN note: then it follows the region, unmapped, and start_info names its
pfn with SIF_MOD_START_PFN, as libxc does); the
p2m list (pfn -> mfn, one u64 per page of the domain); start_info; for a domU the xenstore and
console ring pages; the bootstrap page tables (L4, L3s, L2s, L1s mapping [VIRT_BASE, v_end) with
4 KiB pages, flags 0x23 for data and 0x67 for tables, the table pages themselves read-only);
one boot-stack page; padding to a 4 MiB boundary with at least 512 KiB to spare.  Unlike libxc,
the pages from the end of the kernel to the boot stack (hvsim's data) are mapped NX.

Xen's part of every L4: slot 256 maps the read-only M2P with 2 MiB pages, slot 260 the per-domain
GDT area (pages 0-13 the guest's GDT frames once it calls set_gdt, page 14 the flat selectors).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import attrs

from hvsim.abi import xen_pv as pv
from hvsim.core.cpu import flat_descriptor
from hvsim.core.errors import LoadError

from .memory import PAGE, TWO_MIB, DomainMemory

if TYPE_CHECKING:
    from hvsim.core.machine import Machine

FOUR_MIB = 4 << 20
SLACK = 512 << 10
M2P_SLOT = (pv.MACH2PHYS_VIRT_START >> 39) & 0x1FF
PERDOMAIN_SLOT = (pv.PERDOMAIN_VIRT_START >> 39) & 0x1FF
XEN_SLOTS = (M2P_SLOT, PERDOMAIN_SLOT)
GDT_AREA_PAGES = 16
# The flat selectors in GDT page 14 (xen-x86_64.h FLAT_*), as hvsim's privilege model needs them:
# the guest kernel runs at CPL 1 on FLAT_KERNEL_CS64 with RPL 1 and a NULL SS of RPL 1 (cpu.py), its
# user space at CPL 3 on the FLAT_RING3 selectors or its own GDT's.  One descriptor serves the
# kernel's 0xe031 and user space's 0xe033: a conforming DPL-0 64-bit code segment, loadable at any
# CPL with RPL = CPL (SDM vol. 3, 5.8.1.2).  0xe028 is
# Xen's DPL-3 flat data segment (FLAT_RING3_DS32/SS32/SS64 0xe02b), loadable into a data segment
# register in either ring and into SS in ring 3.  (Xen's own descriptors are DPL 3 throughout: it
# runs the kernel in ring 3.)
KERNEL_CS = pv.FLAT_KERNEL_CS64 & ~3          # 0xe030: pushed as CS in kernel-mode bounce frames
KERNEL_SS = pv.FLAT_KERNEL_SS64 & ~3          # 0xe028: pushed as SS in kernel-mode bounce frames
XEN_GDT_ENTRIES = {
    0x08: flat_descriptor((0x9B, 0xA)),       # Xen's own code64 (__HYPERVISOR_CS 0xe008)
    0x10: flat_descriptor((0x93, 0xC)),       # Xen's own data
    (pv.FLAT_RING3_CS32 & ~7) - 0xE000: flat_descriptor((0xFB, 0xC)),     # FLAT_RING3_CS32 0xe023
    (pv.FLAT_RING3_DS32 & ~7) - 0xE000: flat_descriptor((0xF3, 0xC)),     # FLAT_RING3_DS32/SS 0xe02b
    (pv.FLAT_RING3_CS64 & ~7) - 0xE000: flat_descriptor((0x9F, 0xA)),     # 0xe030 kernel, 0xe033 user
}


@attrs.frozen
class BootLayout:
    virt_base: int
    entry: int
    start_info: int          # virtual
    stack_top: int           # virtual
    pt_base: int             # virtual address of the L4
    l4: int                  # machine address of the L4
    nr_pt_frames: int
    table_frames: tuple[tuple[int, int], ...]   # (machine address, level) of every bootstrap table
    p2m: int                 # virtual
    v_end: int
    initrd: tuple[int, int] | None   # (virtual address, or pfn with SIF_MOD_START_PFN; length)
    store_mfn: int | None
    console_mfn: int | None
    hypercall_page: int | None       # virtual


@attrs.frozen
class XenArea:
    """Xen's private page tables and pages, shared by every L4 of the domain."""

    l3_m2p: int
    l3_perdomain: int
    gdt_l1: int              # machine address of the L1 mapping the GDT area
    xen_gdt_page: int
    zero_page: int
    shared_info: int

    def l4_entries(self) -> dict[int, int]:
        return {M2P_SLOT: self.l3_m2p | pv.L4_PROT & ~pv.PTE_RW,
                PERDOMAIN_SLOT: self.l3_perdomain | pv.L4_PROT}


def build_xen_area(dom: DomainMemory) -> XenArea:
    mem = dom.m.memory
    l3_m2p, l2_m2p = dom.private_page(), dom.private_page()
    mem.write_u64(l3_m2p + ((pv.MACH2PHYS_VIRT_START >> 30) & 0x1FF) * 8, l2_m2p | pv.L3_PROT & ~pv.PTE_RW)
    for i in range(dom.m2p_size // TWO_MIB):       # read-only 2 MiB pages of the M2P
        mem.write_u64(l2_m2p + i * 8, (dom.m2p_base + i * TWO_MIB) | pv.PTE_PRESENT | pv.PTE_ACCESSED
                      | pv.PTE_PSE | pv.PTE_USER | pv.PTE_NX)
    l3_pd, l2_pd, gdt_l1 = dom.private_page(), dom.private_page(), dom.private_page()
    mem.write_u64(l3_pd + ((pv.PERDOMAIN_VIRT_START >> 30) & 0x1FF) * 8, l2_pd | pv.L3_PROT)
    mem.write_u64(l2_pd + ((pv.PERDOMAIN_VIRT_START >> 21) & 0x1FF) * 8, gdt_l1 | pv.L2_PROT)
    zero, xen_gdt = dom.private_page(), dom.private_page()
    for offset, desc in XEN_GDT_ENTRIES.items():
        mem.write_u64(xen_gdt + offset, desc)
    area = XenArea(l3_m2p, l3_pd, gdt_l1, xen_gdt, zero, dom.private_page())
    map_gdt_frames(dom, area, [])
    return area


def map_gdt_frames(dom: DomainMemory, area: XenArea, frames: list[int]) -> None:
    """Pages 0-13 of the GDT area: the guest's GDT frames, then the zero page; page 14: Xen's."""
    mem = dom.m.memory
    for page in range(pv.FIRST_RESERVED_GDT_PAGE):
        target = frames[page] * PAGE if page < len(frames) else area.zero_page
        flags = pv.L1_PROT | pv.PTE_DIRTY if page < len(frames) else pv.PTE_PRESENT | pv.PTE_ACCESSED
        mem.write_u64(area.gdt_l1 + page * 8, target | flags | pv.PTE_NX)
    mem.write_u64(area.gdt_l1 + pv.FIRST_RESERVED_GDT_PAGE * 8,
                  area.xen_gdt_page | pv.L1_PROT | pv.PTE_DIRTY | pv.PTE_NX)


def _page_up(value: int) -> int:
    return (value + PAGE - 1) & ~(PAGE - 1)


def _spans(start: int, end: int, shift: int) -> int:
    return ((end - 1) >> shift) - (start >> shift) + 1


def build_domain(machine: "Machine", dom: DomainMemory, area: XenArea, elf, notes, *, entry: int,
                 initrd: bytes | None, cmdline: bytes, dom0: bool, hypercall_page: int | None,
                 shared_info_ma: int) -> BootLayout:
    """Load the kernel, lay out the bootstrap region and write start_info and the page tables."""
    vbase = notes.effective_virt_base
    offset = vbase - notes.effective_paddr_offset
    loads = [s for s in elf.segments if s.memsz]
    kstart = min(s.paddr for s in loads) + offset
    kend = max(s.paddr + s.memsz for s in loads) + offset
    if kstart < vbase:
        raise LoadError(f"the kernel starts at {kstart:#x}, below VIRT_BASE {vbase:#x}")

    def pseudo(va: int) -> int:
        return va - vbase

    for seg in loads:
        at = pseudo(seg.paddr + offset)
        _need(dom, at, seg.memsz, f"PT_LOAD at p_paddr {seg.paddr:#x}")
        dom.write_pseudo(at, seg.data)
        if seg.memsz > len(seg.data):
            dom.fill_pseudo(at + len(seg.data), seg.memsz - len(seg.data))

    cursor = _page_up(kend)
    initrd_at = None
    unmapped_initrd = initrd is not None and bool(notes.mod_start_pfn)
    if initrd is not None and not unmapped_initrd:
        _need(dom, pseudo(cursor), len(initrd), f"the initrd ({len(initrd)} bytes)")
        dom.write_pseudo(pseudo(cursor), initrd)
        initrd_at = (cursor, len(initrd))
        cursor = _page_up(cursor + len(initrd))
    p2m = cursor
    p2m_data = dom.p2m_bytes()
    cursor = _page_up(cursor + len(p2m_data))
    start_info = cursor
    cursor += PAGE
    store = console = None
    if not dom0:
        store, console = cursor, cursor + PAGE
        cursor += 2 * PAGE
    pt_start = cursor

    # How many tables map [vbase, v_end) when the tables and the stack sit at pt_start?
    tables = 0
    while True:
        v_end = (pt_start + (tables + 1) * PAGE + SLACK + FOUR_MIB - 1) // FOUR_MIB * FOUR_MIB
        counts = (1, _spans(vbase, v_end, 39), _spans(vbase, v_end, 30), _spans(vbase, v_end, 21))
        if sum(counts) <= tables:
            break
        tables = sum(counts)
    _need(dom, 0, pseudo(v_end), "the bootstrap region")
    if unmapped_initrd:        # MOD_START_PFN: after the bootstrap region, unmapped, named by its pfn
        _need(dom, pseudo(v_end), len(initrd), f"the initrd ({len(initrd)} bytes)")
        dom.write_pseudo(pseudo(v_end), initrd)
        initrd_at = (pseudo(v_end) // PAGE, len(initrd))
    dom.write_pseudo(pseudo(p2m), p2m_data)
    stack_top = pt_start + tables * PAGE + PAGE

    # The tables, in L4, L3s, L2s, L1s order (their virtual addresses are consecutive pages).
    mem = machine.memory
    frames: list[tuple[int, int]] = []
    for level, count in zip((4, 3, 2, 1), counts):
        for _ in range(count):
            ma = dom.mfn(pseudo(pt_start + len(frames) * PAGE) // PAGE) * PAGE
            mem.fill(ma, PAGE)
            frames.append((ma, level))
    by_level = {lvl: [ma for ma, level in frames if level == lvl] for lvl in (4, 3, 2, 1)}
    l4 = by_level[4][0]
    for level, shift in ((4, 39), (3, 30), (2, 21)):
        parents, children = by_level[level], by_level[level - 1]
        for i, child in enumerate(children):
            base = ((vbase >> shift) + i) << shift
            j = 0 if level == 4 else (base >> (shift + 9)) - (vbase >> (shift + 9))
            mem.write_u64(parents[j] + ((base >> shift) & 0x1FF) * 8, child | pv.L4_PROT)
    pt_end = pt_start + tables * PAGE
    # From the end of the kernel: the mapped initrd, p2m list, start_info, the xenstore and console
    # pages, the page tables and the boot stack are data hvsim wrote: mapped NX (EFER.NXE is on at
    # entry).  The kernel's own pages and the spare space above the stack stay executable.
    data_start = _page_up(kend)
    for i, l1 in enumerate(by_level[1]):
        first = ((vbase >> 21) + i) << 21
        entries = []
        for va in range(first, first + TWO_MIB, PAGE):
            if not vbase <= va < v_end:
                entries.append(0)
                continue
            flags = pv.PTE_PRESENT | pv.PTE_ACCESSED if pt_start <= va < pt_end else pv.L1_PROT
            if data_start <= va < pt_end + PAGE:        # hvsim's data: never executable
                flags |= pv.PTE_NX
            entries.append(dom.mfn(pseudo(va) // PAGE) * PAGE | flags)
        mem.write(l1, struct.pack("<512Q", *entries))
    for slot, entry_value in area.l4_entries().items():
        mem.write_u64(l4 + slot * 8, entry_value)

    # start_info
    flags = (pv.SIF_PRIVILEGED | pv.SIF_INITDOMAIN if dom0 else 0) | (pv.SIF_MOD_START_PFN if unmapped_initrd else 0)
    store_mfn = dom.mfn(pseudo(store) // PAGE) if store is not None else None
    console_mfn = dom.mfn(pseudo(console) // PAGE) if console is not None else None
    fields = (
        pv.START_INFO_MAGIC, dom.nr_pages, shared_info_ma, flags,
        store_mfn or 0, 1 if store is not None else 0,
        console_mfn or 0, 2 if console is not None else 0,
        pt_start, tables, p2m,
        initrd_at[0] if initrd_at else 0, initrd_at[1] if initrd_at else 0,
        cmdline[:pv.MAX_GUEST_CMDLINE - 1], 0, 0,
    )
    info = struct.pack(pv.START_INFO_FORMAT, *fields)
    if dom0:          # console.dom0: no VGA console information (info_off past the struct, size 0)
        info = (info[:pv.START_INFO_DOM0_CONSOLE_OFFSET]
                + struct.pack(pv.START_INFO_DOM0_CONSOLE_FORMAT, pv.START_INFO_SIZE, 0)
                + info[pv.START_INFO_DOM0_CONSOLE_OFFSET + 8:])
    dom.write_pseudo(pseudo(start_info), info.ljust(PAGE, b"\0"))
    if hypercall_page is not None and not vbase <= hypercall_page < kend:
        raise LoadError(f"HYPERCALL_PAGE {hypercall_page:#x} lies outside the kernel [{kstart:#x}, {kend:#x})")
    return BootLayout(virt_base=vbase, entry=entry, start_info=start_info, stack_top=stack_top,
                      pt_base=pt_start, l4=l4, nr_pt_frames=tables, table_frames=tuple(frames),
                      p2m=p2m, v_end=v_end, initrd=initrd_at, store_mfn=store_mfn,
                      console_mfn=console_mfn, hypercall_page=hypercall_page)


def _need(dom: DomainMemory, pseudo_addr: int, size: int, what: str) -> None:
    if pseudo_addr < 0 or (pseudo_addr + size + PAGE - 1) // PAGE > dom.nr_pages:
        raise LoadError(f"{what} does not fit in the domain's {dom.nr_pages * PAGE >> 20} MiB "
                        f"(pseudo-physical {pseudo_addr:#x}-{pseudo_addr + size:#x})")


