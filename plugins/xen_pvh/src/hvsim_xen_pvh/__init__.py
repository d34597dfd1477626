"""hvsim environment ``xen_pvh``: a Xen PVH (HVMLite) domU booted at ``XEN_ELFNOTE_PHYS32_ENTRY``.

Loading, as Xen's domain builder does (xen-abi.md §2; tools/libs/guest/xg_dom_x86.c):
- the ELF's PT_LOADs at ``p_paddr`` (a bzImage: its payload ELF's);
- the initrd after the image, page-aligned; then the start-info block, page-aligned: ``struct
  hvm_start_info`` (version 1 by default; ``--start-info-version 0`` gives Xen's PVH dom0 form, with
  no memory map, so the guest must ask ``XENMEM_memory_map``), the command line, the module list
  (module 0 = the initrd) and the memory map (the ``MachineConfig``'s E820 layout), all below 4 GiB;
- ``rsdp_paddr``: the ACPI tables the core builds in the BIOS area (which is also where a guest
  that ignores ``rsdp_paddr`` finds them by scanning).

Entry state (§2.1, as Xen loads it): 32-bit protected mode, paging off, CR0 = PE|ET, CR4 = 0, EFER
= 0, CS base 0 limit 4 GiB attributes 0xc9b, DS/ES/SS attributes 0xc93, TR a busy 32-bit TSS (base
0, limit 0x67), selectors 0, no GDT, no IDT, no stack (RSP = 0), EBX = the start info, IF = 0.

The hypervisor (``hvsim.xen.XenHypervisor``): CPUID leaves 0x40000000-0x40000005 ("XenVMMXenVMM",
Xen 4.17, hypercall MSR 0x40000000); a write of that MSR fills the page it names with ``vmcall`` or
``vmmcall`` stubs, whichever the CPU vendor the guest sees calls for; ``vmcall`` and ``vmmcall``
are answered wherever they execute (Linux >= 6.13 and its XSA-466 backports have no hypercall
page).  Hypercalls from CPL > 0 get -EPERM.  The PV console ring and the xenstore page sit in the
reserved BIOS area (real Xen uses pfns 0xfeffc and 0xfefff; any pfn the HVM parameters name is the
ABI), so the memory map stays the configured one.  PC devices as on bare metal (COM1, 0xE9, ACPI
PM1a, the exit port, reset).
"""

from __future__ import annotations

import struct

from hvsim import Acceptance, Environment, InherentDifference, hookimpl
from hvsim.abi import xen as x
from hvsim.core.cpu import CR0_ET, CR0_PE, EntryState, Segment
from hvsim.core.errors import LoadError
from hvsim.core.layout import FOUR_GIB
from hvsim.xen import HypercallError, XenHypervisor

ENV = "xen_pvh"
PAGE = 0x1000
STORE_PAGE = 0xFC000                  # in the reserved BIOS area (the ACPI tables use its start)
CONSOLE_PAGE = 0xFD000
FEATURES = (1 << x.XENFEAT_writable_page_tables | 1 << x.XENFEAT_auto_translated_physmap
            | 1 << x.XENFEAT_hvm_callback_vector)
CODE32 = Segment(0, 0xC9B, 0xFFFF_FFFF, 0)
DATA32 = Segment(0, 0xC93, 0xFFFF_FFFF, 0)
TSS32_BUSY = (0, 0, 0x67, 0x8B << 8)   # (selector, base, limit, engine descriptor flags)


@hookimpl
def hvsim_environments():
    return [Environment(ENV, "Xen PVH domU: XEN_ELFNOTE_PHYS32_ENTRY, hvm_start_info in EBX, Xen hypercalls")]


@hookimpl
def hvsim_inherent_differences(env):
    if env != ENV:
        return None
    return [
        InherentDifference("entry", "PVH enters at XEN_ELFNOTE_PHYS32_ENTRY, not the boot protocol's entry"),
        InherentDifference("entry_mode", "PVH enters in 32-bit protected mode with paging off"),
        InherentDifference("module_addresses", "Xen's domain builder puts modules right after the kernel; "
                                               "a boot loader puts the initrd high"),
        InherentDifference("hypervisor", "Xen announces itself at CPUID 0x40000000 (XenVMMXenVMM)"),
        InherentDifference("console_channels", "a Xen guest has the console_io hypercall console"),
        InherentDifference("stop_detail", "a Xen guest shuts down through SCHEDOP_shutdown"),
        InherentDifference("calls", "a Xen guest makes hypercalls (and writes the hypercall-page MSR)"),
    ]


