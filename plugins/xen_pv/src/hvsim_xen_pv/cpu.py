"""The PV vCPU: trap table and bounce frames, the iret hypercall, callbacks, segment bases, the
GDT, debug registers, and the PV CPUID policy.

Privilege model (decided for hvsim, documented in the plugin's docstring): the guest kernel runs at
CPL 0 on FLAT_KERNEL_CS64/SS64 with RPL 0 (0xe030/0xe028, DPL-0 descriptors in Xen's GDT page), so
the engine's own ``iretq``, ``mov %cr4``, ``rdmsr`` work as instructions.  Exceptions never go
through an IDT (a PV guest has none): each one is bounced to the handler ``set_trap_table`` named,
with Xen's frame (xen-abi.md §3.5; xen/arch/x86/x86_64/entry.S create_bounce_frame), and the guest
returns with the iret hypercall.  An exception with no handler crashes the domain, as on Xen.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from hvsim.abi import xen as x
from hvsim.abi import xen_pv as pv
from hvsim.core.errors import GuestMemoryError
from hvsim.core.exceptions import HAS_ERROR_CODE, vector_name
from hvsim.core.result import StopReason
from hvsim.xen import HypercallError

from .builder import KERNEL_CS, KERNEL_SS, map_gdt_frames

if TYPE_CHECKING:
    from hvsim.core.machine import Machine
    from hvsim.core.plugin_types import GuestException
    from hvsim.xen import XenHypervisor

    from .builder import XenArea
    from .memory import DomainMemory

PAGE = 0x1000
RFLAGS_IF, RFLAGS_IOPL = 1 << 9, 3 << 12
RFLAGS_CLEARED_ON_BOUNCE = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 18)   # TF NT RF VM AC
MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE = 0xC000_0100, 0xC000_0101, 0xC000_0102
VCPU_INFO_CR2 = 16

# CPUID bits Xen's PV policy hides (cpufeatureset.h: not tagged for PV guests).  PSE matters most:
# with it Linux builds 2 MiB mappings a PV guest may not have (linux-pv-on-unicorn.md §5).
LEAF1_EDX_HIDDEN = (1 << 3) | (1 << 12) | (1 << 13) | (1 << 17)          # PSE MTRR PGE PSE36
LEAF1_ECX_HIDDEN = (1 << 3) | (1 << 5) | (1 << 17) | (1 << 21) | (1 << 24)  # MONITOR VMX PCID X2APIC TSC_DEADLINE
LEAF1_ECX_HYPERVISOR = 1 << 31
LEAF7_EBX_HIDDEN = (1 << 7) | (1 << 10) | (1 << 20)                       # SMEP INVPCID SMAP
EXT1_EDX_HIDDEN = 1 << 26                                                 # 1 GiB pages


class PvCpu:
    def __init__(self, machine: "Machine", dom: "DomainMemory", area: "XenArea", xen: "XenHypervisor"):
        self.m = machine
        self.dom = dom
        self.area = area
        self.xen = xen
        self.traps: dict[int, tuple[int, int, int]] = {}     # vector -> (flags, cs, address)
        self.callbacks: dict[str, tuple[int, int]] = {}       # type name -> (address, flags)
        self.kernel_stack = (KERNEL_SS, 0)
        self.iopl = 0
        self.iobitmap = (0, 0)
        self.debugregs = {6: 0xFFFF0FF0, 7: 0x400}
        self.vm_assists: set[int] = set()
        self.gdt_frames: list[int] = []
        self.bounces = 0
        self.upcalls = 0

    # -- vcpu_info ---------------------------------------------------------------------------------
    def vcpu_info(self) -> int:
        return self.xen.vcpu_info.get(0, self.area.shared_info)

    def upcall_mask(self) -> int:
        return self.m.memory.read_u8(self.vcpu_info() + x.VCPU_INFO_UPCALL_MASK)

    def set_upcall_mask(self, value: int) -> None:
        self.m.memory.write_u8(self.vcpu_info() + x.VCPU_INFO_UPCALL_MASK, value)

    # -- exceptions: bounce frames ------------------------------------------------------------------
    def bounce(self, exc: "GuestException") -> str:
        """Deliver ``exc`` to the guest's trap-table handler with Xen's frame, or crash the domain."""
        handler = self.traps.get(exc.vector)
        if handler is None or handler[2] == 0:
            why = f"{vector_name(exc.vector)} at {exc.rip:#x} with no handler in the trap table"
            self.m.stop(StopReason("crash", detail=f"domain crash: {why}"))
            return "domain crash (no trap handler)"
        flags, _cs, address = handler
        error_code = (exc.error_code or 0) if exc.vector in HAS_ERROR_CODE else None
        if not self._push_bounce_frame(address, exc.rip, error_code, vector_name(exc.vector)):
            return "domain crash (bounce frame not writable)"
        if exc.vector == 14:
            self.m.memory.write_u64(self.vcpu_info() + VCPU_INFO_CR2, exc.cr2 or 0)
        if flags & pv.TI_FLAG_CLEAR_IF:
            self.set_upcall_mask(1)
        self.bounces += 1
        return f"bounce frame to {address:#x}"

    def _push_bounce_frame(self, address: int, rip: int, error_code: int | None, what: str) -> bool:
        """Xen's create_bounce_frame (kernel mode): push rcx, r11, [error code], ``rip``, cs with the
        saved upcall mask in bits 32+, rflags (IF = events unmasked), rsp, ss on the 16-byte-aligned
        stack, then continue at ``address``.  An unwritable stack crashes the domain (False)."""
        m = self.m
        mask = self.upcall_mask()
        rflags = m.reg("rflags")
        saved_rflags = (rflags & ~(RFLAGS_IF | RFLAGS_IOPL)) | (0 if mask else RFLAGS_IF) | self.iopl << 12
        frame = [m.reg("rcx"), m.reg("r11")]
        if error_code is not None:
            frame.append(error_code)
        frame += [rip, KERNEL_CS | mask << 32, saved_rflags, m.reg("rsp"), KERNEL_SS]
        rsp = (m.reg("rsp") & ~0xF) - 8 * len(frame)
        try:
            m.vmem.write(rsp, struct.pack(f"<{len(frame)}Q", *frame))
        except GuestMemoryError as err:
            m.stop(StopReason("crash", detail=f"domain crash: cannot write the {what} bounce frame at {rsp:#x}: {err}"))
            return False
        m.set_reg("rsp", rsp)
        m.set_reg("rflags", rflags & ~RFLAGS_CLEARED_ON_BOUNCE)
        m.set_rip(address)
        return True

    # -- events: the upcall ---------------------------------------------------------------------------
    def upcall_raised(self, vcpu: int) -> bool:
        """The hypervisor's ``deliver_upcall``: evtchn_upcall_pending rose.  The upcall goes out at
        the next return to the guest with events unmasked; False when no event callback is
        registered (the hypervisor records it as not delivered)."""
        if vcpu != 0 or not self.callbacks.get("event", (0, 0))[0]:
            return False
        self.m.kick()
        return True

    def event_deliverable(self) -> bool:
        """Xen's test_all_events: an upcall is pending, events are unmasked, a callback exists."""
        return (self.m.memory.read_u8(self.vcpu_info()) != 0 and not self.upcall_mask()
                and bool(self.callbacks.get("event", (0, 0))[0]))

    def deliver_event(self) -> bool:
        """Bounce to the event callback (events masked during delivery, as Xen does); True if done."""
        if not self.event_deliverable():
            return False
        if not self._push_bounce_frame(self.callbacks["event"][0], self.m.reg("rip"), None, "event callback"):
            return False
        self.set_upcall_mask(1)
        self.upcalls += 1
        return True

    # -- the vCPU's interrupt input (machine.interrupt_source) -----------------------------------------
    # A PV vCPU has no IDT and no local APIC: the run loop's "interrupt" is the event upcall, which
    # ``acknowledge`` delivers itself as a bounce frame (so it returns no vector to the IDT path).
    def interrupt_pending(self) -> bool:
        return self.event_deliverable()

    def nmi_pending(self) -> bool:
        return False

    def acknowledge(self) -> int | None:
        self.deliver_event()
        return None

    # -- hypercalls ----------------------------------------------------------------------------------
    def iret(self, _args, info) -> int:
        """HYPERVISOR_iret: the guest's stub pushed struct iret_context; resume where it says.  The
        registers it restores (RAX included) are the result: the caller must not set RAX.  A frame
        that cannot be read crashes the domain, as on Xen."""
        m = self.m
        try:
            context = m.vmem.read(m.reg("rsp"), 72)
        except GuestMemoryError as err:
            m.stop(StopReason("crash", detail=f"domain crash: the iret frame is not readable: {err}"))
            raise
        rax, r11, rcx, flags, rip, cs, rflags, rsp, _ss = struct.unpack(pv.IRET_CONTEXT_FORMAT, context)
        info.update(rip=hex(rip), cs=hex(cs), rsp=hex(rsp), flags=flags)
        if cs & 3 == 3:
            m.stop(StopReason("unhandled-trap", detail=f"iret to user mode (cs {cs:#x}, rip {rip:#x}): "
                                                       "guest user mode is not modelled"))
            return 0
        m.set_reg("rax", rax)
        if not flags & pv.VGCF_IN_SYSCALL:
            m.set_reg("r11", r11)
            m.set_reg("rcx", rcx)
        self.set_upcall_mask(0 if rflags & RFLAGS_IF else 1)
        self.iopl = (rflags & RFLAGS_IOPL) >> 12 or self.iopl
        m.set_reg("rflags", (rflags & ~RFLAGS_IOPL) | RFLAGS_IF | 2)
        m.set_reg("rsp", rsp)
        m.set_rip(rip)
        return 0

    def set_trap_table(self, a, info) -> int:
        table = a[0]
        if table == 0:
            self.traps.clear()
            info["entries"] = 0
            return 0
        count = 0
        while count < 256:
            vector, flags, cs, address = struct.unpack(pv.TRAP_INFO_FORMAT, self.m.vmem.read(table + 16 * count, 16))
            if address == 0:
                break
            self.traps[vector] = (flags, cs, address)
            count += 1
        info["entries"] = count
        return 0

    def set_callbacks(self, a, info) -> int:
        self.callbacks.update(event=(a[0], 0), failsafe=(a[1], 0), syscall=(a[2], 0))
        info.update(event=hex(a[0]), failsafe=hex(a[1]), syscall=hex(a[2]))
        return 0

    def callback_op(self, a, info) -> int:
        cmd, arg = a[0], a[1]
        if cmd == pv.CALLBACKOP_register:
            kind, flags, address = struct.unpack(pv.CALLBACK_REGISTER_FORMAT, self.m.vmem.read(arg, 16))
            name = pv.CALLBACK_TYPES.get(kind)
            info.update(op="register", type=name or kind, address=hex(address))
            if name is None:
                raise HypercallError(x.EINVAL, f"callback type {kind}")
            self.callbacks[name] = (address, flags)
            return 0
        if cmd == pv.CALLBACKOP_unregister:
            (kind,) = struct.unpack("<H", self.m.vmem.read(arg, 2))
            info.update(op="unregister", type=pv.CALLBACK_TYPES.get(kind, kind))
            self.callbacks.pop(pv.CALLBACK_TYPES.get(kind, ""), None)
            return 0
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    def stack_switch(self, a, info) -> int:
        self.kernel_stack = (a[0] & 0xFFFF, a[1])
        info.update(ss=hex(a[0]), sp=hex(a[1]))
        return 0

    def fpu_taskswitch(self, a, info) -> int:
        info["set"] = a[0]
        cr0 = self.m.reg("cr0")
        self.m.set_reg("cr0", cr0 | 8 if a[0] else cr0 & ~8)            # CR0.TS
        return 0

    def set_segment_base(self, a, info) -> int:
        which, value = a[0] & 0xFFFF_FFFF, a[1]
        names = {pv.SEGBASE_FS: ("fs", MSR_FS_BASE), pv.SEGBASE_GS_USER: ("gs_user", MSR_KERNEL_GS_BASE),
                 pv.SEGBASE_GS_KERNEL: ("gs_kernel", MSR_GS_BASE)}
        if which in names:
            name, msr = names[which]
            info.update(which=name, base=hex(value))
            self.m.msr_write(msr, value)
            return 0
        if which == pv.SEGBASE_GS_USER_SEL:
            info.update(which="gs_user_sel", selector=hex(value))
            if value & 0xFFFF & ~3:
                raise HypercallError(x.EINVAL, "user GS selectors other than null are not modelled")
            self.m.msr_write(MSR_KERNEL_GS_BASE, 0)
            return 0
        raise HypercallError(x.EINVAL, f"segment base {which}")

    def set_gdt(self, a, info) -> int:
        frames_ptr, entries = a[0], a[1] & 0xFFFF_FFFF
        info["entries"] = entries
        if entries > pv.FIRST_RESERVED_GDT_ENTRY:
            raise HypercallError(x.EINVAL, f"{entries} GDT entries (at most {pv.FIRST_RESERVED_GDT_ENTRY})")
        count = (entries + 511) // 512
        frames = list(struct.unpack(f"<{count}Q", self.m.vmem.read(frames_ptr, 8 * count))) if count else []
        for frame in frames:
            if not self.dom.owns(frame):
                raise HypercallError(x.EINVAL, f"GDT frame {frame:#x} is not the domain's")
        info["frames"] = [hex(f) for f in frames]
        self.gdt_frames = frames
        map_gdt_frames(self.dom, self.area, frames)
        self.m.flush_tlb()
        return 0

    def update_descriptor(self, a, info) -> int:
        ma, desc = a[0], a[1]
        info.update(ma=hex(ma), desc=hex(desc))
        if ma % 8 or not self.dom.owns(ma // PAGE):
            raise HypercallError(x.EINVAL, f"descriptor address {ma:#x}")
        self.m.memory.write_u64(ma, desc)
        return 0

    def set_debugreg(self, a, info) -> int:
        reg, value = a[0], a[1]
        info.update(reg=reg, value=hex(value))
        if reg not in (0, 1, 2, 3, 6, 7):
            raise HypercallError(x.EINVAL, f"debug register {reg}")
        self.debugregs[reg] = value
        return 0

    def get_debugreg(self, a, info) -> int:
        reg = a[0]
        info["reg"] = reg
        if reg not in (0, 1, 2, 3, 6, 7):
            raise HypercallError(x.EINVAL, f"debug register {reg}")
        return self.debugregs.get(reg, 0)

    def vm_assist(self, a, info) -> int:
        cmd, kind = a[0], a[1]
        info.update(cmd="enable" if cmd == pv.VMASST_CMD_enable else "disable" if cmd == pv.VMASST_CMD_disable
                    else cmd, type=pv.VMASST_TYPES.get(kind, kind))
        if cmd not in (pv.VMASST_CMD_enable, pv.VMASST_CMD_disable) or kind not in pv.VMASST_TYPES:
            raise HypercallError(x.EINVAL)
        (self.vm_assists.add if cmd == pv.VMASST_CMD_enable else self.vm_assists.discard)(kind)
        return 0

    def physdev_op(self, a, info) -> int:
        cmd, arg = a[0], a[1]
        if cmd == pv.PHYSDEVOP_set_iopl:
            (iopl,) = struct.unpack("<I", self.m.vmem.read(arg, 4))
            info.update(op="set_iopl", iopl=iopl)
            if iopl > 3:
                raise HypercallError(x.EINVAL, f"iopl {iopl}")
            self.iopl = iopl
            return 0
        if cmd == pv.PHYSDEVOP_set_iobitmap:
            bitmap, nr_ports = struct.unpack(pv.PHYSDEV_SET_IOBITMAP_FORMAT, self.m.vmem.read(arg, 12))
            info.update(op="set_iobitmap", nr_ports=nr_ports)
            if nr_ports > 65536:
                raise HypercallError(x.EINVAL, f"{nr_ports} ports")
            self.iobitmap = (bitmap, nr_ports)
            return 0
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    # -- CPUID ---------------------------------------------------------------------------------------
    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """What a PV guest sees: Xen's leaves, else the CPU masked with Xen's PV featureset."""
        hyper = self.xen.cpuid(leaf, subleaf) if x.CPUID_BASE <= leaf <= x.CPUID_BASE + 0xFF else None
        if hyper is not None:
            if leaf == x.CPUID_BASE + 2:
                return hyper[0], hyper[1], 1, 0                  # MMU_PT_UPDATE_PRESERVE_AD (PV only)
            if leaf == x.CPUID_BASE + 4:
                return 0, 0, 0, 0                                # HVM features: none for PV
            if leaf == x.CPUID_BASE + 5:
                return 0, 40, 0, 0                               # machine address width
            return hyper
        eax, ebx, ecx, edx = self.m.native_cpuid(leaf, subleaf)
        if leaf == 1:
            edx &= ~LEAF1_EDX_HIDDEN
            ecx = (ecx & ~LEAF1_ECX_HIDDEN) | LEAF1_ECX_HYPERVISOR
        elif leaf == 7 and subleaf == 0:
            ebx &= ~LEAF7_EBX_HIDDEN
        elif leaf == 0x8000_0001:
            edx &= ~EXT1_EDX_HIDDEN
        return eax, ebx, ecx, edx

    def emulated_cpuid(self, rip: int) -> None:
        """Xen's forced-emulation prefix (``ud2; .ascii "xen"; cpuid``): answer and step over it."""
        m = self.m
        answer = self.cpuid(m.reg("rax") & 0xFFFF_FFFF, m.reg("rcx") & 0xFFFF_FFFF)
        for reg, value in zip(("rax", "rbx", "rcx", "rdx"), answer):
            m.set_reg(reg, value & 0xFFFF_FFFF)
        m.set_rip(rip + len(pv.XEN_EMULATE_PREFIX) + len(pv.CPUID_INSN))
