"""hvsim environment ``kvm_pvh``: a KVM guest booted the way QEMU's ``-kernel`` boots a kernel with
a PVH note — an example of a third-party environment plugin, one module and one entry-point line.

The boot is hvsim's PVH building blocks (``hvsim.pvh``): the ELF at ``p_paddr``, the initrd after it,
``struct hvm_start_info`` (version 1, with the memory map) in EBX, 32-bit protected mode.  What
makes it KVM is what the guest finds when it looks (Linux: arch/x86/kernel/kvm.c, kvmclock.c):

- CPUID 0x40000000: ``"KVMKVMKVM\\0\\0\\0"``, highest leaf 0x40000001; 0x40000001: the features
  CLOCKSOURCE, CLOCKSOURCE2 and CLOCKSOURCE_STABLE_BIT;
- kvmclock: a write of MSR_KVM_SYSTEM_TIME_NEW (or the legacy MSR_KVM_SYSTEM_TIME) with bit 0 set
  fills the ``struct pvclock_vcpu_time_info`` at the address written; a write of
  MSR_KVM_WALL_CLOCK_NEW (or MSR_KVM_WALL_CLOCK) fills a ``struct pvclock_wall_clock`` there.
  ``system_time`` is hvsim's deterministic guest clock (``machine.guest_ns()``), ``tsc_timestamp``
  the guest's TSC at that moment (hvsim's TSC counts guest nanoseconds, so the two are equal
  and the TSC runs at 1 GHz): ``tsc_to_system_mul`` = 2^31 with ``tsc_shift`` = 1;
- hypercalls: ``vmcall`` or ``vmmcall``, number in RAX, arguments in RBX, RCX, RDX, RSI, result
  in RAX.  KVM_HC_VAPIC_POLL_IRQ and KVM_HC_SCHED_YIELD return 0 (one vCPU: nothing to poll or
  yield to), any other number -KVM_ENOSYS, and any call from CPL > 0 -KVM_EPERM, as KVM answers.
  Each call is a ``Call`` event (interface ``kvm-hypercall``); MSR accesses are recorded by hvsim.
- the PC devices (COM1, 0xE9, the ACPI tables with their PM1a block, the exit port, reset), as
  QEMU's ``pc`` machine has them.

ABI facts come from Linux's include/uapi/linux/kvm_para.h, arch/x86/include/uapi/asm/kvm_para.h
and arch/x86/include/asm/pvclock-abi.h.
"""

from __future__ import annotations

import struct

from hvsim import Acceptance, Environment, InherentDifference, hookimpl, pvh
from hvsim.core.clock import WALLCLOCK_EPOCH_S
from hvsim.core.errors import GuestMemoryError, LoadError
from hvsim.core.events import Call

ENV = "kvm_pvh"

# arch/x86/include/uapi/asm/kvm_para.h
KVM_CPUID_SIGNATURE = 0x4000_0000
KVM_CPUID_FEATURES = 0x4000_0001
KVM_SIGNATURE = b"KVMKVMKVM\0\0\0"
KVM_FEATURE_CLOCKSOURCE = 0
KVM_FEATURE_CLOCKSOURCE2 = 3
KVM_FEATURE_CLOCKSOURCE_STABLE_BIT = 24
MSR_KVM_WALL_CLOCK = 0x11
MSR_KVM_SYSTEM_TIME = 0x12
MSR_KVM_WALL_CLOCK_NEW = 0x4B56_4D00
MSR_KVM_SYSTEM_TIME_NEW = 0x4B56_4D01
KVM_MSR_ENABLED = 1
# include/uapi/linux/kvm_para.h
KVM_ENOSYS = 1000
KVM_EPERM = 1                     # EPERM
KVM_HC_VAPIC_POLL_IRQ = 1
KVM_HC_SCHED_YIELD = 11
HYPERCALL_NAMES = {1: "vapic_poll_irq", 2: "mmu_op", 3: "features", 4: "ppc_map_magic_page", 5: "kick_cpu",
                   6: "mips_get_clock_freq", 7: "mips_exit_vm", 8: "mips_console_output", 9: "clock_pairing",
                   10: "send_ipi", 11: "sched_yield", 12: "map_gpa_range"}
VMCALL, VMMCALL = b"\x0f\x01\xc1", b"\x0f\x01\xd9"
# arch/x86/include/asm/pvclock-abi.h
PVCLOCK_VCPU_TIME_INFO = "<IIQQIbB2x"     # version, pad0, tsc_timestamp, system_time, mul, shift, flags
PVCLOCK_WALL_CLOCK = "<III"               # version, sec, nsec
PVCLOCK_TSC_STABLE_BIT = 1 << 0
TSC_TO_SYSTEM_MUL, TSC_SHIFT = 1 << 31, 1  # 1 GHz: ns = ((tsc << 1) * 2^31) >> 32

FEATURES = (1 << KVM_FEATURE_CLOCKSOURCE | 1 << KVM_FEATURE_CLOCKSOURCE2
            | 1 << KVM_FEATURE_CLOCKSOURCE_STABLE_BIT)
CLOCK_MSRS = (MSR_KVM_WALL_CLOCK, MSR_KVM_SYSTEM_TIME, MSR_KVM_WALL_CLOCK_NEW, MSR_KVM_SYSTEM_TIME_NEW)


class KvmState:
    """One run's KVM: the kvmclock MSRs' values and the wall-clock time of boot."""

    def __init__(self, boot_time_ns: int):
        self.boot_time_ns = boot_time_ns
        self.msrs = dict.fromkeys(CLOCK_MSRS, 0)