@hookimpl
def hvsim_add_options(parser):
    parser.add_argument("--start-info-version", type=int, choices=(0, 1), default=None,
                        help="xen_pvh: hvm_start_info version (1: with the memory map, as libxc builds "
                             "it; 0: without, as Xen's PVH dom0 builder does). Default 1")


@hookimpl
def hvsim_accepts(env, image):
    if env != ENV:
        return None
    try:
        elf, entry = _pvh_elf(image)
    except LoadError as exc:
        return Acceptance.no(str(exc))
    where = "payload ELF" if image.elf is None else "ELF"
    return Acceptance.yes(f"pvh: {where} PT_LOADs at p_paddr, entered at PHYS32_ENTRY {entry:#x}")


def _pvh_elf(image):
    entry = image.entry("xen_pvh")
    if entry is None:
        why = image.payload_error if image.bzimage is not None else None
        raise LoadError(f"{image.name}: no XEN_ELFNOTE_PHYS32_ENTRY note" + (f" ({why})" if why else ""))
    elf = image.payload_elf() if entry.in_payload else image.elf
    if not elf.segments:
        raise LoadError(f"{image.name}: the PVH ELF has no PT_LOAD segment")
    start, end = elf.phys_range
    if not start <= entry.address < end:
        raise LoadError(f"{image.name}: PHYS32_ENTRY {entry.address:#x} lies outside the image "
                        f"[{start:#x}, {end:#x})")
    return elf, entry.address


