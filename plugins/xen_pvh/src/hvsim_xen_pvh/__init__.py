"""hvsim environment ``xen_pvh``: a Xen PVH (HVMLite) domU booted at ``XEN_ELFNOTE_PHYS32_ENTRY``.

Loading and entry state as Xen's domain builder does them (``hvsim.pvh``): the PT_LOADs at
``p_paddr``, the initrd after the image, then the start-info block (version 1 by default;
``--start-info-version 0`` gives Xen's PVH dom0 form, with no memory map, so the guest must ask
``XENMEM_memory_map``) with ``rsdp_paddr`` naming the ACPI tables the core builds in the BIOS area
(where a guest that ignores ``rsdp_paddr`` finds them by scanning); 32-bit protected mode, paging
off, EBX = the start info.

The hypervisor (``hvsim.xen.XenHypervisor``): CPUID leaves 0x40000000-0x40000005 ("XenVMMXenVMM",
Xen 4.17, hypercall MSR 0x40000000); a write of that MSR fills the page it names with ``vmcall`` or
``vmmcall`` stubs, whichever the CPU vendor the guest sees calls for; ``vmcall`` and ``vmmcall``
are answered wherever they execute (Linux >= 6.13 and its XSA-466 backports have no hypercall
page).  Hypercalls from CPL > 0 get -EPERM.  The PV console ring and the xenstore page sit in the
reserved BIOS area (real Xen uses pfns 0xfeffc and 0xfefff; any pfn the HVM parameters name is the
ABI), so the memory map stays the configured one.  PC devices as on bare metal (COM1, 0xE9, ACPI
PM1a, the exit port, reset).  The HPET and I/O APIC windows read all ones and drop writes, as Xen's
null MMIO handler answers a PVH domU (``unclaimed_mmio``).  CPUID faulting as Xen offers it to every
HVM guest (``hvsim.xen.msr_policy``).

``--xen-debug``: a debug build of Xen booted with ``hvm_fep``: ``ud2; .ascii "xen"`` before an
instruction (the forced emulation prefix) makes Xen emulate it; hvsim steps over the prefix and
the CPU executes it (what Xen's emulator must match).  Without it the prefix is #UD, as on a
release build.  (console_io is allowed to the PVH domain with or without it.)
"""

from __future__ import annotations

import struct

from unicorn import x86_const

from hvsim import Acceptance, Environment, InherentDifference, hookimpl, pvh
from hvsim.abi import xen as x
from hvsim.abi.xen_pv import XEN_EMULATE_PREFIX
from hvsim.core.errors import LoadError
from hvsim.xen import HypercallError, XenHypervisor, XenStore
from hvsim.xen.hvm_upcall import HvmUpcall
from hvsim.xen.msr_policy import HvmMsrPolicy

from .unclaimed_mmio import map_unclaimed_windows

ENV = "xen_pvh"
PAGE = 0x1000
STORE_PAGE = 0xFC000                  # in the reserved BIOS area (the ACPI tables use its start)
CONSOLE_PAGE = 0xFD000
FEATURES = (1 << x.XENFEAT_writable_page_tables | 1 << x.XENFEAT_auto_translated_physmap
            | 1 << x.XENFEAT_hvm_callback_vector | 1 << x.XENFEAT_hvm_safe_pvclock)


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
        # what a kernel's userspace sees of Xen (hvsim's /init report)
        InherentDifference("clocksource", "Xen's pvclock (the xen clocksource), which Linux prefers in a domU"),
        InherentDifference("clocksources", "Xen offers its pvclock beside the TSC"),
        InherentDifference("clockevent", "a Xen guest's timer is Xen's single-shot vCPU timer (VIRQ_TIMER)"),
        InherentDifference("userspace_hypervisor", "/sys/hypervisor names Xen and the guest type"),
        InherentDifference("userspace_boot_params", "Linux's PVH entry fills boot_params itself (protocol 2.12)"),
        InherentDifference("userspace_consoles", "a Xen guest has the hvc0 console on the Xen console ring"),
        InherentDifference("userspace_cpu_flags", "a Xen guest sees the hypervisor bit and Xen's CPUID policy"),
        InherentDifference("userspace_irqs", "a Xen guest's interrupts are event channels (VIRQs, IPIs, xenbus)"),
    ]


@hookimpl
def hvsim_add_options(parser):
    parser.add_argument("--start-info-version", type=int, choices=(0, 1), default=None,
                        help="xen_pvh: hvm_start_info version (1: with the memory map, as libxc builds "
                             "it; 0: without, as Xen's PVH dom0 builder does). Default 1")
    parser.add_argument("--xen-debug", action="store_true", default=None,
                        help="xen_pv, xen_pvh: behave as a debug build of Xen, which lets a domU write to "
                             "Xen's console with console_io (release builds refuse a PV domU: -EPERM); "
                             "under xen_pvh booted with hvm_fep (the forced emulation prefix)")


@hookimpl
def hvsim_accepts(env, image):
    if env != ENV:
        return None
    try:
        return Acceptance.yes(pvh.describe_entry(image))
    except LoadError as exc:
        return Acceptance.no(str(exc))


