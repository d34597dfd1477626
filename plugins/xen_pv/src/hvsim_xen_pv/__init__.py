"""hvsim environment ``xen_pv``: a 64-bit Xen PV guest (dom0 with ``--dom0``, else a domU), entered
at ``XEN_ELFNOTE_ENTRY`` with ``start_info`` in RSI.

Acceptance is libelf's (xen/common/libelf/libelf-dominfo.c): Xen notes from PT_NOTE, else SHT_NOTE,
else the legacy ``__xen_guest`` section; XEN_VERSION must start with ``xen-3.0``, LOADER with
``generic`` or GUEST_OS with ``linux``; an unknown required FEATURE refuses the image; the entry
must lie inside the kernel.  Only 64-bit images are booted (a 32-bit PAE PV kernel is refused).

Memory (memory.py): a domU owns every frame of the configured machine and sees one E820 RAM entry
of the configured size from ``XENMEM_memory_map``, as libxl gives a PV guest (the pseudo-physical map
is the inherent difference from the other environments); dom0 owns the configured map's RAM frames
and reads the configured map itself with ``XENMEM_machine_memory_map``.  Pseudo-physical frames are
the owned machine frames in order, so the p2m is not the identity past the first gap, as on Xen.
Xen's M2P is read-only at 0xffff800000000000, its GDT area at 0xffff820000000000; both are in Xen's
private memory, never in the domain's.

The start-of-day layout (builder.py) is libxc's; the entry registers are xg_dom_x86.c's, except the
privilege level.  **Privilege model**: Xen runs a 64-bit PV kernel in ring 3 and emulates what it
may not execute; hvsim runs it in ring 1 with IOPL 0, on CS 0xe031 (the FLAT_KERNEL_CS64 descriptor,
conforming DPL 0 in Xen's GDT page so user space loads it as 0xe033) and a NULL SS of RPL 1, so that
its page tables are a supervisor's while what it may not execute (``cli``, ``rdmsr``, ``mov %cr4``...)
raises #GP into Xen's privileged-op emulation (privop.py), which completes it or gives the guest the
#GP Xen gives.  What the guest observes differently: ``mov %cs`` reads 0xe031 not 0xe033, ``mov
%ss`` 1 not 0xe02b, and loading 0xe02b into SS in kernel mode faults; the MSRs hvsim does not
intercept are the emulated CPU's (no MSR filtering beyond the environment's); ``popf`` cannot
change IF (as at Xen's ring 3).  The same things happen either way for what the kernel asks Xen to
do (every hypercall), and exceptions are bounced to its trap table as Xen does.  User space runs in ring 3 as on Xen (cpu.py:
the iret hypercall, user syscalls, exceptions and events from user mode, the user page table).

Hypercalls arrive by ``syscall`` (Linux inlines them) or through the hypercall page when the image
has a HYPERCALL_PAGE note (Xen's 64-bit PV stubs are written there).  The shared Xen layer
(``hvsim.xen``) answers the common calls; this plugin adds the PV MMU (mmu.py), the PV vCPU (cpu.py),
multicall, the PV memory_op commands, vcpu_op's runstate area, physdev_op, platform_op for dom0,
and the forced-emulation CPUID.  Consoles: dom0 writes with console_io; a domU gets -EPERM there
(it is not the console domain) and uses the console ring, drained on each event-channel notify;
with ``--xen-debug`` (Xen's debug builds) a domU may write with console_io too.  Grant frames
(``GrantTable``) are Xen's pages outside the domain's RAM, listed by setup_table and mappable.
The xenstore ring is answered by ``hvsim.xen.XenStore`` (its docstring lists the keys).
"""

from __future__ import annotations

import struct

from hvsim import Acceptance, Environment, InherentDifference, hookimpl
from hvsim.abi import xen as x
from hvsim.abi import xen_pv as pv
from hvsim.core.cpu import EntryState, Segment
from hvsim.core.errors import LoadError
from hvsim.core.layout import MemoryRange, MemoryType
from hvsim.xen import Continuation, HypercallError, XenHypervisor, XenStore
from hvsim.core.clock import TSC_HZ, WALLCLOCK_EPOCH_S
from hvsim.xen.grant_table import GrantTable
from hvsim.xen.pvclock import vcpu_time_info

