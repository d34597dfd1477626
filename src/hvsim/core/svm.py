"""The guest runs as an SVM guest of the emulated CPU: that is how hvsim traps MSR accesses.

Unicorn 2.1.4 offers no hook for ``rdmsr``/``wrmsr`` (its helpers dispatch none), answers unknown
MSRs with 0 and never raises #GP.  Its CPU model does implement AMD SVM, though, and an intercepted
instruction in guest mode ends in ``cpu_vmexit``, which Unicorn reports to ``UC_HOOK_INTR`` as
vector ``0x100 + exit code`` with RIP at the instruction (msr-trapping.md, strategy C).  So before
the first guest instruction the host executes one ``vmrun`` whose VMCB carries the environment's
entry state and two intercepts:

- MSR_PROT: every MSR outside the three MSR-permission-map ranges, and those whose map bit is set,
  exits as vector 0x17c.  Nothing is added to the hot path: translated code is unchanged.
- INTn: ``int N``/``int3`` exit as vector 0x175 with RIP at the instruction.  Without it, the engine
  leaves ``exception_is_int`` set after a software interrupt and the next MSR exit reports a stale RIP.
- CPUID: ``cpuid`` exits as vector 0x172 with RIP at the instruction, before the engine computes
  anything, so the answer may be a fault (CPUID faulting).  The engine's UC_HOOK_INSN for CPUID
  runs in the middle of a translation block: a RIP written there is lost and the next
  instructions of the block still run, so it cannot deliver a fault.
- CR4 writes: ``mov %reg, %cr4`` exits as vector 0x114 with RIP at the instruction, so a bit the
  guest's CPUID does not offer can be #GP as on hardware (the engine takes any bit).
- INVLPG (when ``intercept_invlpg`` is set, which the native TLB filler needs): ``invlpg`` exits as
  vector 0x179 with RIP at the instruction, before the engine drops anything; dropped again
  (``stop_intercepting_invlpg``) once that filler has handed over.

The VMCB, the host save area, the permission map and the ``vmrun`` stub live in a small region mapped
at 2^40, just past the engine CPU's physical address width (MAXPHYADDR 40, Unicorn's
TCG_PHYS_ADDR_BITS): the CPU's own accesses (VMRUN, the permission-map lookups) are physical and
reach it, but no guest access can.  A page-table entry naming a frame there has reserved bits set
and faults (#PF with the RSVD error bit) as on hardware; 32-bit and PSE-36 paging cannot form such an
address, and without paging a linear address is at most 32 bits wide outside long mode.  Unicorn never runs QEMU's ``do_vmexit``,
so the CPU stays in guest mode for the whole run.  Two rules follow (both enforced by the Machine):
the host must never ``msr_read``/``msr_write`` an intercepted MSR (that exits from outside a
translation block and kills the process), and EFER is never intercepted.

Layouts: AMD64 APM vol. 2, appendix B (VMCB), §15.11 (MSR permission map); the same offsets are in
QEMU's target/i386/svm.h, which is what Unicorn implements.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from unicorn import UC_PROT_ALL
from unicorn.x86_const import UC_X86_REG_CR4, UC_X86_REG_RAX, UC_X86_REG_TR

from .cpu import Segment

if TYPE_CHECKING:
    from .cpu import EntryState
    from .engine_state import EngineState
    from .memory import GuestMemory

# The hidden region: the first address past the engine CPU's 40-bit physical address width
# (QEMU target/i386/cpu.h TCG_PHYS_ADDR_BITS; PG_HI_RSVD_MASK makes bits 51:40 of a paging entry
# reserved), so out of every guest's reach; also above the largest RAM a MachineConfig allows.
ENGINE_PHYS_ADDR_BITS = 40
REGION = 1 << ENGINE_PHYS_ADDR_BITS
VMCB = REGION
HSAVE = REGION + 0x1000
MSRPM = REGION + 0x2000            # 8 KiB
STUB = REGION + 0x4000
REGION_SIZE = 0x5000
VMRUN = b"\x0f\x01\xd8"

MSR_EFER = 0xC000_0080
MSR_VM_HSAVE_PA = 0xC001_0117
EFER_LME = 1 << 8
EFER_SVME = 1 << 12

# VMCB control area
VMCB_INTERCEPT_CR_WRITE = 0x002
VMCB_INTERCEPT_MISC1 = 0x00C
INTERCEPT_CR4_WRITE = 1 << 4
VMCB_MSRPM_BASE_PA = 0x048
INTERCEPT_CPUID = 1 << 18
INTERCEPT_INTN = 1 << 21
INTERCEPT_INVLPG = 1 << 25
INTERCEPT_MSR_PROT = 1 << 28

# VMCB state save area: segments are {u16 selector, u16 attrib, u32 limit, u64 base}
VMCB_ES, VMCB_CS, VMCB_SS, VMCB_DS = 0x400, 0x410, 0x420, 0x430
VMCB_GDTR, VMCB_IDTR = 0x460, 0x480
VMCB_EFER = 0x4D0
VMCB_CR4, VMCB_CR3, VMCB_CR0 = 0x548, 0x550, 0x558
VMCB_DR7, VMCB_DR6 = 0x560, 0x568
VMCB_RFLAGS, VMCB_RIP, VMCB_RSP, VMCB_RAX = 0x570, 0x578, 0x5D8, 0x5F8

# Unicorn's interrupt number for a #VMEXIT: EXCP_VMEXIT (0x100) + exit code.
EXCP_VMEXIT = 0x100
EXIT_CR4_WRITE = EXCP_VMEXIT + 0x14
EXIT_CPUID = EXCP_VMEXIT + 0x72
EXIT_SWINT = EXCP_VMEXIT + 0x75
EXIT_INVLPG = EXCP_VMEXIT + 0x79
EXIT_MSR = EXCP_VMEXIT + 0x7C
EXIT_SHUTDOWN = EXCP_VMEXIT + 0x7F

# The three MSR ranges the permission map covers, with their bit offsets (2 bits per MSR).
_MSRPM_RANGES = ((0x0000_0000, 0), (0xC000_0000, 0x4000), (0xC001_0000, 0x8000))
_MSRPM_RANGE_SIZE = 0x2000


def msrpm_bits(index: int) -> int | None:
    """The read bit's position in the permission map (the write bit follows), or ``None`` for an
    MSR outside the map, which always exits."""
    for base, bit in _MSRPM_RANGES:
        if base <= index < base + _MSRPM_RANGE_SIZE:
            return bit + 2 * (index - base)
    return None


class GuestMode:
    """Owns the hidden region of one engine: VMCB, host save area, MSR permission map, stub."""

    def __init__(self, uc):
        self.uc = uc
        uc.mem_map(REGION, REGION_SIZE, UC_PROT_ALL)
        uc.mem_write(STUB, VMRUN)
        self.entered = False
        self.intercept_invlpg = False
        self._intercepts = 0

    def intercept_msr(self, index: int, *, read: bool = True, write: bool = True) -> None:
        """Make accesses to an MSR inside the permission map exit (those outside always do)."""
        bit = msrpm_bits(index)
        if bit is None:
            return
        byte_at = MSRPM + bit // 8
        byte = self.uc.mem_read(byte_at, 1)[0]
        shift = bit % 8
        byte |= (1 << shift if read else 0) | (2 << shift if write else 0)
        self.uc.mem_write(byte_at, bytes([byte]))

    def intercepted(self, index: int, *, write: bool = False) -> bool:
        bit = msrpm_bits(index)
        if bit is None:
            return True
        bit += 1 if write else 0
        return bool(self.uc.mem_read(MSRPM + bit // 8, 1)[0] >> (bit % 8) & 1)

    def stop_intercepting_invlpg(self, engine: "EngineState") -> bool:
        """Let ``invlpg`` run in the engine again (the native TLB filler that needed the exit has
        handed over for good).  The engine keeps the intercept bits VMRUN loaded in its CPU state
        (QEMU's env->intercept, misc1 in the low half), read at every intercept check: the one
        field holding this machine's bits is rewritten.  False when it cannot be found."""
        if not self.intercept_invlpg:
            return True
        if not engine.replace_word(self._intercepts, self._intercepts & ~INTERCEPT_INVLPG):
            return False
        self._intercepts &= ~INTERCEPT_INVLPG
        self.intercept_invlpg = False
        return True

    def enter(self, state: "EntryState", memory: "GuestMemory") -> None:
        """Execute ``vmrun`` with ``state`` as the guest state; the caller makes the engine stop
        before the guest's first block (it runs until something stops it).

        The general registers VMRUN does not load (all but RAX/RSP) keep the values the environment
        gave them.  Raises ``ValueError`` when a selector does not name a GDT entry in guest RAM.
        """
        uc = self.uc
        gdt_base, gdt_limit = state.gdt
        vmcb = bytearray(0x1000)
        self._intercepts = (INTERCEPT_MSR_PROT | INTERCEPT_INTN | INTERCEPT_CPUID
                            | (INTERCEPT_INVLPG if self.intercept_invlpg else 0))
        struct.pack_into("<I", vmcb, VMCB_INTERCEPT_MISC1, self._intercepts)
        struct.pack_into("<H", vmcb, VMCB_INTERCEPT_CR_WRITE, INTERCEPT_CR4_WRITE)
        struct.pack_into("<Q", vmcb, VMCB_MSRPM_BASE_PA, MSRPM)
        for offset, segment in ((VMCB_ES, state.es), (VMCB_CS, state.cs), (VMCB_SS, state.ss),
                                (VMCB_DS, state.ds)):
            if not isinstance(segment, Segment):
                segment = Segment.from_gdt(memory, gdt_base, gdt_limit, segment)
            vmcb[offset:offset + 16] = segment.pack()
        struct.pack_into("<HHIQ", vmcb, VMCB_GDTR, 0, 0, gdt_limit, gdt_base)
        struct.pack_into("<HHIQ", vmcb, VMCB_IDTR, 0, 0, state.idt[1], state.idt[0])
        for offset, value in ((VMCB_EFER, state.efer), (VMCB_CR4, state.cr4), (VMCB_CR3, state.cr3),
                              (VMCB_CR0, state.cr0), (VMCB_DR7, 0x400), (VMCB_DR6, 0xFFFF0FF0),
                              (VMCB_RFLAGS, state.rflags), (VMCB_RIP, state.rip), (VMCB_RSP, state.rsp),
                              (VMCB_RAX, uc.reg_read(UC_X86_REG_RAX))):
            struct.pack_into("<Q", vmcb, offset, value)
        uc.mem_write(VMCB, bytes(vmcb))
        if state.tr is not None:              # VMRUN leaves TR alone: load it on the host side
            uc.reg_write(UC_X86_REG_TR, state.tr)
        # VMRUN loads CR0 before CR4 and EFER, and the engine refuses CR0.PG with EFER.LME unless
        # CR4.PAE is already set; so the host's CR4 and EFER.LME are made the guest's first.
        uc.reg_write(UC_X86_REG_CR4, state.cr4)
        efer = uc.msr_read(MSR_EFER)
        uc.msr_write(MSR_EFER, (efer & ~EFER_LME) | (state.efer & EFER_LME) | EFER_SVME)
        uc.msr_write(MSR_VM_HSAVE_PA, HSAVE)
        uc.reg_write(UC_X86_REG_RAX, VMCB)
        # The caller stops the engine before the guest's first block (the native block hook's
        # deadline, runloop.py).  Not an exit at the entry RIP: the engine translates an exit into
        # an empty block, and an empty block at a page boundary makes it look up the page before;
        # unmapped there (a PV kernel entered at virtual 0), the lookup leaves a #PF behind that
        # the guest's first instruction then takes.
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        uc.emu_start(STUB, 0)
        self.entered = True
