"""How an HVM/PVH vCPU receives Xen's event upcall (xen/arch/x86/hvm/irq.c hvm_assert_evtchn_irq,
hvm_vcpu_has_pending_irq): it stands between the CPU and the local APIC as the machine's
``interrupt_source``.

- A per-vCPU upcall vector (HVMOP_set_evtchn_upcall_vector) is a fixed interrupt at the local APIC:
  IRR, ISR, the guest EOIs it.
- The domain's callback vector (HVM_PARAM_CALLBACK_IRQ of type vector) bypasses the APIC: while
  ``evtchn_upcall_pending`` is set the vCPU has that vector pending, ahead of the APIC's (after an
  NMI), and taking it sets no ISR bit (no EOI).  The guest ends it by clearing the flag.
- A callback of type GSI or PCI INTx needs an I/O APIC or 8259, which a PVH guest does not have: the
  upcall is recorded by the hypervisor as not delivered.

Xen ignores ``evtchn_upcall_mask`` for HVM vCPUs (RFLAGS.IF gates the vector), and so does this.
A blocked vCPU (SCHEDOP_block, ``hlt``) wakes when this source has an interrupt pending.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hypervisor import XenHypervisor


class HvmUpcall:
    """Wraps the CPU's interrupt input ``inner`` (the chipset: local APIC); ``kick()`` tells the run
    loop an interrupt may have become deliverable."""

    def __init__(self, xen: "XenHypervisor", inner, lapic, kick):
        self.xen = xen
        self.inner = inner
        self.lapic = lapic
        self.kick = kick
        xen.deliver_upcall = self.deliver
        xen.wakeup_pending = self.interrupt_pending

    # -- the hypervisor's side ------------------------------------------------------------------------
    def deliver(self, vcpu: int) -> bool:
        """evtchn_upcall_pending rose on ``vcpu``; False when no upcall route is set up."""
        vector = self.xen.upcall_vectors.get(vcpu)
        if vector is not None:
            self.lapic.deliver(vector)
            return True
        if self.xen.callback_vector is not None:
            self.kick()
            return True
        return False

    def _callback_pending(self) -> int | None:
        vector = self.xen.callback_vector
        if vector is None or 0 in self.xen.upcall_vectors or not self.xen.events.upcall_pending(0):
            return None
        return vector

    # -- the CPU's interrupt input ---------------------------------------------------------------------
    def interrupt_pending(self) -> bool:
        return self._callback_pending() is not None or self.inner.interrupt_pending()

    def nmi_pending(self) -> bool:
        return self.inner.nmi_pending()

    def acknowledge(self) -> int | None:
        if not self.inner.nmi_pending():
            vector = self._callback_pending()
            if vector is not None:
                return vector
        return self.inner.acknowledge()