from .builder import KERNEL_CS, build_domain, build_xen_area
from .cpu import KERNEL_CPL, PvCpu
from .ioports import XenPorts
from .memory import PAGE, DomainMemory
from .mmu import BATCH, PvMmu

ENV = "xen_pv"
DOMU_FEATURES = (1 << 5 | 1 << 6 | 1 << 7 | 1 << 13 | 1 << 17)  # preserve_ad highmem_assist gnttab_avail_bits vnode direct_mapped
CR0 = 0x8005_0033                          # PG AM WP NE ET MP PE
CR4 = 0x620                                # OSXMMEXCPT OSFXSR PAE
EFER = 0xD01                               # NXE LMA LME SCE
CODE64 = Segment(KERNEL_CS | KERNEL_CPL, 0xA9F, 0xFFFF_FFFF, 0)
NULL = Segment(0, 0, 0, 0)
KERNEL_SS_ENTRY = Segment(KERNEL_CPL, KERNEL_CPL << 5, 0, 0)   # NULL, DPL 1: VMRUN takes the CPL from SS
INT_N_OPCODE = b"\xcd"                     # int imm8 (SDM vol. 2A INT n)
# I/O memory Xen denies dom0 (dom0_setup_permissions): the I/O APIC's page (the MADT's, here the
# default) and the MSI address range (MSI_ADDR_BASE_LO and its destination-ID bits).
XEN_IOMEM = ((0xFEC0_0000, 0x1000), (0xFEE0_0000, 0x10_0000))
SHARED_INFO_WC_VERSION, SHARED_INFO_ARCH_MAX_PFN = 3072, 3088


@hookimpl
def hvsim_environments():
    return [Environment(ENV, "Xen PV 64-bit guest (domU, or dom0 with --dom0): XEN_ELFNOTE_ENTRY, "
                             "start_info in RSI, PV hypercalls")]


@hookimpl
def hvsim_inherent_differences(env):
    if env != ENV:
        return None
    return [
        InherentDifference("entry", "a PV kernel is entered at XEN_ELFNOTE_ENTRY, not the boot protocol's entry"),
        InherentDifference("memmap", "a PV domU's map is pseudo-physical: one RAM range of the configured "
                                     "size, as libxl gives it; dom0 reads the machine map, with the I/O "
                                     "memory Xen keeps from it (I/O APIC page, MSI range) reserved"),
        InherentDifference("module_addresses", "Xen's domain builder maps the initrd right after the kernel, "
                                               "at a virtual address"),
        InherentDifference("rsdp", "a PV domU has no ACPI (and dom0 finds it only by mapping machine memory)"),
        InherentDifference("acpi_tables", "a PV domU has no ACPI tables"),
        InherentDifference("hypervisor", "Xen announces itself at CPUID 0x40000000 (XenVMMXenVMM)"),
        InherentDifference("console", "a PV domU's console is the Xen console ring"),
        InherentDifference("console_channels", "dom0 writes with console_io, a domU to the console ring"),
        InherentDifference("stop_detail", "a Xen guest shuts down through SCHEDOP_shutdown"),
        InherentDifference("calls", "a PV guest makes hypercalls for its page tables, traps and console"),
        # what a PV kernel's userspace sees (hvsim's /init report)
        InherentDifference("userspace_memmap", "a PV kernel's firmware map is the one Xen gives it (a domU's "
                                               "pseudo-physical RAM)"),
        InherentDifference("userspace_iomem", "a PV kernel's RAM is the map Xen gives it, with no local APIC "
                                              "of its own"),
        InherentDifference("userspace_acpi_tables", "a PV domU has no ACPI tables"),
        InherentDifference("clocksource", "Xen's pvclock (the xen clocksource), which Linux prefers in a domU"),
        InherentDifference("clocksources", "Xen offers its pvclock beside the TSC"),
        InherentDifference("clockevent", "a Xen guest's timer is Xen's single-shot vCPU timer (VIRQ_TIMER)"),
        InherentDifference("userspace_hypervisor", "/sys/hypervisor names Xen and the PV guest type"),
        InherentDifference("userspace_boot_params", "a PV kernel starts from start_info; no boot loader "
                                                    "filled a setup header"),
        InherentDifference("userspace_consoles", "a PV guest's console is hvc0, the Xen console"),
        InherentDifference("userspace_cpu_flags", "Xen's PV CPUID policy (PSE, PGE, MTRR hidden; the hypervisor "
                                                  "bit set)"),
        InherentDifference("userspace_irqs", "a PV guest's interrupts are event channels (VIRQs, IPIs, xenbus), "
                                             "no I/O APIC"),
    ]


