"""The MSRs Xen's MSR policy gives an HVM (PVH) vCPU beyond the CPU's own: CPUID faulting.

Xen offers CPUID faulting to every HVM guest, whatever the host can do, since it emulates it
(xen/arch/x86/cpu-policy.c, calculate_hvm_max_policy: ``platform_info.cpuid_faulting = true``):

- ``MSR_INTEL_PLATFORM_INFO`` (0xce) reads with bit 31 set and nothing else; writes #GP (read-only,
  xen/arch/x86/msr.c guest_wrmsr).
- ``MSR_INTEL_MISC_FEATURES_ENABLES`` (0x140) reads back the vCPU's value; a write of any bit other
  than bit 0 (CPUID faulting) #GPs.  With bit 0 set, ``cpuid`` at CPL > 0 raises #GP(0)
  (``Machine.cpuid_faulting``, which the core's CPUID exit checks).

MSR numbers and bits: xen/arch/x86/include/asm/msr-index.h.  Not modelled: the vendor check Xen's
CPUID policy makes elsewhere (the MSRs answer whatever vendor the guest sees, as Xen's do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.machine import Machine
    from ..core.plugin_types import MsrAccess

MSR_INTEL_PLATFORM_INFO = 0x0000_00CE
PLATFORM_INFO_CPUID_FAULTING = 1 << 31
MSR_INTEL_MISC_FEATURES_ENABLES = 0x0000_0140
MISC_FEATURES_CPUID_FAULTING = 1 << 0

POLICY_MSRS = (MSR_INTEL_PLATFORM_INFO, MSR_INTEL_MISC_FEATURES_ENABLES)


class HvmMsrPolicy:
    """One vCPU's view of the policy MSRs; ``access`` answers as an ``hvsim_msr`` hook does."""

    def __init__(self, machine: "Machine"):
        self.m = machine
        for index in POLICY_MSRS:
            machine.intercept_msr(index)

    def access(self, access: "MsrAccess") -> int | bool | None:
        """The value read, True for a write taken, None for #GP; None too for MSRs not of this policy
        (``owns`` tells them apart)."""
        if access.index == MSR_INTEL_PLATFORM_INFO:
            return None if access.write else PLATFORM_INFO_CPUID_FAULTING
        if access.index == MSR_INTEL_MISC_FEATURES_ENABLES:
            if not access.write:
                return MISC_FEATURES_CPUID_FAULTING if self.m.cpuid_faulting else 0
            if access.value & ~MISC_FEATURES_CPUID_FAULTING:
                return None
            self.m.cpuid_faulting = bool(access.value & MISC_FEATURES_CPUID_FAULTING)
            return True
        return None

    @staticmethod
    def owns(index: int) -> bool:
        return index in POLICY_MSRS