@hookimpl
def hvsim_environments():
    return [Environment(ENV, "KVM guest, PVH entry as QEMU -kernel boots it (kvmclock, KVM hypercalls); "
                             "example third-party plugin")]


@hookimpl
def hvsim_inherent_differences(env):
    if env != ENV:
        return None
    return [
        InherentDifference("entry", "PVH enters at XEN_ELFNOTE_PHYS32_ENTRY, not the boot protocol's entry"),
        InherentDifference("entry_mode", "PVH enters in 32-bit protected mode with paging off"),
        InherentDifference("module_addresses", "the PVH loader puts modules right after the kernel"),
        InherentDifference("hypervisor", "KVM announces itself at CPUID 0x40000000 (KVMKVMKVM)"),
        InherentDifference("calls", "a KVM guest may use kvmclock MSRs and KVM hypercalls"),
        InherentDifference("clocksource", "KVM offers kvm-clock, which Linux prefers to the TSC"),
        InherentDifference("clocksources", "KVM offers kvm-clock beside the TSC"),
        InherentDifference("userspace_cpu_flags", "a KVM guest sees the hypervisor bit and a known TSC frequency"),
        InherentDifference("userspace_boot_params", "Linux's PVH entry fills boot_params itself (protocol 2.12)"),
    ]


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
    machine.attach_pc_devices()
    start_info = pvh.load(machine, image, config, version=1, memory_map=list(machine.layout.memory_map))
    for legacy in (MSR_KVM_WALL_CLOCK, MSR_KVM_SYSTEM_TIME):   # architectural range: ask for them
        machine.intercept_msr(legacy)
    machine.plugin_state[ENV] = KvmState(boot_time_ns=WALLCLOCK_EPOCH_S * 10**9)
    pvh.enter(machine, entry, start_info)
    return f"pvh at {entry:#x}, hvm_start_info v1 at {start_info:#x}"


def _kvm(machine) -> KvmState | None:
    return machine.plugin_state.get(ENV)


@hookimpl
def hvsim_cpuid(machine, leaf, subleaf):
    if _kvm(machine) is None:
        return None
    if leaf == KVM_CPUID_SIGNATURE:
        return (KVM_CPUID_FEATURES, *struct.unpack("<3I", KVM_SIGNATURE))
    if leaf == KVM_CPUID_FEATURES:
        return (FEATURES, 0, 0, 0)
    if leaf == 1:                      # KVM, like every hypervisor, sets the hypervisor bit
        eax, ebx, ecx, edx = machine.native_cpuid(leaf, subleaf)
        return eax, ebx, ecx | 1 << 31, edx
    return None


@hookimpl
def hvsim_msr(machine, access):
    kvm = _kvm(machine)
    if kvm is None or access.index not in CLOCK_MSRS:
        return None
    if not access.write:
        return kvm.msrs[access.index]
    kvm.msrs[access.index] = access.value
    try:
        if access.index in (MSR_KVM_SYSTEM_TIME, MSR_KVM_SYSTEM_TIME_NEW) and access.value & KVM_MSR_ENABLED:
            _write_time_info(machine, access.value & ~KVM_MSR_ENABLED)
        elif access.index in (MSR_KVM_WALL_CLOCK, MSR_KVM_WALL_CLOCK_NEW):
            _write_wall_clock(machine, kvm, access.value)
    except GuestMemoryError as exc:
        # KVM ignores a structure it cannot write (the guest reads zeros); say so in the trace.
        machine.note(f"kvm_pvh: kvmclock structure at {access.value:#x} is not in guest RAM: {exc}")
    return True


def _write_time_info(machine, address: int) -> None:
    tsc = machine.guest_ns()
    info = struct.pack(PVCLOCK_VCPU_TIME_INFO, 2, 0, tsc, machine.guest_ns(), TSC_TO_SYSTEM_MUL, TSC_SHIFT,
                       PVCLOCK_TSC_STABLE_BIT)
    machine.memory.write(address, info)


def _write_wall_clock(machine, kvm: KvmState, address: int) -> None:
    boot = kvm.boot_time_ns
    machine.memory.write(address, struct.pack(PVCLOCK_WALL_CLOCK, 2, boot // 10**9 & 0xFFFF_FFFF, boot % 10**9))


@hookimpl
def hvsim_trap(machine, trap):
    if _kvm(machine) is None or trap.kind != "invalid-opcode" or trap.code[:3] not in (VMCALL, VMMCALL):
        return None
    long_mode = machine.code_segment()[1] == 64
    mask = 0xFFFF_FFFF_FFFF_FFFF if long_mode else 0xFFFF_FFFF
    nr = machine.reg("rax") & mask
    args = [machine.reg(r) & mask for r in ("rbx", "rcx", "rdx", "rsi")]
    if machine.cpl():
        result = -KVM_EPERM
    elif nr in (KVM_HC_VAPIC_POLL_IRQ, KVM_HC_SCHED_YIELD):
        result = 0
    else:
        result = -KVM_ENOSYS
    machine.emit(Call(interface="kvm-hypercall", name=HYPERCALL_NAMES.get(nr, f"hypercall_{nr}"),
                      args={"nr": nr, "args": [hex(a) for a in args]}, result=result, rip=trap.rip))
    machine.set_reg("rax", result & mask)
    machine.set_rip(trap.rip + 3)
    return True