@hookimpl
def hvsim_add_options(parser):
    parser.add_argument("--dom0", action="store_true", default=None,
                        help="xen_pv: boot as the initial domain (SIF_INITDOMAIN, console_io, the "
                             "machine memory map, ACPI) instead of a domU")
    parser.add_argument("--xen-debug", action="store_true", default=None,
                        help="xen_pv, xen_pvh: behave as a debug build of Xen, which lets a domU write to "
                             "Xen's console with console_io (release builds refuse a PV domU: -EPERM)")


@hookimpl
def hvsim_accepts(env, image):
    if env != ENV:
        return None
    try:
        elf, notes, entry = pv_elf(image)
    except LoadError as exc:
        return Acceptance.no(str(exc))
    where = "payload ELF" if image.elf is None else "ELF"
    return Acceptance.yes(f"pv: {where} ({notes.source}) at VIRT_BASE {notes.effective_virt_base:#x}, "
                          f"entered at {entry:#x}")


def pv_elf(image):
    """The PV kernel's ELF, its Xen notes and entry, or LoadError saying why Xen would refuse it."""
    entry = image.entry("xen_pv")
    if entry is None:
        why = image.payload_error if image.bzimage is not None else None
        raise LoadError(f"{image.name}: no Xen PV notes (ELF notes or __xen_guest)" + (f" ({why})" if why else ""))
    elf = image.payload_elf() if entry.in_payload else image.elf
    notes = elf.xen_notes
    problems = notes.pv_problems()
    if problems:
        raise LoadError(f"{image.name}: Xen refuses it as a PV kernel: " + "; ".join(problems))
    if elf.elf_class != 64:
        raise LoadError(f"{image.name}: a {elf.elf_class}-bit PV kernel; hvsim boots 64-bit PV guests only")
    loads = [s for s in elf.segments if s.memsz]
    if not loads:
        raise LoadError(f"{image.name}: the PV ELF has no PT_LOAD segment")
    offset = notes.effective_virt_base - notes.effective_paddr_offset
    kstart = min(s.paddr for s in loads) + offset
    kend = max(s.paddr + s.memsz for s in loads) + offset
    if not kstart <= entry.address <= kend:
        raise LoadError(f"{image.name}: the PV entry {entry.address:#x} lies outside the kernel "
                        f"[{kstart:#x}, {kend:#x}]")
    if notes.init_p2m is not None and kstart <= notes.init_p2m < kend:
        raise LoadError(f"{image.name}: INIT_P2M {notes.init_p2m:#x} overlaps the kernel")
    return elf, notes, entry.address


class PvDomain:
    """One PV domain's run-time state: its memory, the hypervisor, its MMU and its vCPU."""

    def __init__(self, xen: XenHypervisor, dom: DomainMemory, mmu: PvMmu, cpu: PvCpu, dom0: bool, layout):
        self.xen, self.dom, self.mmu, self.cpu, self.dom0, self.layout = xen, dom, mmu, cpu, dom0, layout


