"""Xen's privileged-operation emulation for a PV guest (xen/arch/x86/pv/emul-priv-op.c).

hvsim runs the PV kernel at CPL 1 with the CPU's IOPL at 0 (cpu.py), so, as under Xen, whatever
it may not execute raises #GP(0) and comes here before the guest sees the fault.  What Xen
completes on the guest's behalf is completed; anything else is the guest's #GP.

- ``cli``/``sti``: a no-op when iopl_ok holds (the virtual IOPL against the virtual CPL: 3 in
  user mode, 1 in kernel mode, 0 with VMASST_TYPE_architectural_iopl); Xen leaves the upcall mask
  alone.  Else #GP.
- In kernel mode only (guest_kernel_mode):
  - ``rdmsr``/``wrmsr``: the MSRs hvsim intercepts go where an intercepted access goes (the
    environment's ``hvsim_msr`` answers, else #GP: traps.py ``on_msr``); the others are the
    engine's own (FS/GS bases, STAR/LSTAR, PAT...), read and written as the CPU holds them.
  - ``mov`` from CR0, CR2, CR3, CR4: the values the vCPU runs with (CR3: the kernel's table; CR4:
    the guest's view, below).
  - ``mov`` to CR0 may change TS only (Xen's "Attempt to change unmodifiable CR0 flags" is #GP);
    to CR2 sets it; to CR3 is MMUEXT_NEW_BASEPTR (the table is validated and pinned as such); to
    CR4 is Xen's pv_fixup_guest_cr4: the guest controls TSD, DE, FSGSBASE and OSXSAVE (each when
    its CPUID feature is shown), the rest of its view is Xen's choice, and nothing faults.
  - ``rdtsc``/``rdtscp`` (#GP only under CR4.TSD): the guest's TSC.
  - ``xsetbv`` (handle_xsetbv): XCR0 may take x87 with any set of the states CPUID leaf 0xD offers
    (AVX only with SSE), once the guest has set CR4.OSXSAVE; anything else is #GP.
  - ``mov`` to or from DR0-3, DR6, DR7: the virtual debug registers set_debugreg keeps (DR4/DR5
    alias DR6/DR7 as with CR4.DE clear).
  - ``clts``: fpu_taskswitch(0).  ``wbinvd``/``invd``: nothing to flush here.
- FSGSBASE, as Xen exposes it to a 64-bit PV guest (pv/domain.c pv_make_cr4): the guest's CR4.FSGSBASE
  is virtual and the engine's stays clear, so ``rdfsbase``/``rdgsbase``/``wrfsbase``/``wrgsbase``
  raise #UD, which is the guest's while its bit is clear and otherwise completes here in either
  mode (the engine's own WR*BASE would take a non-canonical base, which is #GP(0) on a CPU).
Not emulated (the guest's #GP, as Xen): ``hlt``, ``lgdt``/``lidt``/``ltr``/``lldt``, ``invlpg``,
``swapgs``, ``sysret``, CR8, and every privileged instruction in user mode.  Not modelled: the
single-step #DB Xen raises after an emulated instruction when the guest had TF set, and CR4.DE's
effect on DR4/DR5.  ``in``/``out`` never fault here (the engine makes no IOPL check; cpu.py's port
policy decides them, with the outcome Xen's emulation gives).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from capstone.x86 import X86_OP_REG

from hvsim.core.errors import GuestMemoryError
from hvsim.core.memory import is_canonical
from hvsim.xen import HypercallError

if TYPE_CHECKING:
    from hvsim.core.machine import Machine
    from hvsim.core.plugin_types import GuestException

    from .cpu import PvCpu

CR0_TS = 1 << 3
CR4_TSD, CR4_DE, CR4_FSGSBASE, CR4_OSXSAVE = 1 << 2, 1 << 3, 1 << 16, 1 << 18
XSTATE_X87, XSTATE_SSE, XSTATE_AVX = 1, 2, 4
# The CR4 bits a PV guest controls (Xen's PV_CR4_GUEST_MASK), each with the CPUID feature it needs
# as (leaf, register index in eax..edx, bit): TSC, DE, FSGSBASE, XSAVE.
CR4_GUEST_CONTROLLED = {CR4_TSD: (1, 3, 4), CR4_DE: (1, 3, 2), CR4_FSGSBASE: (7, 1, 0), CR4_OSXSAVE: (1, 2, 26)}
MSR_FS_BASE, MSR_GS_BASE, MSR_TSC_AUX = 0xC000_0100, 0xC000_0101, 0xC000_0103
FSGSBASE_INSNS = {"rdfsbase": MSR_FS_BASE, "rdgsbase": MSR_GS_BASE, "wrfsbase": MSR_FS_BASE,
                  "wrgsbase": MSR_GS_BASE}
SEGMENT_BASES = (MSR_FS_BASE, MSR_GS_BASE, 0xC000_0102)       # and SHADOW_GS_BASE: canonical only
DEBUG_REGISTERS = {"dr0": 0, "dr1": 1, "dr2": 2, "dr3": 3, "dr4": 6, "dr5": 7, "dr6": 6, "dr7": 7}
CONTROL_REGISTERS = ("cr0", "cr2", "cr3", "cr4")
CACHE_FLUSHES = ("wbinvd", "invd")
MAX_INSN = 15


class PrivilegedOps:
    """The emulator for one PV vCPU (``cpu``): ``emulate`` a #GP(0) or leave it to the guest."""

    def __init__(self, machine: "Machine", cpu: "PvCpu"):
        self.m = machine
        self.cpu = cpu
        self._cs = Cs(CS_ARCH_X86, CS_MODE_64)
        self._cs.detail = True
        self.emulated = 0
        self.fsgsbase = False          # the guest's CR4.FSGSBASE (the engine's stays clear)

    def emulate(self, exc: "GuestException") -> str | None:
        """Complete the instruction that raised ``exc`` as Xen does and say what was done, or None
        when the #GP (or #UD) is the guest's (nothing changed)."""
        if exc.vector not in (6, 13) or exc.error_code:
            return None
        try:
            code = self.m.vmem.read(self.m.code_address(exc.rip), MAX_INSN)
        except GuestMemoryError:
            code = self._readable_prefix(exc.rip)
        if exc.vector == 6:
            return self.fsgsbase_instruction(exc.rip, code)
        insn = next(self._cs.disasm(code, exc.rip, 1), None)
        if insn is None:
            return None
        done = self._emulate(insn)
        if done is None:
            return None
        if self.m.stop_reason is None and self.m.reg("rip") == exc.rip:
            self.m.set_rip(exc.rip + insn.size)
        self.emulated += 1
        return f"{insn.mnemonic} {insn.op_str}".rstrip() + f": {done}"

    def _readable_prefix(self, rip: int) -> bytes:
        """The bytes up to the first unreadable one (an instruction at the end of a mapping)."""
        out = b""
        for at in range(MAX_INSN):
            try:
                out += self.m.vmem.read(self.m.code_address(rip + at), 1)
            except GuestMemoryError:
                break
        return out

    def _emulate(self, insn) -> str | None:
        name = insn.mnemonic
        if name in ("cli", "sti"):
            return f"a no-op at vIOPL {self.cpu.iopl}, as Xen does" if self.cpu.iopl_ok() else None
        if not self.cpu.kernel_mode:
            return None
        if name in ("rdmsr", "wrmsr"):
            return self._msr(insn, name == "wrmsr")
        if name == "clts":
            self.m.set_reg("cr0", self.m.reg("cr0") & ~CR0_TS)
            return "CR0.TS cleared (fpu_taskswitch(0))"
        if name in CACHE_FLUSHES:
            return "no caches are modelled"
        if name in ("rdtsc", "rdtscp"):
            tsc = self.m.tsc()
            self.m.set_reg("rax", tsc & 0xFFFF_FFFF)
            self.m.set_reg("rdx", tsc >> 32)
            if name == "rdtscp":
                self.m.set_reg("rcx", self.m.regfile.msr_read(MSR_TSC_AUX) & 0xFFFF_FFFF)
            return f"TSC {tsc:#x}"
        if name == "mov":
            return self._mov(insn)
        if name == "xsetbv":
            return self._xsetbv()
        return None

    def _xsetbv(self) -> str | None:
        m = self.m
        value = (m.reg("rdx") & 0xFFFF_FFFF) << 32 | m.reg("rax") & 0xFFFF_FFFF
        eax, _, _, edx = self.cpu.cpuid(0xD, 0)
        offered = edx << 32 | eax
        if (m.reg("rcx") & 0xFFFF_FFFF or not self.cr4_view() & CR4_OSXSAVE or not value & XSTATE_X87
                or value & ~offered or (value & XSTATE_AVX and not value & XSTATE_SSE)):
            return None
        if not m.engine.write_xcr0(value):
            m.note("xen_pv: xsetbv: the engine's XCR0 cannot be found; the guest gets #GP")
            return None
        return f"XCR0 = {value:#x}"

    def _msr(self, insn, write: bool) -> str | None:
        m = self.m
        index = m.reg("rcx") & 0xFFFF_FFFF
        if m.guest_mode.intercepted(index, write=write):
            if not m.traps.msr_access(insn.address):    # the environment's answer, or #GP
                return None
            return f"MSR {index:#x} as an intercepted access"
        if write:
            value = (m.reg("rdx") & 0xFFFF_FFFF) << 32 | m.reg("rax") & 0xFFFF_FFFF
            if index in SEGMENT_BASES and not is_canonical(value):
                return None
            m.uc.msr_write(index, value)
            return f"MSR {index:#x} = {value:#x}"
        value = m.regfile.msr_read(index)
        m.set_reg("rax", value & 0xFFFF_FFFF)
        m.set_reg("rdx", value >> 32)
        return f"MSR {index:#x} read {value:#x}"

    def _mov(self, insn) -> str | None:
        operands = insn.operands
        if len(operands) != 2 or any(op.type != X86_OP_REG for op in operands):
            return None
        dest, source = (insn.reg_name(op.reg) for op in operands)
        if source in CONTROL_REGISTERS:
            self.m.set_reg(dest, self.cr4_view() if source == "cr4" else self.m.reg(source))
            return f"{source} read"
        if source in DEBUG_REGISTERS:
            self.m.set_reg(dest, self.cpu.debugregs.get(DEBUG_REGISTERS[source], 0))
            return f"{source} read (virtual)"
        if dest in DEBUG_REGISTERS:
            try:
                self.cpu.set_debugreg((DEBUG_REGISTERS[dest], self.m.reg(source)), {})
            except HypercallError:
                return None
            return f"{dest} written (virtual)"
        if dest not in CONTROL_REGISTERS:
            return None
        value = self.m.reg(source)
        if dest == "cr0":
            if (value ^ self.m.reg("cr0")) & ~CR0_TS & 0xFFFF_FFFF_FFFF_FFFF:
                return None
            self.m.set_reg("cr0", value)
            return "CR0.TS written (fpu_taskswitch)"
        if dest == "cr2":
            self.m.set_reg("cr2", value)
            return "CR2 written"
        if dest == "cr3":
            try:
                self.cpu.mmu.new_baseptr(value >> 12)
            except HypercallError:
                return None
            return "CR3 written (MMUEXT_NEW_BASEPTR)"
        return self.write_cr4(value)

    def cr4_view(self) -> int:
        """CR4 as the guest reads it: the engine's, with the virtual FSGSBASE bit."""
        return self.m.reg("cr4") | (CR4_FSGSBASE if self.fsgsbase else 0)

    def write_cr4(self, value: int) -> str:
        """pv_fixup_guest_cr4: the controllable bits the guest's CPUID allows are taken from
        ``value``, the others keep Xen's choice; FSGSBASE goes to the virtual bit."""
        allowed = 0
        for bit, (leaf, reg, feature) in CR4_GUEST_CONTROLLED.items():
            if self.cpu.cpuid(leaf, 0)[reg] >> feature & 1:
                allowed |= bit
        engine = self.m.reg("cr4")
        self.fsgsbase = bool(value & allowed & CR4_FSGSBASE)
        new = (engine & ~sum(CR4_GUEST_CONTROLLED)) | (value & allowed & ~CR4_FSGSBASE)
        if new != engine:
            self.m.set_reg("cr4", new)
        return f"CR4 view {self.cr4_view():#x}"

    def fsgsbase_instruction(self, rip: int, code: bytes) -> str | None:
        """The #UD of an ``rd``/``wr`` ``fs``/``gs`` ``base`` at ``rip``: completed (or #GP(0) for a
        non-canonical base) when the guest's CR4.FSGSBASE is set; None leaves the #UD to the guest."""
        if not self.fsgsbase:
            return None
        insn = next(self._cs.disasm(code, rip, 1), None)
        if insn is None or insn.mnemonic not in FSGSBASE_INSNS or len(insn.operands) != 1:
            return None
        m = self.m
        msr = FSGSBASE_INSNS[insn.mnemonic]
        register = insn.reg_name(insn.operands[0].reg)
        wide = insn.operands[0].size == 8
        if insn.mnemonic.startswith("rd"):
            value = m.regfile.msr_read(msr)
            m.set_reg(_full(register), value if wide else value & 0xFFFF_FFFF)
        else:
            value = m.reg(_full(register)) & (0xFFFF_FFFF_FFFF_FFFF if wide else 0xFFFF_FFFF)
            if not is_canonical(value):
                m.traps.exception(13, 0, rip)
                return f"{insn.mnemonic} {insn.op_str}: base {value:#x} is not canonical, #GP(0)"
            m.uc.msr_write(msr, value)
        m.set_rip(rip + insn.size)
        self.emulated += 1
        return f"{insn.mnemonic} {insn.op_str}: {value:#x} (CR4.FSGSBASE is the guest's)"


def _full(register: str) -> str:
    """The 64-bit register a 32-bit operand names (eax -> rax, r8d -> r8)."""
    if register.startswith("e"):
        return "r" + register[1:]
    return register[:-1] if register.endswith("d") and register[1:-1].isdigit() else register