@hookimpl
def hvsim_setup(machine, image, config, options):
    elf, entry = _pvh_elf(image)
    version = options.get("start_info_version")
    version = 1 if version is None else int(version)
    if version not in (0, 1):
        raise LoadError(f"start info version {version}: Xen defines 0 and 1")
    machine.attach_pc_devices()
    kernel_end = _load(machine, image, elf)
    cursor = _page_up(kernel_end)
    initrd = None
    if config.initrd is not None:
        data = config.initrd.read_bytes()
        _need_ram(machine, cursor, len(data), f"initrd {config.initrd} ({len(data)} bytes)")
        machine.memory.write(cursor, data)
        initrd = (cursor, len(data))
        cursor = _page_up(cursor + len(data))
    start_info = _write_start_info(machine, cursor, version, initrd, config.cmdline_bytes())

    xen = XenHypervisor(machine, memory_map=guest_memory_map(machine), features=FEATURES,
                        console_page=CONSOLE_PAGE, store_page=STORE_PAGE)
    machine.plugin_state[ENV] = xen
    for name in ("rax", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        machine.set_reg(name, 0)
    machine.set_reg("rbx", start_info)
    machine.start(EntryState(rip=entry, cr0=CR0_PE | CR0_ET, cs=CODE32, ds=DATA32, gdt=(0, 0), rsp=0,
                             tr=TSS32_BUSY))
    return f"pvh at {entry:#x}, hvm_start_info v{version} at {start_info:#x}"


def guest_memory_map(machine) -> list:
    """The memory map the guest is given, by the start info and by XENMEM_memory_map alike: the
    MachineConfig's E820 layout."""
    return list(machine.layout.memory_map)


def _page_up(value: int) -> int:
    return (value + PAGE - 1) & ~(PAGE - 1)


def _need_ram(machine, address: int, size: int, what: str) -> None:
    if address + size > FOUR_GIB or not machine.layout.is_ram(address, max(size, 1)):
        raise LoadError(f"{what} does not fit in RAM below 4 GiB at {address:#x}-{address + size:#x} "
                        f"({machine.config.memory >> 20} MiB configured)")


def _load(machine, image, elf) -> int:
    for seg in elf.segments:
        if seg.memsz == 0:
            continue
        if not machine.layout.is_ram(seg.paddr, seg.memsz):
            raise LoadError(f"{image.name}: PT_LOAD at p_paddr {seg.paddr:#x}-{seg.paddr + seg.memsz:#x} "
                            f"is not RAM in the {machine.config.memory >> 20} MiB memory map")
        machine.memory.write(seg.paddr, seg.data)
        if seg.memsz > len(seg.data):
            machine.memory.fill(seg.paddr + len(seg.data), seg.memsz - len(seg.data))
    return max(s.paddr + s.memsz for s in elf.segments)


def _write_start_info(machine, at: int, version: int, initrd, cmdline: bytes) -> int:
    """The start-info block at ``at`` as libxc lays it out: header, command line, module list,
    memory map.  Returns the header's address."""
    header_size = struct.calcsize(x.HVM_START_INFO_V1_FORMAT)
    cmdline_at = at + header_size
    modlist_at = (cmdline_at + len(cmdline) + 1 + 7) & ~7
    nr_modules = 1 if initrd else 0
    memmap_at = modlist_at + nr_modules * struct.calcsize(x.HVM_MODLIST_ENTRY_FORMAT)
    ranges = guest_memory_map(machine)
    end = memmap_at + (len(ranges) * struct.calcsize(x.HVM_MEMMAP_ENTRY_FORMAT) if version >= 1 else 0)
    _need_ram(machine, at, end - at, "the start info block")
    machine.memory.write(cmdline_at, cmdline + b"\0")
    if initrd:
        machine.memory.write(modlist_at, struct.pack(x.HVM_MODLIST_ENTRY_FORMAT, initrd[0], initrd[1], 0, 0))
    rsdp = machine.acpi_tables.rsdp_address if machine.acpi_tables else 0
    fields = (x.HVM_START_MAGIC, version, 0, nr_modules, modlist_at if initrd else 0, cmdline_at, rsdp)
    if version >= 1:
        machine.memory.write(memmap_at, b"".join(struct.pack(x.HVM_MEMMAP_ENTRY_FORMAT, r.start, r.size, int(r.type), 0)
                                                 for r in ranges))
        header = struct.pack(x.HVM_START_INFO_V1_FORMAT, *fields, memmap_at, len(ranges), 0)
    else:
        header = struct.pack(x.HVM_START_INFO_FORMAT, *fields).ljust(header_size, b"\0")
    machine.memory.write(at, header)
    return at


# -- the hypervisor at run time ----------------------------------------------------------------------
def _xen(machine) -> XenHypervisor | None:
    return machine.plugin_state.get(ENV)


@hookimpl
def hvsim_cpuid(machine, leaf, subleaf):
    xen = _xen(machine)
    return xen.cpuid(leaf, subleaf) if xen is not None else None


def _vendor_amd(machine) -> bool:
    _, b, c, d = machine.guest_cpuid(0)
    return struct.pack("<3I", b, d, c) in (b"AuthenticAMD", b"HygonGenuine")


@hookimpl
def hvsim_msr(machine, access):
    xen = _xen(machine)
    if xen is None or access.index != x.HYPERCALL_PAGE_MSR:
        return None
    if not access.write:
        return 0                              # Xen: reads of the hypercall MSR return 0
    address, index = access.value & ~0xFFF, access.value & 0xFFF
    if index != 0 or not machine.layout.is_ram(address, PAGE):
        machine.note(f"xen_pvh: hypercall-page MSR written with {access.value:#x}: "
                     + ("page index must be 0" if index else "not a page of guest RAM") + "; #GP")
        return None
    machine.write_code(address, xen.hypercall_page(_vendor_amd(machine)))
    return True


@hookimpl
def hvsim_trap(machine, trap):
    xen = _xen(machine)
    if xen is None or trap.kind != "invalid-opcode" or trap.code[:3] not in (x.VMCALL, x.VMMCALL):
        return None
    long_mode = machine.code_segment()[1] == 64      # Xen picks the ABI from the caller's mode
    if long_mode:
        nr = machine.reg("rax")
        args = tuple(machine.reg(r) for r in ("rdi", "rsi", "rdx", "r10", "r8"))
    else:
        nr = machine.reg("rax") & 0xFFFF_FFFF
        args = tuple(machine.reg(r) & 0xFFFF_FFFF for r in ("rbx", "rcx", "rdx", "rsi", "rdi"))
    cpl = machine.cpl()
    deny = HypercallError(x.EPERM, f"from CPL {cpl}") if cpl else None
    result = xen.dispatch(nr, args, rip=trap.rip, compat=not long_mode, deny=deny)
    machine.set_reg("rax", result & (0xFFFF_FFFF_FFFF_FFFF if long_mode else 0xFFFF_FFFF))
    machine.set_rip(trap.rip + 3)
    return True