@hookimpl
def hvsim_setup(machine, image, config, options):
    elf, notes, entry = pv_elf(image)
    dom0 = bool(options.get("dom0"))
    domid = 0 if dom0 else 1
    # A PV guest takes Xen's events, not interrupts: no local APIC, I/O APIC, 8259 or PIT of its own.
    if dom0:
        machine.attach_pc_devices(interrupts=None)
    else:
        machine.attach_pc_devices(acpi_tables=False, interrupts=None)   # a PV domU has no ACPI, no firmware
    if dom0:       # the machine's RAM; firmware and I/O memory stay the machine's (identity-mapped by dom0)
        dom = DomainMemory(machine, [(r.start, r.size) for r in machine.layout.ram()])
        memory_map = list(machine.layout.memory_map)
    else:          # every backed frame: pseudo-physical RAM of the configured size, one E820 entry (libxl)
        dom = DomainMemory(machine, list(machine.layout.backed))
        memory_map = [MemoryRange(0, dom.nr_pages * PAGE, MemoryType.RAM)]
    area = build_xen_area(dom)
    initrd = config.initrd.read_bytes() if config.initrd is not None else None
    layout = build_domain(machine, dom, area, elf, notes, entry=entry, initrd=initrd,
                          cmdline=config.cmdline_bytes(), dom0=dom0, hypercall_page=notes.hypercall_page,
                          shared_info_ma=area.shared_info)
    features = DOMU_FEATURES | (1 << x.XENFEAT_dom0 if dom0 else 0)
    xen = XenHypervisor(machine, memory_map=memory_map, features=features,
                        console_page=None if dom0 else layout.console_mfn * PAGE,
                        store_page=None if dom0 else layout.store_mfn * PAGE, domid=domid,
                        console_io=dom0, capabilities="xen-3.0-x86_64",
                        debug_build=bool(options.get("xen_debug")))
    if not dom0 and (xen.params[x.HVM_PARAM_STORE_EVTCHN], xen.params[x.HVM_PARAM_CONSOLE_EVTCHN]) != (1, 2):
        raise LoadError("internal: xenstore/console event channels are not 1 and 2 as start_info says")
    if not dom0:
        xen.store = XenStore(machine, layout.store_mfn * PAGE, domid=domid, config=config,
                             memory_kib=dom.nr_pages * PAGE >> 10, console=(layout.console_mfn, 2))
    xen.unregister(34)                                       # hvm_op: not for PV guests
    # A PV domain's grant frames are Xen's pages outside its RAM; setup_table lists their MFNs.
    xen.grants = GrantTable(machine.memory, allocate=dom.private_page)
    _init_shared_info(machine, xen, area.shared_info, dom)
    mmu = PvMmu(machine, dom, area, xen, dom0=dom0, domid=domid)
    mmu.pinned[layout.l4 // PAGE] = 4                      # libxc pins the bootstrap L4 before boot
    mmu.adopt(layout.l4 // PAGE, 4)
    cpu = PvCpu(machine, dom, area, xen)
    cpu.mmu = mmu
    pm = {type(d).__name__: d for d in machine.ports.devices.values()}.get("AcpiPm")
    cpu.ports = XenPorts(dom0=dom0, pm_timer=pm.tmr_port if pm is not None else None)
    xen.deliver_upcall = cpu.upcall_raised          # events reach the guest's event callback
    machine.interrupt_source = cpu
    machine.traps.set_port_policy(cpu.port_access)     # virtual IOPL and I/O bitmap (cpu.py)
    domain = PvDomain(xen, dom, mmu, cpu, dom0, layout)
    machine.plugin_state[ENV] = domain
    _register(domain)
    if layout.hypercall_page is not None:
        page = dom.mfn((layout.hypercall_page - layout.virt_base) // PAGE) * PAGE
        machine.write_code(page, hypercall_page())

    for name in ("rax", "rbx", "rcx", "rdx", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        machine.set_reg(name, 0)
    machine.set_reg("rsi", layout.start_info)
    machine.start(EntryState(rip=entry, cr0=CR0, cs=CODE64, ds=NULL, ss=KERNEL_SS_ENTRY, es=NULL,
                             gdt=(pv.PERDOMAIN_VIRT_START, pv.GDT_LIMIT), cr3=layout.l4, cr4=CR4, efer=EFER,
                             rsp=layout.stack_top, rflags=0x202))
    kind = "dom0" if dom0 else f"domU {domid}"
    return (f"pv {kind} at {entry:#x}, start_info at {layout.start_info:#x}, {dom.nr_pages} pages, "
            f"bootstrap [{layout.virt_base:#x}, {layout.v_end:#x})")


def _init_shared_info(machine, xen: XenHypervisor, address: int, dom: DomainMemory) -> None:
    """shared_info as Xen's builder leaves it: every upcall masked, a valid pvclock for vCPU 0 (the
    guest's rdtsc reads guest time, a 1 GHz TSC), the wallclock at guest time 0 (the machine's
    fixed epoch, so runs are repeatable), max_pfn."""
    xen.place_shared_info(address)
    now_ns = machine.guest_ns()
    machine.memory.write(address + 32, vcpu_time_info(now_ns, now_ns, TSC_HZ))
    now = WALLCLOCK_EPOCH_S * 10**9
    machine.memory.write(address + SHARED_INFO_WC_VERSION, struct.pack("<IIII", 2, now // 10**9 & 0xFFFF_FFFF,
                                                                       now % 10**9, now // 10**9 >> 32))
    machine.memory.write_u64(address + SHARED_INFO_ARCH_MAX_PFN, dom.nr_pages)


def hypercall_page() -> bytes:
    """Xen's 64-bit PV hypercall page (pv/hypercall.c): push rcx; push r11; mov $nr,%eax; syscall;
    pop r11; pop rcx; ret -- and for iret: push rcx; push r11; push rax; mov $23,%eax; syscall."""
    page = bytearray(b"\xcc" * PAGE)
    for nr in range(PAGE // 32):
        if nr == pv.HYPERCALL_IRET:
            stub = b"\x51\x41\x53\x50\xb8" + struct.pack("<I", nr) + b"\x0f\x05"
        else:
            stub = b"\x51\x41\x53\xb8" + struct.pack("<I", nr) + b"\x0f\x05\x41\x5b\x59\xc3"
        page[nr * 32:nr * 32 + len(stub)] = stub
    return bytes(page)


def _register(d: PvDomain) -> None:
    xen, mmu, cpu = d.xen, d.mmu, d.cpu
    for nr, handler in {
        0: cpu.set_trap_table, 1: mmu.mmu_update, 2: cpu.set_gdt, 3: cpu.stack_switch,
        4: cpu.set_callbacks, 5: cpu.fpu_taskswitch, 8: cpu.set_debugreg, 9: cpu.get_debugreg,
        10: cpu.update_descriptor, 13: lambda a, info: _multicall(d, a, info), 14: mmu.update_va_mapping,
        21: cpu.vm_assist, 25: cpu.set_segment_base, 26: mmu.mmuext_op,
        23: cpu.iret, 30: cpu.callback_op, 33: cpu.physdev_op,
        12: lambda a, info: _memory_op(d, a, info), 24: lambda a, info: _vcpu_op(d, a, info),
        7: lambda a, info: _platform_op(d, a, info),
    }.items():
        xen.register(nr, handler)


def _multicall(d: PvDomain, a, info) -> int:
    entries, count = a[0], a[1] & 0xFFFF_FFFF
    info["count"] = count
    mem = d.xen.m.vmem
    for i in range(count):
        if i == BATCH and d.xen.preemptible:       # Xen continues a long list (do_multicall)
            raise Continuation((entries + 64 * i, count - i))
        at = entries + 64 * i
        op, _result, *args = struct.unpack(pv.MULTICALL_ENTRY_FORMAT, mem.read(at, 64))
        if op in (pv.HYPERCALL_IRET, x.HYPERCALL_NUMBERS["multicall"]):
            result = -x.EINVAL
        else:
            result = d.xen.dispatch(op, tuple(args[:5]))
            resume = d.xen.continuation
            if resume is not None:
                # The entry did part of its work (a long mmu_update): as Xen's do_multicall, its
                # arguments are updated in place and the multicall continues from this entry,
                # so the guest re-executes it and the run loop regains control in between.
                mem.write(at + 16, struct.pack(f"<{len(resume)}Q", *resume))
                raise Continuation((at, count - i))
        mem.write(at + 8, struct.pack("<q", result))
    return 0


EXCHANGE_BATCH = 1024     # input extents per entry into XENMEM_exchange before a continuation


def _memory_op(d: PvDomain, a, info) -> int:
    cmd, arg = a[0] & x.MEMOP_CMD_MASK, a[1]
    mem = d.xen.m.vmem
    if cmd == pv.XENMEM_machphys_mapping:
        info["op"] = "machphys_mapping"
        mem.write(arg, struct.pack(pv.MACHPHYS_MAPPING_FORMAT, pv.MACH2PHYS_VIRT_START, d.dom.m2p_virt_end(),
                                   d.dom.max_mfn))
        return 0
    if cmd == pv.XENMEM_machphys_mfn_list:
        info["op"] = "machphys_mfn_list"
        max_extents, handle, _ = struct.unpack(pv.MACHPHYS_MFN_LIST_FORMAT, mem.read(arg, 20))
        chunks = [(d.dom.m2p_base + i * (2 << 20)) // PAGE for i in range(d.dom.m2p_size // (2 << 20))]
        chunks = chunks[:max_extents]
        mem.write(handle, struct.pack(f"<{len(chunks)}Q", *chunks))
        mem.write(arg + 16, struct.pack("<I", len(chunks)))
        info["extents"] = len(chunks)
        return 0
    if cmd == x.XENMEM_machine_memory_map:
        info["op"] = "machine_memory_map"
        if not d.dom0:
            raise HypercallError(x.EPERM, "the machine memory map is for the initial domain")
        return d.xen.write_memory_map(arg, machine_memory_map(d.xen.memory_map), info)
    if cmd == x.XENMEM_add_to_physmap:
        info["op"] = "add_to_physmap"
        raise HypercallError(x.ENOSYS, "auto-translated physmap is not a PV interface")
    if cmd == pv.XENMEM_exchange:
        info["op"] = "exchange"
        if _exchange(d, arg, info):
            raise Continuation(a)          # nr_exchanged in the struct says where to go on
        return 0
    return d.xen.memory_op(a, info)


def machine_memory_map(memory_map) -> list[tuple[int, int, int]]:
    """XENMEM_machine_memory_map (arch/x86/mm.c): the machine's E820 with, as reserved, the I/O
    memory Xen keeps from dom0 that lies in its holes (handle_iomem_range over dom0's iomem_caps):
    the I/O APIC's page and the MSI range where local APICs answer (dom0_build.c
    dom0_setup_permissions)."""
    entries = [(r.start, r.size, int(r.type)) for r in memory_map]
    for start, size in XEN_IOMEM:
        if not any(s < start + size and start < s + n for s, n, _ in entries):
            entries.append((start, size, int(MemoryType.RESERVED)))
    return sorted(entries)


def _exchange(d: PvDomain, arg: int, info) -> bool:
    """XENMEM_exchange (common/memory.c memory_exchange), as Linux's xen_create_contiguous_region
    uses it: the domain gives extents of its frames (their MFNs) and receives extents of
    ``out.extent_order`` machine-contiguous frames below ``2**address_bits``, whose MFNs are written
    over the pfns it listed, the M2P pointing them at those pfns.  hvsim's domain owns fixed frames
    and Xen keeps no free pool here: an output extent is the input frames themselves when they are
    already contiguous and below the limit, else -ENOMEM, Xen's answer when it finds no block.  (Xen's
    buddy allocator would also align the block to its size; a domain's pfn-aligned frames are not
    machine-aligned past the first memory-map hole, so that is not required.)  ``nr_exchanged``
    counts the input extents done, as on Xen, and says where a continued call goes on (True: a
    batch is done and more remains, as Xen's hypercall_preempt_check)."""
    mem = d.xen.m.vmem
    raw = mem.read(arg, pv.MEMORY_EXCHANGE_SIZE)
    in_start, in_nr, in_order, _in_flags, in_dom = struct.unpack_from(pv.MEMORY_RESERVATION_FORMAT, raw, 0)
    out_start, out_nr, out_order, out_flags, out_dom = struct.unpack_from(pv.MEMORY_RESERVATION_FORMAT, raw, 32)
    (done,) = struct.unpack_from("<Q", raw, 64)
    info.update(nr_in=in_nr, in_order=in_order, nr_out=out_nr, out_order=out_order, address_bits=out_flags & 0xFF)
    if x.DOMID_SELF not in (in_dom, out_dom) or in_dom != out_dom:
        raise HypercallError(x.EPERM, "only a domain's own memory is exchanged here")
    if max(in_order, out_order) > pv.MAX_EXCHANGE_ORDER or in_nr << in_order != out_nr << out_order:
        raise HypercallError(x.EINVAL, "the input and output sizes differ, or an order is too large")
    block = 1 << max(in_order, out_order)          # pages handled together: whole extents on both sides
    ins, outs, out_pages = block >> in_order, block >> out_order, 1 << out_order
    limit = 1 << max((out_flags & 0xFF) - 12, 0) if out_flags & 0xFF else None
    batch_end = done + EXCHANGE_BATCH
    try:
        while done + ins <= in_nr:
            if done >= batch_end and d.xen.preemptible:
                return True
            frames = []
            for k in range(ins):
                (mfn,) = struct.unpack("<Q", mem.read(in_start + 8 * (done + k), 8))
                frames.extend(range(mfn, mfn + (1 << in_order)))
            if not all(d.dom.owns(f) for f in frames):
                raise HypercallError(x.EINVAL, "an input frame is not the domain's")
            first_out = (done << in_order) >> out_order
            extents = [frames[k * out_pages:(k + 1) * out_pages] for k in range(outs)]
            for extent in extents:
                first = extent[0]
                if extent != list(range(first, first + out_pages)) or (limit is not None and first + out_pages > limit):
                    raise HypercallError(x.ENOMEM, f"no {out_pages}-frame block below the address limit "
                                                   "(hvsim's Xen returns only contiguous input frames)")
            for k, extent in enumerate(extents):
                (pfn,) = struct.unpack("<Q", mem.read(out_start + 8 * (first_out + k), 8))
                for n, frame in enumerate(extent):
                    d.dom.set_m2p(frame, pfn + n)
                mem.write(out_start + 8 * (first_out + k), struct.pack("<Q", extent[0]))
            done += ins
    finally:
        mem.write(arg + 64, struct.pack("<Q", done))
        info["nr_exchanged"] = done
    return False


def _vcpu_op(d: PvDomain, a, info) -> int:
    return d.xen.vcpu_op(a, info)


def _platform_op(d: PvDomain, a, info) -> int:
    mem = d.xen.m.vmem
    if not d.dom0:
        info["op"] = "denied"
        raise HypercallError(x.EPERM, "platform_op is for the initial domain")
    cmd, version = struct.unpack(pv.PLATFORM_OP_HEADER_FORMAT, mem.read(a[0], 8))
    if version != pv.XENPF_INTERFACE_VERSION:
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.EACCES, f"interface version {version:#x}")
    if cmd == pv.XENPF_firmware_info:
        kind, index = struct.unpack(pv.FIRMWARE_INFO_FORMAT, mem.read(a[0] + 8, 8))
        info.update(op="firmware_info", type=kind, index=index)
        if kind == pv.XEN_FW_KBD_SHIFT_FLAGS:
            mem.write(a[0] + 16, b"\0")
            return 0
        if kind in (pv.XEN_FW_DISK_INFO, pv.XEN_FW_DISK_MBR_SIGNATURE, pv.XEN_FW_VBEDDC_INFO):
            raise HypercallError(x.ESRCH, "no such firmware record (no disks, no VBE)")
        raise HypercallError(x.EINVAL, f"firmware info type {kind}")
    if cmd in (pv.XENPF_settime32, pv.XENPF_settime64):
        if cmd == pv.XENPF_settime32:
            secs, nsecs, system_time = struct.unpack(pv.SETTIME32_FORMAT, mem.read(a[0] + 8, 16))
            mbz = 0
        else:
            secs, nsecs, mbz, system_time = struct.unpack(pv.SETTIME64_FORMAT, mem.read(a[0] + 8, 24))
        info.update(op="settime32" if cmd == pv.XENPF_settime32 else "settime64", secs=secs, nsecs=nsecs,
                    system_time=system_time)
        if mbz:
            raise HypercallError(x.EINVAL, "settime64's mbz field is not zero")
        d.xen.set_wallclock(secs, nsecs, system_time)
        return 0
    if cmd == pv.XENPF_get_cpuinfo:
        # platform_hypercall.c: the physical CPUs are the machine's (the MADT's processor UID = APIC
        # ID = index, all online); a CPU that is not present is flagged invalid, the rest left as given.
        (cpu,) = struct.unpack("<I", mem.read(a[0] + 8, 4))
        present = d.xen.m.config.smp
        info.update(op="get_cpuinfo", cpu=cpu)
        if cpu < present:
            mem.write(a[0] + 8, struct.pack(pv.PCPUINFO_FORMAT, cpu, present - 1, pv.XEN_PCPU_FLAGS_ONLINE, cpu, cpu))
        else:
            mem.write(a[0] + 12, struct.pack("<II", present - 1, pv.XEN_PCPU_FLAGS_INVALID))
        return 0
    info["op"] = f"cmd_{cmd}"
    raise HypercallError(x.ENOSYS)


# -- the run ------------------------------------------------------------------------------------------
def _domain(machine) -> PvDomain | None:
    return machine.plugin_state.get(ENV)


@hookimpl
def hvsim_cpuid(machine, leaf, subleaf):
    d = _domain(machine)
    return d.cpu.cpuid(leaf, subleaf) if d is not None else None


@hookimpl
def hvsim_trap(machine, trap):
    d = _domain(machine)
    if d is None:
        return None
    if trap.kind == "syscall" and not d.cpu.kernel_mode:     # user space's system call, not a hypercall
        d.cpu.user_syscall(trap.rip)
        if machine.stop_reason is None:
            d.cpu.deliver_event()
        return True
    if trap.kind == "int" and not d.cpu.kernel_mode and trap.code[:1] == INT_N_OPCODE:
        d.cpu.user_software_interrupt(trap.vector, trap.rip, trap.length)
        return True
    if trap.kind == "syscall":
        nr, *args = machine.regs("rax", "rdi", "rsi", "rdx", "r10", "r8")
        registers = ("rdi", "rsi", "rdx", "r10", "r8")
        result = d.xen.dispatch(nr, tuple(args), rip=trap.rip)
        if nr == pv.HYPERCALL_IRET:              # the frame it popped set RAX and RIP
            d.cpu.deliver_event()                # Xen's return path: pending events go out now
            return True
        if d.xen.continuation is not None:      # re-execute the syscall with the rest of the work
            for reg, value in zip(registers, d.xen.continuation):
                machine.set_reg(reg, value)
            machine.set_rip(trap.rip)
            return True
        machine.set_reg("rax", result & 0xFFFF_FFFF_FFFF_FFFF)
        if machine.reg("rip") == trap.rip:
            machine.set_rip(trap.rip + 2)
        if machine.stop_reason is None:
            d.cpu.deliver_event()                # Xen's return path: pending events go out now
        return True
    if trap.kind == "invalid-opcode" and trap.code.startswith(pv.XEN_EMULATE_PREFIX + pv.CPUID_INSN):
        d.cpu.emulated_cpuid(trap.rip)
        return True
    return None


@hookimpl
def hvsim_exception(machine, exception):
    d = _domain(machine)
    if d is None:
        return None
    return d.mmu.emulate_pt_write(exception) or d.cpu.bounce(exception)


@hookimpl
def hvsim_finish(machine, result):
    d = _domain(machine)
    if d is None:
        return None
    return {"hypercalls": d.xen.calls, "pinned_tables": len(d.mmu.pinned), "tlb_flushes": d.mmu.flushes,
            "bounced_exceptions": d.cpu.bounces, "event_upcalls": d.cpu.upcalls,
            "user_entries": d.cpu.user_entries, "user_syscalls": d.cpu.user_syscalls, "nr_pages": d.dom.nr_pages, "dom0": d.dom0,
            "privileged_ops_emulated": d.cpu.privops.emulated,
            "ports_answered_by_xen": {f"{port:#x}": n for port, n in sorted(d.cpu.ports.answered.items())}}
