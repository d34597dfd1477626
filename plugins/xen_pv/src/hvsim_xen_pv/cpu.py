"""The PV vCPU: trap table and bounce frames, the iret hypercall, callbacks, segment bases, the
GDT, debug registers, and the PV CPUID policy.

Privilege model (decided for hvsim, documented in the plugin's docstring): the guest kernel runs at
CPL 1 with IOPL 0 on FLAT_KERNEL_CS64 with RPL 1 (0xe031, a conforming DPL-0 descriptor) and a NULL
SS of RPL 1: its paging is a supervisor's and its own ``iretq`` works, while what Xen's ring 3 may
not execute raises #GP, which Xen's privileged-op emulation (privop.py) completes or leaves to the
guest.  Kernel-mode bounce frames carry 0xe030/0xe028, as Xen's (RPL cleared: "kernel context").
Exceptions never go
through an IDT (a PV guest has none): each one is bounced to the handler ``set_trap_table`` named,
with Xen's frame (xen-abi.md §3.5; xen/arch/x86/x86_64/entry.S create_bounce_frame), and the guest
returns with the iret hypercall.  An exception with no handler crashes the domain, as on Xen.

User mode as Xen runs it for a 64-bit PV guest (xen/arch/x86/pv/iret.c do_iret, x86_64/entry.S
lstar_enter/switch_to_kernel/create_bounce_frame, pv/domain.c toggle_guest_mode): the guest's user
space runs at CPL 3 on the selectors of the iret frame (FLAT_RING3_* or the guest's own GDT's).  The
iret hypercall to an RPL-3 CS switches to user mode: the GS bases swap (the kernel's goes to the
shadow) and CR3 becomes the MMUEXT_NEW_USER_BASEPTR table (no user table: domain crash).  A
``syscall`` from user mode, an exception or an event switches back: GS swaps again, CR3 is the
kernel table, and the bounce frame is pushed on the stack stack_switch named, with the user's CS
and SS in it (a syscall's carries FLAT_USER_CS64/FLAT_KERNEL_SS and RCX/R11 as the instruction
left them).  ``int $n`` from user mode reaches its handler only if the trap table's DPL is 3, else
#GP(n * 8 + 2).  Not modelled: the LDT, 32-bit (compat) user space's syscall32/sysenter callbacks,
the failsafe callback (a bad user CS/SS in an iret frame crashes the domain instead).

Virtual IOPL (pv/emul-priv-op.c iopl_ok, guest_io_okay; pv/iret.c): PHYSDEVOP_set_iopl, or with
VMASST_TYPE_architectural_iopl the iret frame's IOPL, sets it.  ``port_access`` is the machine's port
policy (traps.py ``set_port_policy``): an ``in``/``out``/``ins``/``outs`` at a virtual CPL above the
virtual IOPL (3 in user mode; 1 in kernel mode, 0 with architectural_iopl) is #GP(0) at the
instruction with nothing done on the port, unless the PHYSDEVOP_set_iobitmap bitmap covers the
port (its nr_ports, then a clear bit for every byte of the access, read through the kernel's page
table; a bitmap Xen cannot read is the #PF it gives).  ``cli``/``sti`` are #GP(0) in both modes
(CPL 1 or 3, IOPL 0), which the privileged-op emulation completes as Xen's no-op when iopl_ok
allows them and gives to the guest otherwise.  Ports do not fault in the engine, whatever the CPL
(traps.py): the policy sees every access, and one it allows goes where Xen's emulator sends it
(ioports.py: the hardware only for a port the domain is permitted, else Xen's answer, mostly all
ones).  The #GP's Fault is in the trace.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from hvsim.abi import xen as x
from hvsim.abi import xen_pv as pv
from hvsim.core.engine_state import SegmentCache
from hvsim.core.errors import GuestMemoryError
from hvsim.core.memory import is_canonical
from hvsim.core.exceptions import HAS_ERROR_CODE, vector_name
from hvsim.core.plugin_types import GuestException, PortAnswered
from hvsim.core.result import StopReason
from hvsim.xen import HypercallError

from .builder import KERNEL_CS, KERNEL_SS, map_gdt_frames
from .ioports import XenPorts
from .privop import PrivilegedOps

if TYPE_CHECKING:
    from hvsim.core.machine import Machine
    from hvsim.core.plugin_types import PortAccess
    from hvsim.xen import XenHypervisor

    from .builder import XenArea
    from .memory import DomainMemory

PAGE = 0x1000
RFLAGS_IF, RFLAGS_IOPL, RFLAGS_DF, RFLAGS_RF, RFLAGS_VM = 1 << 9, 3 << 12, 1 << 10, 1 << 16, 1 << 17
RFLAGS_ALL = 0x3F7FD5              # the architecturally defined RFLAGS bits (Xen's X86_EFLAGS_ALL)
RFLAGS_CLEARED_ON_BOUNCE = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 18)   # TF NT RF VM AC
MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE = 0xC000_0100, 0xC000_0101, 0xC000_0102
VCPU_INFO_CR2 = 16
SYSCALL_INSN_LENGTH = 2
GP_VECTOR, UD_VECTOR, PF_VECTOR = 13, 6, 14
IDT_ERROR_FLAG = 2                 # #GP error code naming an IDT entry (SDM vol. 3, 6.13)
# Segment descriptor high-dword bits (SDM vol. 3, 3.4.5); the selector's TI bit names the LDT.
DESC_TYPE_CODE, DESC_TYPE_CONFORMING, DESC_TYPE_RW = 1 << 11, 1 << 10, 1 << 9
DESC_S, DESC_P, DESC_L, DESC_B, DESC_G, DESC_ACCESSED = 1 << 12, 1 << 15, 1 << 21, 1 << 22, 1 << 23, 1 << 8
SELECTOR_TI = 1 << 2
KERNEL_CPL = 1
# The kernel's ring and its segments: a NULL SS of RPL 1 (allowed in long mode below ring 3) and
# the FLAT_KERNEL_CS64 descriptor with RPL 1.
KERNEL_NULL_SS = SegmentCache(KERNEL_CPL, 0, 0, KERNEL_CPL << 13)
KERNEL_CS_CACHE = SegmentCache(KERNEL_CS | KERNEL_CPL, 0, 0xFFFF_FFFF, 0x00AF_9F00)    # the GDT descriptor, accessed

# CPUID bits Xen's PV policy hides (cpufeatureset.h: not tagged for PV guests).  PSE matters most:
# with it Linux builds 2 MiB mappings a PV guest may not have (linux-pv-on-unicorn.md §5).
LEAF1_EDX_HIDDEN = (1 << 3) | (1 << 12) | (1 << 13) | (1 << 17)          # PSE MTRR PGE PSE36
LEAF1_ECX_HIDDEN = (1 << 3) | (1 << 5) | (1 << 17) | (1 << 21) | (1 << 24)  # MONITOR VMX PCID X2APIC TSC_DEADLINE
LEAF1_ECX_HYPERVISOR = 1 << 31
LEAF1_ECX_XSAVE, LEAF1_ECX_OSXSAVE = 1 << 26, 1 << 27
# FSGSBASE is shown, as Xen shows it to PV guests ('A' in cpufeatureset.h); privop.py keeps the
# guest's CR4.FSGSBASE virtual and completes the instructions.
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
        self.mmu = None                    # the domain's PvMmu (its NEW_USER_BASEPTR), set by the plugin
        self.kernel_mode = True            # Xen's TF_kernel_mode
        self.kernel_cr3 = 0                # the kernel page table while user mode runs
        self.user_entries = 0
        self.user_syscalls = 0
        self.privops = PrivilegedOps(machine, self)
        self.ports = XenPorts(dom0=False, pm_timer=None)      # the plugin sets the domain's (ioports.py)

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
        emulated = self.privops.emulate(exc)
        if emulated:
            return "emulated as Xen does: " + emulated
        handler = self.traps.get(exc.vector)
        if handler is None or handler[2] == 0:
            why = f"{vector_name(exc.vector)} at {exc.rip:#x} with no handler in the trap table"
            self.m.stop(StopReason("crash", detail=f"domain crash: {why}"))
            return "domain crash (no trap handler)"
        flags, _cs, address = handler
        error_code = (exc.error_code or 0) if exc.vector in HAS_ERROR_CODE else None
        from_user = not self.kernel_mode
        if not self._push_bounce_frame(address, exc.rip, error_code, vector_name(exc.vector)):
            return "domain crash (bounce frame not writable)"
        if exc.vector == 14:
            self.m.memory.write_u64(self.vcpu_info() + VCPU_INFO_CR2, exc.cr2 or 0)
        if flags & pv.TI_FLAG_CLEAR_IF:
            self.set_upcall_mask(1)
        self.bounces += 1
        return f"bounce frame to {address:#x}" + (" from user mode" if from_user else "")

    def iopl_ok(self) -> bool:
        """Xen's iopl_ok (pv/emul-priv-op.c): the virtual IOPL against the virtual CPL, which is 3 in
        user mode and 1 in kernel mode (0 with VMASST_TYPE_architectural_iopl)."""
        if not self.kernel_mode:
            cpl = 3
        else:
            cpl = 0 if pv.VMASST_ARCHITECTURAL_IOPL in self.vm_assists else 1
        return cpl <= self.iopl

    def port_access(self, access: "PortAccess", rip: int) -> "GuestException | PortAnswered | None":
        """Xen's guest_io_okay, then what its emulator does with an allowed access (ioports.py):
        None lets the access reach the machine's device, a ``PortAnswered`` is Xen's answer, a
        ``GuestException`` the fault raised instead."""
        if self.iopl_ok():
            return self.ports.route(access)
        bitmap, nr_ports = self.iobitmap
        if access.port + access.size <= nr_ports:
            address = bitmap + (access.port >> 3)     # Xen reads two bytes, as the TSS bitmap is read
            try:
                mask = int.from_bytes(self._kernel_read(address, 2), "little")
            except GuestMemoryError:
                unreadable = address if not self._kernel_readable(address) else address + 1
                return GuestException(PF_VECTOR, rip, 0, unreadable)
            if not mask & (((1 << access.size) - 1) << (access.port & 7)):
                return self.ports.route(access)
        return GuestException(GP_VECTOR, rip, 0)

    def _kernel_read(self, address: int, size: int) -> bytes:
        """Guest-virtual bytes as the kernel's page table maps them (Xen switches to it to read the
        I/O bitmap from user mode)."""
        if self.kernel_mode:
            return self.m.vmem.read(address, size)
        user_cr3 = self.m.reg("cr3")
        self.m.set_reg("cr3", self.kernel_cr3)
        try:
            return self.m.vmem.read(address, size)
        finally:
            self.m.set_reg("cr3", user_cr3)

    def _kernel_readable(self, address: int) -> bool:
        try:
            self._kernel_read(address, 1)
        except GuestMemoryError:
            return False
        return True

    def _push_bounce_frame(self, address: int, rip: int, error_code: int | None, what: str, *,
                           syscall: bool = False) -> bool:
        """Xen's create_bounce_frame: push rcx, r11, [error code], ``rip``, cs with the saved upcall
        mask in bits 32+, rflags (IF = events unmasked), rsp, ss on the 16-byte-aligned stack, then
        continue at ``address`` in kernel mode.  From kernel mode the frame goes on the current
        stack with the kernel's CS; from user mode Xen first switches to kernel mode (GS, page
        table) and uses the stack stack_switch named, and the frame keeps the user's CS and SS
        (FLAT_USER_CS64 and FLAT_KERNEL_SS for a ``syscall``, as lstar_enter records them).  An
        unwritable stack crashes the domain (False)."""
        m = self.m
        mask = self.upcall_mask()
        rflags = m.reg("rflags")
        saved_rflags = (rflags & ~(RFLAGS_IF | RFLAGS_IOPL)) | (0 if mask else RFLAGS_IF) | self.iopl << 12
        from_user = not self.kernel_mode
        if from_user:
            if syscall:
                cs, ss = pv.FLAT_USER_CS64, pv.FLAT_KERNEL_SS64
            else:
                cs, ss = m.reg("cs"), m.reg("ss")
            user_rsp = m.reg("rsp")
            self._toggle_guest_mode()
            frame_rsp, saved_rsp = self.kernel_stack[1], user_rsp
        else:
            cs, ss = KERNEL_CS, KERNEL_SS
            frame_rsp = saved_rsp = m.reg("rsp")
        frame = [m.reg("rcx"), m.reg("r11")]
        if error_code is not None:
            frame.append(error_code)
        frame += [rip, cs | mask << 32, saved_rflags, saved_rsp, ss]
        rsp = (frame_rsp & ~0xF) - 8 * len(frame)
        try:
            m.vmem.write(rsp, struct.pack(f"<{len(frame)}Q", *(v & 0xFFFF_FFFF_FFFF_FFFF for v in frame)))
        except GuestMemoryError as err:
            m.stop(StopReason("crash", detail=f"domain crash: cannot write the {what} bounce frame at {rsp:#x}: {err}"))
            return False
        if from_user:
            m.engine.load_segments(cs=KERNEL_CS_CACHE, ss=KERNEL_NULL_SS, cpl=KERNEL_CPL)
        m.set_reg("rsp", rsp)
        m.set_reg("rflags", rflags & ~(RFLAGS_CLEARED_ON_BOUNCE | (RFLAGS_DF if syscall else 0)))
        m.set_rip(address)
        return True

    # -- guest kernel and user mode ------------------------------------------------------------------
    def _toggle_guest_mode(self) -> None:
        """Xen's toggle_guest_mode: swap the active and the inactive GS base (swapgs) and switch
        between the kernel page table and the user one (MMUEXT_NEW_USER_BASEPTR)."""
        m = self.m
        active, inactive = m.msr_read(MSR_GS_BASE), m.msr_read(MSR_KERNEL_GS_BASE)
        m.msr_write(MSR_GS_BASE, inactive)
        m.msr_write(MSR_KERNEL_GS_BASE, active)
        if self.kernel_mode:
            self.kernel_cr3 = m.reg("cr3")
            m.set_reg("cr3", self.user_baseptr() * PAGE)
        else:
            m.set_reg("cr3", self.kernel_cr3)
        self.kernel_mode = not self.kernel_mode

    def user_baseptr(self) -> int:
        return self.mmu.user_baseptr if self.mmu is not None else 0

    def _descriptor(self, selector: int) -> SegmentCache | None:
        """The descriptor ``selector`` names in the GDT the CPU uses (None: NULL, LDT, beyond the
        GDT, unreadable)."""
        if selector & ~3 == 0 or selector & SELECTOR_TI or (selector | 7) > pv.GDT_LIMIT:
            return None
        try:
            low, high = struct.unpack("<II", self.m.vmem.read(pv.PERDOMAIN_VIRT_START + (selector & ~7), 8))
        except GuestMemoryError:
            return None
        base = (low >> 16) | (high & 0xFF) << 16 | (high & 0xFF00_0000)
        limit = (low & 0xFFFF) | (high & 0x000F_0000)
        if high & DESC_G:
            limit = limit << 12 | 0xFFF
        return SegmentCache(selector, base, limit, high | DESC_ACCESSED)

    def _user_segments(self, cs: int, ss: int) -> tuple[SegmentCache, SegmentCache] | str:
        """The CS and SS caches a ring-3 ``iretq`` would load for the frame's selectors (RPL 3),
        or why the CPU would refuse them (SDM vol. 2A IRET, return to outer privilege level)."""
        code, stack = self._descriptor(cs), self._descriptor(ss)
        if code is None or not code.flags & DESC_S or not code.flags & DESC_TYPE_CODE:
            return f"CS {cs:#x} is not a code segment"
        if code.dpl != 3 and not code.flags & DESC_TYPE_CONFORMING:
            return f"CS {cs:#x} has DPL {code.dpl}, not 3"
        if not code.flags & DESC_P:
            return f"CS {cs:#x} is not present"
        if stack is None or not stack.flags & DESC_S or stack.flags & DESC_TYPE_CODE or not stack.flags & DESC_TYPE_RW:
            return f"SS {ss:#x} is not a writable data segment"
        if stack.dpl != 3 or not stack.flags & DESC_P:
            return f"SS {ss:#x} is not a present DPL-3 segment"
        return code, stack

    def user_syscall(self, rip: int) -> None:
        """``syscall`` in user mode (Xen's lstar_enter then switch_to_kernel): RCX/R11 as the
        instruction sets them, then a bounce to the syscall callback on the kernel stack, events
        masked if it was registered with CALLBACKF_mask_events; with no callback, #UD at the
        instruction through the trap table."""
        m = self.m
        next_rip = rip + SYSCALL_INSN_LENGTH
        m.set_reg("rcx", next_rip)
        m.set_reg("r11", m.reg("rflags") & ~RFLAGS_RF)
        address, flags = self.callbacks.get("syscall", (0, 0))
        if not address:
            handler = self.traps.get(UD_VECTOR)
            if handler is None or handler[2] == 0:
                m.stop(StopReason("crash", detail=f"domain crash: syscall at {rip:#x} from user mode with no "
                                                  "syscall callback and no #UD handler"))
                return
            if self._push_bounce_frame(handler[2], rip, None, "#UD"):
                if handler[0] & pv.TI_FLAG_CLEAR_IF:
                    self.set_upcall_mask(1)
                self.bounces += 1
            return
        if self._push_bounce_frame(address, next_rip, None, "syscall callback", syscall=True):
            if flags & pv.CALLBACKF_mask_events:
                self.set_upcall_mask(1)
            self.user_syscalls += 1

    def user_software_interrupt(self, vector: int, rip: int, length: int) -> None:
        """``int $n`` in user mode: Xen's permit_softint wants the trap table's DPL at 3; else the
        guest gets #GP with the IDT-flavoured error code at the instruction."""
        from hvsim.core.plugin_types import GuestException

        handler = self.traps.get(vector)
        if handler is not None and handler[0] & 3 == 3:
            self.bounce(GuestException(vector, rip + length, None, None))
        else:
            self.bounce(GuestException(GP_VECTOR, rip, vector * 8 + IDT_ERROR_FLAG, None))

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
        rax, r11, rcx, flags, rip, cs, rflags, rsp, ss = struct.unpack(pv.IRET_CONTEXT_FORMAT, context)
        cs, ss = cs & 0xFFFF, ss & 0xFFFF        # Xen keeps them in cpu_user_regs' 16-bit fields
        info.update(rip=hex(rip), cs=hex(cs), rsp=hex(rsp), flags=flags)
        if cs & 3 == 3:
            return self._iret_to_user(rax, r11, rcx, flags, rip, cs, rflags, rsp, ss)
        m.set_reg("rax", rax)
        if not flags & pv.VGCF_IN_SYSCALL:
            m.set_reg("r11", r11)
            m.set_reg("rcx", rcx)
        self.set_upcall_mask(0 if rflags & RFLAGS_IF else 1)
        self._iret_iopl(rflags)
        m.set_reg("rflags", (rflags & ~RFLAGS_IOPL) | RFLAGS_IF | 2)
        m.set_reg("rsp", rsp)
        m.set_rip(rip)
        return 0

    def _iret_iopl(self, rflags: int) -> None:
        """do_iret (pv/iret.c): with VMASST_TYPE_architectural_iopl the frame's IOPL becomes the
        virtual IOPL; without it the frame's IOPL is ignored."""
        if pv.VMASST_ARCHITECTURAL_IOPL in self.vm_assists:
            self.iopl = (rflags & RFLAGS_IOPL) >> 12

    def _iret_to_user(self, rax, r11, rcx, flags, rip, cs, rflags, rsp, ss) -> int:
        """do_iret's return to user mode: no user page table crashes the domain; else toggle to
        user mode and resume at CPL 3 on the frame's selectors (RPL forced to 3).  With
        VGCF_in_syscall Xen leaves by ``sysretq``, so RCX and R11 are the RIP and RFLAGS loaded."""
        m = self.m
        if not self.user_baseptr():
            m.stop(StopReason("crash", detail="domain crash: iret to user mode with no user page table "
                                              "(MMUEXT_NEW_USER_BASEPTR)"))
            return 0
        segments = self._user_segments(cs | 3, ss | 3)
        if isinstance(segments, str):
            m.stop(StopReason("crash", detail=f"domain crash: iret to user mode at {rip:#x}: {segments}"))
            return 0
        code, stack = segments
        self._iret_iopl(rflags)
        new_rflags = (rflags & RFLAGS_ALL & ~(RFLAGS_IOPL | RFLAGS_VM)) | RFLAGS_IF | 2
        self._toggle_guest_mode()
        m.engine.load_segments(cs=code, ss=stack, cpl=3)
        m.set_reg("rax", rax)
        if flags & pv.VGCF_IN_SYSCALL:
            m.set_reg("rcx", rip)
            m.set_reg("r11", new_rflags)
        else:
            m.set_reg("r11", r11)
            m.set_reg("rcx", rcx)
        self.set_upcall_mask(0 if rflags & RFLAGS_IF else 1)
        m.set_reg("rflags", new_rflags)
        m.set_reg("rsp", rsp)
        m.set_rip(rip)
        self.user_entries += 1
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
        """set_callbacks(event, failsafe, syscall): each registered as CALLBACKOP_register would,
        and, as Xen's do_set_callbacks, the call answers 0 whatever each registration said: a
        non-canonical address is left unregistered (recorded under ``refused``)."""
        info.update(event=hex(a[0]), failsafe=hex(a[1]), syscall=hex(a[2]))
        for name, address in (("event", a[0]), ("failsafe", a[1]), ("syscall", a[2])):
            if is_canonical(address):
                self.callbacks[name] = (address, 0)
            else:
                info.setdefault("refused", []).append(name)
        return 0

    def callback_op(self, a, info) -> int:
        cmd, arg = a[0], a[1]
        if cmd == pv.CALLBACKOP_register:
            kind, flags, address = struct.unpack(pv.CALLBACK_REGISTER_FORMAT, self.m.vmem.read(arg, 16))
            name = pv.CALLBACK_TYPES.get(kind)
            info.update(op="register", type=name or kind, address=hex(address))
            if name is None:
                raise HypercallError(x.EINVAL, f"callback type {kind}")
            if not is_canonical(address):          # x86_64/traps.c register_guest_callback
                raise HypercallError(x.EINVAL, f"{name} callback {address:#x} is not canonical")
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
        """do_set_segment_base (kernel mode): FS, the kernel's GS base (active) and the user's
        (the inactive one, swapped in on the way to user mode) take canonical bases; GS_USER_SEL
        loads a selector into GS for user mode, its base from the descriptor becoming the user's
        GS base, the kernel's staying active.  A selector the CPU would refuse loads NULL instead
        (Xen's fault fixup) and the call still succeeds."""
        which, value = a[0] & 0xFFFF_FFFF, a[1]
        names = {pv.SEGBASE_FS: ("fs", MSR_FS_BASE), pv.SEGBASE_GS_USER: ("gs_user", MSR_KERNEL_GS_BASE),
                 pv.SEGBASE_GS_KERNEL: ("gs_kernel", MSR_GS_BASE)}
        if which in names:
            name, msr = names[which]
            info.update(which=name, base=hex(value))
            if not _canonical(value):
                raise HypercallError(x.EINVAL, f"base {value:#x} is not canonical")
            self.m.msr_write(msr, value)
            return 0
        if which == pv.SEGBASE_GS_USER_SEL:
            selector = value & 0xFFFF
            if selector > 3:
                selector |= 3
            desc = self._descriptor(selector)
            loadable = desc is not None and desc.flags & DESC_S and desc.flags & DESC_P and (
                not desc.flags & DESC_TYPE_CODE or desc.flags & DESC_TYPE_RW) and (
                desc.flags & DESC_TYPE_CODE and desc.flags & DESC_TYPE_CONFORMING or desc.dpl == 3)
            if not loadable:
                selector, base = 0, 0
            else:
                base = desc.base
            info.update(which="gs_user_sel", selector=hex(value), loaded=hex(selector))
            kernel_base = self.m.msr_read(MSR_GS_BASE)
            self.m.set_reg("gs", selector)
            self.m.msr_write(MSR_GS_BASE, kernel_base)
            self.m.msr_write(MSR_KERNEL_GS_BASE, base)
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
        hyper = self.xen.cpuid(leaf, subleaf)
        if hyper is not None and x.CPUID_BASE <= leaf <= x.CPUID_BASE + 0xFF:
            if leaf == x.CPUID_BASE + 2:
                return hyper[0], hyper[1], 1, 0                  # MMU_PT_UPDATE_PRESERVE_AD (PV only)
            if leaf == x.CPUID_BASE + 4:
                return 0, 0, 0, 0                                # HVM features: none for PV
            if leaf == x.CPUID_BASE + 5:
                return 0, 40, 0, 0                               # machine address width
            return hyper
        eax, ebx, ecx, edx = hyper if hyper is not None else self.m.native_cpuid(leaf, subleaf)
        if leaf == 1:
            edx &= ~LEAF1_EDX_HIDDEN
            ecx = (ecx & ~LEAF1_ECX_HIDDEN) | LEAF1_ECX_HYPERVISOR
        elif leaf == 7 and subleaf == 0:
            ebx &= ~LEAF7_EBX_HIDDEN
        elif leaf == 0x8000_0001:
            edx &= ~EXT1_EDX_HIDDEN
        return eax, ebx, ecx, edx

    def emulated_cpuid(self, rip: int) -> None:
        """Xen's forced-emulation prefix (``ud2; .ascii "xen"; cpuid``): answer and step over it.
        The kernel's enlightened view of leaf 1 shows OSXSAVE whenever XSAVE is offered, whatever its
        CR4 says: Xen's own OSXSAVE leaks there, a de-facto part of the PV ABI Linux relies on
        (cpuid.c guest_cpuid, "OSXSAVE handling for PV guests is non-architectural")."""
        m = self.m
        leaf = m.reg("rax") & 0xFFFF_FFFF
        answer = self.cpuid(leaf, m.reg("rcx") & 0xFFFF_FFFF)
        if leaf == 1 and self.kernel_mode and answer[2] & LEAF1_ECX_XSAVE:
            answer = (answer[0], answer[1], answer[2] | LEAF1_ECX_OSXSAVE, answer[3])
        for reg, value in zip(("rax", "rbx", "rcx", "rdx"), answer):
            m.set_reg(reg, value & 0xFFFF_FFFF)
        m.set_rip(rip + len(pv.XEN_EMULATE_PREFIX) + len(pv.CPUID_INSN))


def _canonical(address: int) -> bool:
    """A 48-bit canonical address (bits 63-47 all equal)."""
    top = address >> 47
    return top == 0 or top == (1 << 17) - 1