@hookimpl
def hvsim_setup(machine, image, config, options):
    _, entry = pvh.pvh_elf(image)
    version = options.get("start_info_version")
    version = 1 if version is None else int(version)
    machine.attach_pc_devices(interrupts="lapic")     # Xen emulates a PVH guest's local APIC, no legacy PC devices
    map_unclaimed_windows(machine)                    # HPET and I/O APIC windows: Xen's null handler
    memory_map = guest_memory_map(machine)
    start_info = pvh.load(machine, image, config, version=version, memory_map=memory_map)
    xen = XenHypervisor(machine, memory_map=memory_map, features=FEATURES,
                        console_page=CONSOLE_PAGE, store_page=STORE_PAGE,
                        debug_build=bool(options.get("xen_debug")))
    # a xenstore behind the store ring, as for PV domUs (Linux's xenbus waits for its answers)
    xen.store = XenStore(machine, STORE_PAGE, domid=xen.domid, config=config, memory_kib=xen.nr_pages * PAGE >> 10,
                         console=(CONSOLE_PAGE // PAGE, xen.params[x.HVM_PARAM_CONSOLE_EVTCHN]))
    # events reach the vCPU as Xen's HVM code delivers them: the callback or upcall vector
    machine.interrupt_source = HvmUpcall(xen, machine.interrupt_source, machine.chipset.lapic, machine.kick)
    machine.plugin_state[ENV] = xen
    machine.plugin_state[ENV + ".msrs"] = HvmMsrPolicy(machine)
    hypercall = HypercallTrap(machine, xen)
    for opcode in (x.VMCALL, x.VMMCALL):
        machine.traps.add_opcode_handler(opcode, hypercall)
    machine.traps.add_opcode_handler(XEN_EMULATE_PREFIX, _forced_emulation)
    pvh.enter(machine, entry, start_info)
    return f"pvh at {entry:#x}, hvm_start_info v{version} at {start_info:#x}"




def guest_memory_map(machine) -> list:
    """The memory map the guest is given, by the start info and by XENMEM_memory_map alike: the
    MachineConfig's E820 layout."""
    return list(machine.layout.memory_map)


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
    if xen is None:
        return None
    policy = machine.plugin_state[ENV + ".msrs"]
    if policy.owns(access.index):
        return policy.access(access)
    if access.index != x.HYPERCALL_PAGE_MSR:
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


# The registers a hypercall reads, in one batch: number, five arguments, then what its CPL is
# derived from.  64-bit callers pass arguments in rdi rsi rdx r10 r8, 32-bit ones in ebx ecx edx esi edi
# (xen/include/public/arch-x86/xen-x86_{64,32}.h).
_ARGS64 = tuple(getattr(x86_const, f"UC_X86_REG_{r.upper()}")
                for r in ("rax", "rdi", "rsi", "rdx", "r10", "r8", "cr0", "rflags", "cs"))
_ARGS32 = tuple(getattr(x86_const, f"UC_X86_REG_{r.upper()}")
                for r in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "cr0", "rflags", "cs"))
_RAX, _RIP = x86_const.UC_X86_REG_RAX, x86_const.UC_X86_REG_RIP
RFLAGS_VM = 1 << 17
VMCALL_LENGTH = 3                     # vmcall 0f 01 c1 and vmmcall 0f 01 d9


class HypercallTrap:
    """``vmcall``/``vmmcall``: one hypercall, as the core's direct handler of both opcodes
    (``add_opcode_handler``).  Xen picks the ABI (64-bit registers, or the 32-bit ones with compat
    structure layouts) from the caller's mode, and refuses callers above CPL 0 with -EPERM.  The
    registers come in one batch read; the result and the RIP past the instruction go back in two
    writes."""

    def __init__(self, machine, xen: XenHypervisor):
        self.dispatch = xen.dispatch
        self.read_many = machine.regfile.read_many
        self.write = machine.regfile.write

    def __call__(self, machine, trap, bits: int) -> bool:
        if bits == 64:
            nr, a0, a1, a2, a3, a4, cr0, rflags, cs = self.read_many(_ARGS64)
            mask = 0xFFFF_FFFF_FFFF_FFFF
        else:
            nr, a0, a1, a2, a3, a4, cr0, rflags, cs = self.read_many(_ARGS32)
            mask = 0xFFFF_FFFF
            nr, a0, a1, a2, a3, a4 = nr & mask, a0 & mask, a1 & mask, a2 & mask, a3 & mask, a4 & mask
        cpl = 0 if not cr0 & 1 else 3 if rflags & RFLAGS_VM else cs & 3      # as Machine.cpl() reads it
        deny = HypercallError(x.EPERM, f"from CPL {cpl}") if cpl else None
        rip = trap.rip
        result = self.dispatch(nr, (a0, a1, a2, a3, a4), rip=rip, compat=bits != 64, deny=deny)
        self.write(_RAX, result & mask)
        self.write(_RIP, rip + VMCALL_LENGTH)
        return True


def _forced_emulation(machine, trap, bits: int) -> bool | None:
    """hvm_fep (xen/arch/x86/hvm/hvm.c hvm_ud_intercept): on a debug build Xen steps over the
    prefix and emulates the next instruction; its emulator gives what the CPU gives, so the CPU
    executes it.  A release build leaves the #UD."""
    if not _xen(machine).debug_build:
        return None
    machine.set_rip((trap.rip + 5) & (0xFFFF_FFFF_FFFF_FFFF if bits == 64 else 0xFFFF_FFFF))
    return True
