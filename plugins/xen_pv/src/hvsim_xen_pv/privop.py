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
  - ``mov`` from CR0, CR2, CR3, CR4: the values the vCPU runs with (CR3: the kernel's table).
  - ``mov`` to CR0 may change TS only (Xen's "Attempt to change unmodifiable CR0 flags" is #GP);
    to CR2 sets it; to CR3 is MMUEXT_NEW_BASEPTR (the table is validated and pinned as such); to
    CR4 is checked against the CPUID the guest is shown (cr4.py) as a CR4 write exit is.
  - ``mov`` to or from DR0-3, DR6, DR7: the virtual debug registers set_debugreg keeps (DR4/DR5
    alias DR6/DR7 as with CR4.DE clear).
  - ``clts``: fpu_taskswitch(0).  ``wbinvd``/``invd``: nothing to flush here.
Not emulated (the guest's #GP, as Xen): ``hlt``, ``lgdt``/``lidt``/``ltr``/``lldt``, ``invlpg``,
``swapgs``, ``sysret``, CR8, and every privileged instruction in user mode.  Not modelled:
``xsetbv`` (Xen emulates it; the engine's XCR0 cannot be written from the host, so the guest gets
#GP), ``rdtsc``/``rdtscp`` under CR4.TSD, the single-step #DB Xen raises after an emulated
instruction when the guest had TF set, and Xen's CR4 policy (it ignores writes to the bits a PV
guest does not control; here CR4 writes are checked as a CPU checks them).  ``in``/``out`` never
fault here (the engine makes no IOPL check; cpu.py's port policy decides them, with the outcome
Xen's emulation gives).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from capstone.x86 import X86_OP_REG

from hvsim.core.cr4 import cr4_write
from hvsim.core.errors import GuestMemoryError
from hvsim.core.memory import is_canonical
from hvsim.xen import HypercallError

if TYPE_CHECKING:
    from hvsim.core.machine import Machine
    from hvsim.core.plugin_types import GuestException

    from .cpu import PvCpu

CR0_TS = 1 << 3
SEGMENT_BASES = (0xC000_0100, 0xC000_0101, 0xC000_0102)     # FS_BASE, GS_BASE, SHADOW_GS_BASE
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

    def emulate(self, exc: "GuestException") -> str | None:
        """Complete the instruction that raised ``exc`` as Xen does and say what was done, or None
        when the #GP is the guest's (nothing changed)."""
        if exc.vector != 13 or exc.error_code:
            return None
        try:
            code = self.m.vmem.read(self.m.code_address(exc.rip), MAX_INSN)
        except GuestMemoryError:
            code = self._readable_prefix(exc.rip)
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
        if name == "mov":
            return self._mov(insn)
        return None

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
            self.m.set_reg(dest, self.m.reg(source))
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
        if not cr4_write(self.m, insn.address):
            return None
        return "CR4 written"
