"""Trap dispatch: the engine hooks that turn guest exits into device accesses, plugin hook calls and
exception deliveries.  No hook here runs per instruction.

| guest does                | engine reports             | goes to                                      |
|---------------------------|----------------------------|----------------------------------------------|
| ``in``/``out``            | UC_HOOK_INSN IN/OUT        | the port policy's fault if it denies, else   |
|                           |                            | attached device, else ``hvsim_port_io``      |
| ``cpuid``                 | UC_HOOK_INTR, #VMEXIT CPUID| #GP(0) if faulting, else ``hvsim_cpuid``,    |
|                           |                            | else ``machine.native_cpuid``                |
| ``mov %reg, %cr4``        | UC_HOOK_INTR, #VMEXIT CR4  | #GP(0) for bits CPUID does not offer, else   |
|                           |                            | the engine's CR4 (``cr4.py``)                |
| ``syscall``               | UC_HOOK_INSN SYSCALL       | ``hvsim_trap``, else #UD / architectural     |
| ``sysenter`` (32-bit)     | UC_HOOK_INSN SYSENTER      | ``hvsim_trap``, else architectural / #GP(0)  |
| invalid opcode (vmcall..) | UC_HOOK_INSN_INVALID       | ``hvsim_trap``, else #UD through the IDT     |
| ``rdmsr``/``wrmsr``       | UC_HOOK_INTR, #VMEXIT MSR  | ``hvsim_msr``, else #GP(0) through the IDT   |
| ``int N``, ``int3``       | UC_HOOK_INTR, #VMEXIT SWINT| ``hvsim_trap``, else gate N of the IDT       |
| CPU exception             | UC_HOOK_INTR               | ``hvsim_exception``, else IDT delivery       |
|                           |                            | (#GP/#PF of a segment check: memop.py)       |
| access outside RAM        | UC_HOOK_MEM_*_UNMAPPED     | stop ``bad-access`` with the address         |
| fetch from a device window| UC_HOOK_MEM_FETCH_PROT     | stop ``bad-access`` with the address         |

The #VMEXIT rows exist because the guest runs as an SVM guest of the emulated CPU (svm.py).

A trap is on the guest's hot path (a PV kernel makes tens of thousands of hypercalls): registers
are read through ``machine.regfile`` (registers.py, no binding work per read), the code segment comes
from the engine's hidden state in one context copy (for an invalid opcode, RIP with it:
``EngineState.code_position``), and a trapping instruction's length is decoded once per distinct
byte sequence (``disasm.instruction_length``).  The invalid-opcode hook, which every ``vmcall``
hypercall takes, and the IN/OUT hooks, which every port access takes, are registered with libunicorn
directly (``_invalid_entry``, ``_in_entry``, ``_out_entry``), without the binding's wrapper frames.

Port policy (``set_port_policy``): an environment whose guest may be refused a port (Xen's PV
guests: a virtual IOPL and I/O bitmap, not the CPU's) names a callable that the IN/OUT hooks ask
before the access completes; it may also answer the access itself (``PortAnswered``: a port the
hypervisor keeps from the guest reads all ones, no device reached).  The engine cannot fault there itself (Unicorn 2.1.4's gen_check_io
returns before its IOPL/TSS-bitmap checks), and a fault cannot be delivered from the hook: it runs
inside the translation block (RIP synced to the I/O instruction by ``cpu_restore_state``), a RIP
written there is lost and the rest of the block still runs.  So a denied access borrows the
engine's I/O-breakpoint check: with HF_IOBPT in hflags (set when the policy is installed) every
translated ``in``/``out``/``ins``/``outs`` ends in ``helper_bpt_io``, which raises #DB before the
next instruction when an enabled DR7 I/O breakpoint covers the port.  The hook sets such a
breakpoint (DR3/DR7) on the port, skips the device, and the #DB reaches ``on_interrupt``, which
puts back DR3/DR6/DR7 and the registers the instruction wrote (RAX of ``in``, RSI/RDI/RCX of the
string forms) and delivers the policy's fault at the I/O instruction.  Not undone: a denied ``ins``
has already stored to its destination (the engine's restartability store precedes the port read).
A guest that loads DR7 itself (``mov %dr7``) clears HF_IOBPT; a denied access after that stops the
run as ``unhandled-trap``.

The unmapped-memory hooks are bounded to the ranges that hold no RAM: a memory hook covering RAM
would put every store to an executable page on the engine's slow path (guest-store-speed.md).
"""

from __future__ import annotations

import ctypes
import functools
import re
import traceback
from typing import TYPE_CHECKING

from unicorn import (
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_WRITE_UNMAPPED,
    UC_PROT_EXEC,
)
from unicorn.unicorn_const import UC_ERR_OK
from unicorn.unicorn_py3.unicorn import UcError, uclib
from unicorn.x86_const import (
    UC_X86_INS_IN,
    UC_X86_INS_OUT,
    UC_X86_INS_SYSCALL,
    UC_X86_INS_SYSENTER,
    UC_X86_REG_RAX,
    UC_X86_REG_RBX,
    UC_X86_REG_RCX,
    UC_X86_REG_DR3,
    UC_X86_REG_DR6,
    UC_X86_REG_DR7,
    UC_X86_REG_RDI,
    UC_X86_REG_RDX,
    UC_X86_REG_RIP,
    UC_X86_REG_RSI,
)

from .disasm import disassemble_one, instruction_length
from .native import HANDOVER_INVLPG
from .memop import segment_fault
from .cpu import MSR_EFER
from .errors import GuestMemoryError
from .events import Fault
from .engine_state import SegmentCache
from .exceptions import GENERAL_PROTECTION, HAS_ERROR_CODE, DeliveryError, NotModelled, vector_name
from .events import Call
from .plugin_types import GuestException, MsrAccess, PortAccess, PortAnswered, Trap
from .result import StopReason
from .cr4 import cr4_write
from .svm import EXCP_VMEXIT, EXIT_CPUID, EXIT_CR4_WRITE, EXIT_INVLPG, EXIT_MSR, EXIT_SHUTDOWN, EXIT_SWINT

if TYPE_CHECKING:
    from .machine import Machine

UD = 6
GP = 13
RDMSR, WRMSR = b"\x0f\x32", b"\x0f\x30"
# Software-interrupt instructions: opcode -> (vector or None for "the next byte", length)
SOFTWARE_INT = {0xCC: (3, 1), 0xCD: (None, 2), 0xCE: (4, 1)}
# Legacy prefixes (SDM vol. 2A, 2.1.1): the CPU ignores them on int3/int n/into, whose length they add
# to (a LOCK on them is #UD, raised before the exit).
LEGACY_PREFIXES = frozenset(b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3")
DEVICE_NOT_AVAILABLE, CR0_EM, CR4_OSFXSR = 7, 1 << 2, 1 << 9
ICEBP, LOCK, DEBUG = 0xF1, 0xF0, 1      # INT1 (SDM vol. 2A, INT n/INTO/INT3/INT1): #DB, a trap
PAGE = 0x1000
# DR7 (SDM vol. 3, 18.2.4): breakpoint 3 locally enabled (L3, bit 6), R/W3 = 10b (I/O read or write,
# bits 28-29), LEN3 = 00b (one byte); the engine's helper_bpt_io needs no CR4.DE.
DR7_BP3_IO = (1 << 6) | (2 << 28)
DR7_BP3_FIELDS = (3 << 6) | (0xF << 28)
# What a port access may write, put back when a denied one is faulted.
_IO_REGISTERS = (UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RSI, UC_X86_REG_RDI,
                 UC_X86_REG_DR3, UC_X86_REG_DR6, UC_X86_REG_DR7)


def software_interrupt(code: bytes, long_mode: bool) -> tuple[int | None, int, int]:
    """(vector or None for ``int n``, prefix length, instruction length) of the software interrupt
    ``code`` starts with, past its legacy prefixes (and, in 64-bit mode, a REX prefix); length 0
    when it is none."""
    at = 0
    while at < len(code) and code[at] in LEGACY_PREFIXES:
        at += 1
    if long_mode and at < len(code) and code[at] & 0xF0 == 0x40:
        at += 1
    if at >= len(code) or code[at] not in SOFTWARE_INT:
        return None, at, 0
    vector, length = SOFTWARE_INT[code[at]]
    return vector, at, at + length
EFER_SCE = 1 << 0
EFER_LMA = 1 << 10
CR0_PE = 1 << 0
# SYSCALL/SYSENTER MSRs, engine-native (Intel SDM vol. 4 table 2-2; AMD APM vol. 2, 6.1.1).
MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_FMASK = 0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084
SYSCALL_INSN_LENGTH = 2                 # syscall and sysenter are both 0f xx; the engine adds it
RFLAGS_IF, RFLAGS_RF, RFLAGS_VM = 1 << 9, 1 << 16, 1 << 17
# The fixed hidden state SYSCALL/SYSENTER give CS and SS (SDM vol. 2B SYSCALL/SYSENTER "Operation";
# the same flags QEMU's helper_syscall loads): base 0, limit 4 GiB, DPL 0, accessed.
FLAT_LIMIT = 0xFFFF_FFFF
CS64_FLAGS = 0x00A0_9B00                # G, L, P, S, code exec/read, accessed
CS32_FLAGS = 0x00C0_9B00                # G, D, P, S, code exec/read, accessed
SS_FLAGS = 0x00C0_9300                  # G, B, P, S, data read/write, accessed
MAX_INSN = 15
PAGE = 0x1000
_VMEM_TRANSLATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p)(
    ctypes.cast(uclib.uc_vmem_translate, ctypes.c_void_p).value)
_MSR_ARGUMENTS = (UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX)
# UC_HOOK_INSN_INVALID's C signature (unicorn.h uc_cb_hookinsn_invalid_t): bool (uc_engine *, void *user_data)
_INVALID_HOOK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)
# UC_HOOK_INSN IN/OUT (unicorn.h uc_cb_insn_in_t, uc_cb_insn_out_t):
# uint32_t (uc_engine *, uint32_t port, int size, void *user_data) and
# void (uc_engine *, uint32_t port, int size, uint32_t value, void *user_data)
_IN_HOOK = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
_OUT_HOOK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)
_SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF}      # an in/out moves 1, 2 or 4 bytes
_CPUID_ARGUMENTS = (UC_X86_REG_RAX, UC_X86_REG_RCX)


def _guarded(method):
    """Run a hook body; a Python exception becomes a ``host-error`` stop that keeps the trace."""

    @functools.wraps(method)
    def wrapper(self, uc, *args):
        try:
            return method(self, *args)
        except Exception as exc:  # noqa: BLE001 - the run must end with a result, not a traceback
            self.m.host_traceback = traceback.format_exc()
            self.m.stop(StopReason("host-error", detail=f"{type(exc).__name__} in {method.__name__}: {exc}"))
            return self._failure_value.get(method.__name__, None)

    return wrapper


class TrapDispatcher:
    _failure_value = {"on_unmapped": False}

    def __init__(self, machine: "Machine"):
        self.m = machine
        uc = machine.uc
        self._handle = uc._uch.value
        self._physical = ctypes.c_uint64()          # uc_vmem_translate's answer (_code)
        self._physical_at = ctypes.addressof(self._physical)
        # what every port access uses, looked up once (the table is filled as devices attach)
        self._port_devices = machine.ports.devices
        self._unclaimed_ports = machine.unclaimed_ports
        self._port_io_hook = machine.pm.hook.hvsim_port_io
        self._port_policy = None        # set_port_policy
        # The port I/O hooks (a Linux boot makes ~80k exits, most to the PIT and the UART) and the
        # invalid-opcode hook (every hypercall's path) are called by the engine through callbacks
        # of their own (``_in_entry``, ``_out_entry``, ``_invalid_entry``) instead of the binding's
        # two wrapper frames; the callback objects live as long as the dispatcher.
        self._in_callback = _IN_HOOK(self._in_entry)
        self._out_callback = _OUT_HOOK(self._out_entry)
        self._invalid_callback = _INVALID_HOOK(self._invalid_entry)
        self._hook_direct(UC_HOOK_INSN, self._in_callback, UC_X86_INS_IN)
        self._hook_direct(UC_HOOK_INSN, self._out_callback, UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self.on_syscall, None, 1, 0, UC_X86_INS_SYSCALL)
        uc.hook_add(UC_HOOK_INSN, self.on_sysenter, None, 1, 0, UC_X86_INS_SYSENTER)
        self._hook_direct(UC_HOOK_INSN_INVALID, self._invalid_callback)
        uc.hook_add(UC_HOOK_INTR, self.on_interrupt)
        self._opcode_handlers: dict[bytes, object] = {}     # add_opcode_handler
        self._opcode_lengths: tuple[int, ...] = ()
        # what every invalid-opcode trap uses, looked up once (the machine keeps these for its life)
        self._code_position = machine.engine.code_position
        self._code_segment = machine.engine.code_segment
        self._read_physical = machine.memory.read
        unmapped = UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED
        for start, end in self._holes():
            uc.hook_add(unmapped, self.on_unmapped, None, start, end)
            # bounded like the others: a memory hook whose range covers RAM keeps every store to RAM
            # on the engine's slow path (exec-all.h uc_mem_hook_installed; guest-store-speed.md).
            # The engine checks a fetch hook against the linear address: a fetch from a device
            # window mapped at a linear address inside RAM's range ends as UC_ERR_FETCH_PROT, which
            # the run loop reports the same way.
            uc.hook_add(UC_HOOK_MEM_FETCH_PROT, self.on_fetch_from_device, None, start, end)
        from .machine import DEVICE_WINDOWS          # RAM a device may take over (imports this module)
        for start, size in DEVICE_WINDOWS:
            uc.hook_add(UC_HOOK_MEM_FETCH_PROT, self.on_fetch_from_device, None, start, start + size - 1)
        self.bad_access: str | None = None
        self._denied_io: tuple[GuestException, tuple[int, ...]] | None = None

    def _hook_direct(self, hook_type: int, callback, *insn: int) -> None:
        """Register a ctypes ``callback`` with libunicorn itself (no binding wrapper), for the whole
        address range; ``insn``: the instruction of a UC_HOOK_INSN."""
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(self.m.uc._uch, ctypes.byref(handle), hook_type,
                                   ctypes.cast(callback, ctypes.c_void_p), None,
                                   ctypes.c_uint64(1), ctypes.c_uint64(0), *(ctypes.c_int(i) for i in insn))
        if status != UC_ERR_OK:
            raise UcError(status)

    def _hook_failed(self, exc: BaseException, where: str) -> None:
        """What a direct hook does with an exception its body raised: an Exception is a
        ``host-error`` stop keeping the traceback; a BaseException (Ctrl-C under the default SIGINT
        handler) stops the engine and is raised again by ``emu_start``, as the binding does for
        its own hooks."""
        if isinstance(exc, Exception):
            self.m.host_traceback = traceback.format_exc()
            self.m.stop(StopReason("host-error", detail=f"{type(exc).__name__} in {where}: {exc}"))
            return
        uc = self.m.uc
        if uc._hook_exception is None:
            uc._hook_exception = exc
        uc.emu_stop()

    def _holes(self) -> list[tuple[int, int]]:
        holes, cursor = [], 0
        for start, size in sorted(self.m.layout.backed):
            if start > cursor:
                holes.append((cursor, start - 1))
            cursor = start + size
        holes.append((cursor, 0xFFFF_FFFF_FFFF_FFFF))
        return holes

    # -- port I/O ------------------------------------------------------------------------------
    def _io_stop_state(self, stopped_before: bool) -> None:
        """A device stopped the run: the engine still finishes the translation block (it honours
        a stop only at block starts and memory accesses), so keep the state right after the
        ``in``/``out`` as the state of the stop."""
        if stopped_before or self.m.stop_reason is None:
            return
        rip = self.m.regfile.read(UC_X86_REG_RIP)
        self.m.freeze_state(rip + max(self._trap("io", rip).length, 1))

    def set_port_policy(self, policy) -> None:
        """Ask ``policy(access: PortAccess, rip: int)`` before every port access completes:
        ``None`` lets it proceed to the machine's device; a ``PortAnswered`` completes it with no
        device reached (``in`` reads its value); a ``GuestException`` is raised instead, at the I/O
        instruction ``rip``, with nothing done on the port and the guest's registers as before it.
        For an environment that decides I/O privilege itself (see the module docstring).  One
        policy."""
        if self._port_policy is not None:
            raise ValueError("a port policy is already set")
        self._port_policy = policy
        self.m.engine.enable_io_breakpoint_checks()

    def _denied(self, access: PortAccess) -> int | None:
        """Ask the port policy: None lets the access reach the device; else what an ``in`` reads
        (a ``PortAnswered``'s value, or all ones for a denial, which arms the one-shot #DB that
        ends the instruction)."""
        regs = self.m.regfile
        rip = regs.read(UC_X86_REG_RIP)
        fault = self._port_policy(access, rip)
        if fault is None:
            return None
        if isinstance(fault, PortAnswered):
            return fault.value
        if not self.m.engine.io_breakpoint_checks():
            self.m.stop(StopReason("unhandled-trap", detail=(
                f"{vector_name(fault.vector)} for port {access.port:#x} at {rip:#x} cannot be raised: "
                "the guest loaded DR7 itself, which turned off the engine's I/O check")))
            return 0xFFFF_FFFF
        saved = regs.read_many(_IO_REGISTERS)
        self._denied_io = (GuestException(fault.vector, rip, fault.error_code, fault.cr2), saved)
        regs.write(UC_X86_REG_DR3, access.port)
        regs.write(UC_X86_REG_DR7, (saved[-1] & ~DR7_BP3_FIELDS) | DR7_BP3_IO)
        return 0xFFFF_FFFF

    def _fault_denied_io(self) -> None:
        """The #DB a denied access armed: undo what the instruction did, deliver the policy's fault."""
        fault, saved = self._denied_io
        self._denied_io = None
        regs = self.m.regfile
        rip = self._instruction_ending_at(fault.rip, regs.read(UC_X86_REG_RIP))
        for reg, value in zip(_IO_REGISTERS, saved):
            regs.write(reg, value)
        self.m.set_rip(rip)
        if fault.cr2 is not None:
            self.m.set_reg("cr2", fault.cr2)
        self.exception(fault.vector, fault.error_code, rip)

    def _instruction_ending_at(self, start: int, end: int) -> int:
        """The address of the instruction that ends at ``end``, decoding forward from ``start``.
        The I/O hook's RIP is not always the I/O instruction's: in some blocks (seen under xen_pv)
        the engine's ``cpu_restore_state`` leaves it at the block start; the #DB's RIP is exactly
        the next instruction's (``helper_bpt_io``), and the block between is straight-line code."""
        base, bits = self.m.code_segment()
        rip = start
        while rip < end:
            length = instruction_length(self._code_bytes(rip, base, bits), bits)
            if length == 0 or rip + length >= end:
                return rip
            rip += length
        return start

    def _in_entry(self, _engine, port: int, size: int, _user_data) -> int:
        """The engine's UC_HOOK_INSN IN callback (unicorn.h uc_cb_insn_in_t): the value ``in``
        reads from ``port`` (``size`` bytes).  A port policy's denial reads all ones (the access
        is faulted before it completes), its ``PortAnswered`` that answer's value; else an attached
        device answers, else ``hvsim_port_io``, else all ones (an empty ISA bus floats high) and
        the port is counted as unclaimed.  The body is
        inline: this is the hottest exit of a Linux boot (the PIT's counter in its TSC
        calibration and delays)."""
        try:
            mask = _SIZE_MASK[size]
            if self._port_policy is not None:
                answer = self._denied(PortAccess(port, size, False))
                if answer is not None:
                    return answer & mask
            device = self._port_devices.get(port)
            if device is not None:
                m = self.m
                if m.stop_reason is not None:
                    return device.read(port, size) & mask
                value = device.read(port, size) & mask
                if m.stop_reason is not None:
                    self._io_stop_state(False)
                return value
            answer = (self._port_io_hook(machine=self.m, access=PortAccess(port, size, False))
                      if self._port_io_hook.get_hookimpls() else None)     # none: no call through pluggy
            if answer is None or answer is True:
                self._unclaimed_ports[port] = self._unclaimed_ports.get(port, 0) + 1
                return mask
            return int(answer) & mask
        except BaseException as exc:  # noqa: BLE001 - the run must end with a result, not a traceback
            self._hook_failed(exc, "on_in")
            return 0

    def _out_entry(self, _engine, port: int, size: int, value: int, _user_data) -> None:
        """The engine's UC_HOOK_INSN OUT callback (unicorn.h uc_cb_insn_out_t): ``out`` of
        ``value`` (``size`` bytes) to ``port``, to the attached device, else ``hvsim_port_io``,
        else counted as unclaimed; nothing when the port policy denies it."""
        try:
            if self._port_policy is not None and self._denied(PortAccess(port, size, True, value)) is not None:
                return
            device = self._port_devices.get(port)
            if device is not None:
                m = self.m
                if m.stop_reason is not None:
                    device.write(port, size, value)
                    return
                device.write(port, size, value)
                if m.stop_reason is not None:
                    self._io_stop_state(False)
                return
            if (not self._port_io_hook.get_hookimpls()
                    or self._port_io_hook(machine=self.m, access=PortAccess(port, size, True, value)) is None):
                self._unclaimed_ports[port] = self._unclaimed_ports.get(port, 0) + 1
        except BaseException as exc:  # noqa: BLE001 - the run must end with a result, not a traceback
            self._hook_failed(exc, "on_out")

    # -- CPUID (#VMEXIT CPUID) -----------------------------------------------------------------
    def on_cpuid(self, rip: int) -> None:
        """``cpuid`` at ``rip``: #GP(0) when CPUID faulting is on and CPL > 0 (Intel SDM vol. 4,
        MSR_MISC_FEATURES_ENABLES bit 0), else the guest's answer and RIP past the instruction."""
        m, regs = self.m, self.m.regfile
        if m.cpuid_faulting and m.engine.cpl() > 0:
            self.exception(GP, 0, rip)
            return
        rax, rcx = regs.read_many(_CPUID_ARGUMENTS)
        answer = m.guest_cpuid(rax & 0xFFFF_FFFF, rcx & 0xFFFF_FFFF)
        for reg, value in zip((UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX), answer):
            regs.write(reg, value & 0xFFFF_FFFF)     # 64-bit write: CPUID zero-extends
        m.set_rip(rip + 2)

    # -- MSRs (#VMEXIT MSR) --------------------------------------------------------------------
    def on_msr(self, rip: int) -> None:
        if not self.msr_access(rip):
            self.exception(GP, 0, rip)

    def msr_access(self, rip: int) -> bool:
        """Carry out the intercepted ``rdmsr``/``wrmsr`` at ``rip`` (the environment's
        ``hvsim_msr`` answers, else the core's own MSRs): False when it is #GP(0) instead, which
        the caller raises; also for an environment that emulates the instruction itself (Xen's
        privileged-op emulation of a PV kernel's)."""
        m, uc = self.m, self.m.regfile
        opcode = m.read_code(rip, 2)
        if opcode not in (RDMSR, WRMSR):
            m.stop(StopReason("host-error", detail=f"MSR exit at {rip:#x} on bytes {opcode.hex()}"))
            return True
        write = opcode == WRMSR
        rax, rcx, rdx = uc.read_many(_MSR_ARGUMENTS)
        index = rcx & 0xFFFF_FFFF
        value = (rdx & 0xFFFF_FFFF) << 32 | rax & 0xFFFF_FFFF
        access = MsrAccess(index=index, write=write, value=value if write else 0, rip=rip)
        answer = m.pm.hook.hvsim_msr(machine=m, access=access)
        # An MSR of the core's own devices (the local APIC's, the TSC) is the machine's, not a call
        # into the environment: it is answered without a Call event.
        core = answer is None and index in m.core_msrs
        if core:
            read, write_fn = m.core_msrs[index]
            answer = write_fn(value) if write else read()
        name = f"{'wrmsr' if write else 'rdmsr'} {index:#x}"
        args = {"index": index, "value": value} if write else {"index": index}
        if answer is None or answer is False or (not write and answer is True):
            if not core:
                m.emit(Call(interface="msr", name=name, args=args, result="#GP", rip=rip))
            return False
        if not write:
            value = int(answer) & 0xFFFF_FFFF_FFFF_FFFF
            uc.write(UC_X86_REG_RAX, value & 0xFFFF_FFFF)
            uc.write(UC_X86_REG_RDX, value >> 32)
        if not core:
            m.emit(Call(interface="msr", name=name, args=args, result=None if write else value, rip=rip))
        if m.reg("rip") == rip:          # a plugin may have redirected the guest; otherwise step over
            m.set_rip(rip + 2)
        return True

    # -- trapping instructions -----------------------------------------------------------------
    def _trap(self, kind: str, rip: int, vector: int | None = None) -> Trap:
        base, bits = self.m.code_segment()
        try:
            code = self._code(base + rip, bits)
        except GuestMemoryError:
            code = b""
        length = instruction_length(code, bits) if code else 0
        return Trap(kind=kind, rip=rip, length=length, code=code, vector=vector)

    def _code(self, linear: int, bits: int) -> bytes:
        """The MAX_INSN bytes at ``linear``.  The page of the trapping instruction is found as the
        engine fetched it: ``uc_vmem_translate`` for an instruction fetch at the current privilege
        level, which answers from the engine's TLB (the entry that fetch used) instead of walking
        the guest's page tables in Python; the bytes are then read through the bounds-checked
        accessor.  Bytes that reach into the next page, or a page the engine cannot translate, go
        through ``machine.vmem`` as before (all fifteen or a GuestMemoryError)."""
        if PAGE - linear % PAGE >= MAX_INSN and (linear <= 0xFFFF_FFFF or bits == 64 and linear >> 64 == 0):
            control = self.m.native.control
            control.vtlb_probing = 1         # a miss asks the native TLB filler (_native.c): quietly
            try:
                found = _VMEM_TRANSLATE(self._handle, linear, UC_PROT_EXEC, self._physical_at) == UC_ERR_OK
            finally:
                control.vtlb_probing = 0
            if found:
                return self.m.memory.read(self._physical.value, MAX_INSN)
        return self.m.vmem.read(linear, MAX_INSN)

    @_guarded
    def on_syscall(self, _ud=None) -> None:
        """SYSCALL: a plugin's trap, else the architectural transfer to ring 0 (EFER.SCE set), else #UD.

        The engine reports the instruction and then adds its length (2) to RIP, so every RIP set
        here is 2 below its target.  64-bit mode: RCX = next RIP, R11 = RFLAGS, RFLAGS &= ~FMASK,
        CS = STAR[47:32] & ~3 and SS = that + 8 with flat hidden state, CPL 0, RIP = LSTAR;
        compatibility mode: the same with CSTAR; legacy protected mode (AMD, the CPU model here):
        ECX = next EIP, IF/RF/VM cleared, a flat 32-bit CS, EIP = STAR[31:0].  Real mode is a stop.
        """
        m = self.m
        rip = m.regfile.read(UC_X86_REG_RIP)
        if m.pm.hook.hvsim_trap(machine=m, trap=self._trap("syscall", rip)):
            m.set_rip(m.regfile.read(UC_X86_REG_RIP) - SYSCALL_INSN_LENGTH)
            return
        efer = m.regfile.msr_read(MSR_EFER)
        if not efer & EFER_SCE:
            self.exception(UD, None, rip, rip_bias=-SYSCALL_INSN_LENGTH)
            return
        if not m.reg("cr0") & CR0_PE:
            m.stop(StopReason("unhandled-trap", detail=f"syscall at {rip:#x} in real mode is not modelled"))
            return
        star = m.msr_read(MSR_STAR)
        selector = (star >> 32) & 0xFFFC
        next_rip = rip + SYSCALL_INSN_LENGTH
        rflags = m.reg("rflags")
        if efer & EFER_LMA:
            _, bits = m.code_segment()
            target = m.msr_read(MSR_LSTAR if bits == 64 else MSR_CSTAR)
            m.set_reg("rcx", next_rip)
            m.set_reg("r11", rflags & ~RFLAGS_RF)
            new_rflags = rflags & ~m.msr_read(MSR_FMASK) & ~RFLAGS_RF
            cs_flags = CS64_FLAGS
        else:
            target = star & 0xFFFF_FFFF
            m.set_reg("rcx", next_rip & 0xFFFF_FFFF)
            new_rflags = rflags & ~(RFLAGS_IF | RFLAGS_RF | RFLAGS_VM)
            cs_flags = CS32_FLAGS
        m.engine.load_segments(cs=SegmentCache(selector, 0, FLAT_LIMIT, cs_flags),
                               ss=SegmentCache(selector + 8, 0, FLAT_LIMIT, SS_FLAGS), cpl=0)
        m.set_reg("rflags", new_rflags | 2)
        m.set_rip((target - SYSCALL_INSN_LENGTH) & 0xFFFF_FFFF_FFFF_FFFF)

    @_guarded
    def on_sysenter(self, _ud=None) -> None:
        """SYSENTER in protected mode (the engine makes it #UD in 64-bit code on an AMD CPU model,
        and #GP in real mode itself): a plugin's trap, else the architectural transfer: #GP(0) when
        SYSENTER_CS is NULL; CS = SYSENTER_CS & ~3, SS = CS + 8 (flat 32-bit), CPL 0, ESP =
        SYSENTER_ESP, EIP = SYSENTER_EIP, IF/RF/VM cleared (SDM vol. 2B SYSENTER).  As with
        SYSCALL the engine adds 2 to EIP afterwards."""
        m = self.m
        rip = m.regfile.read(UC_X86_REG_RIP)
        if m.pm.hook.hvsim_trap(machine=m, trap=self._trap("sysenter", rip)):
            m.set_rip(m.regfile.read(UC_X86_REG_RIP) - SYSCALL_INSN_LENGTH)
            return
        selector = m.msr_read(MSR_SYSENTER_CS) & 0xFFFC
        if selector == 0:
            self.exception(GENERAL_PROTECTION, 0, rip, rip_bias=-SYSCALL_INSN_LENGTH)
            return
        m.engine.load_segments(cs=SegmentCache(selector, 0, FLAT_LIMIT, CS32_FLAGS),
                               ss=SegmentCache(selector + 8, 0, FLAT_LIMIT, SS_FLAGS), cpl=0)
        m.set_reg("rflags", (m.reg("rflags") & ~(RFLAGS_IF | RFLAGS_RF | RFLAGS_VM)) | 2)
        m.set_reg("rsp", m.msr_read(MSR_SYSENTER_ESP) & 0xFFFF_FFFF)
        m.set_rip(((m.msr_read(MSR_SYSENTER_EIP) & 0xFFFF_FFFF) - SYSCALL_INSN_LENGTH) & 0xFFFF_FFFF_FFFF_FFFF)

    def add_opcode_handler(self, opcode: bytes, handler) -> None:
        """Answer invalid-opcode traps whose bytes start with ``opcode`` by calling
        ``handler(machine, trap, bits)`` directly (``bits``: 16, 32 or 64, the code size the
        instruction ran in), before ``hvsim_trap``; its answer means what ``hvsim_trap``'s does
        (``None``: offer the trap to the hook implementations, then #UD).  For an environment's
        hot traps (hypercall instructions), registered in ``hvsim_setup``: one dict lookup per
        trap instead of the hook fan-out.  One handler per opcode."""
        if not opcode or len(opcode) > MAX_INSN:
            raise ValueError(f"opcode {opcode.hex()} must be 1 to {MAX_INSN} bytes")
        if opcode in self._opcode_handlers:
            raise ValueError(f"opcode {opcode.hex()} already has a handler")
        self._opcode_handlers[opcode] = handler
        self._opcode_lengths = tuple(sorted({len(o) for o in self._opcode_handlers}))

    def _invalid_entry(self, _engine, _user_data) -> bool:
        """The engine's UC_HOOK_INSN_INVALID callback: ``on_invalid`` with what the binding's
        wrapper and ``_guarded`` do around a hook (``_hook_failed``), in one frame."""
        try:
            return self.on_invalid()
        except BaseException as exc:  # noqa: BLE001 - the run must end with a result, not a traceback
            self._hook_failed(exc, "on_invalid")
            return True

    def on_invalid(self) -> bool:
        """An invalid opcode: a direct handler for its first bytes, else ``hvsim_trap``, else #UD
        (ICEBP, which the engine does not know, is #DB).  This is the path of every hypercall made
        with ``vmcall``/``vmmcall``: one context copy for RIP and the code segment, one
        translation through the engine's TLB, one memory read and one dict lookup per registered
        opcode length before the handler runs."""
        rip, base, bits = self._code_position()    # one read of the CPU state for the whole trap
        code = self._code_bytes(rip, base, bits)
        if ICEBP in code:        # (a test in C: no ICEBP byte, no ICEBP after prefixes)
            _, prefixes, _ = software_interrupt(code, bits == 64)
            if prefixes < len(code) and code[prefixes] == ICEBP and not code[:prefixes].count(LOCK):
                # the engine has no ICEBP: it is #DB as a trap, without the gate DPL check of int n
                self.exception(DEBUG, None, rip + prefixes + 1, insn_rip=rip)
                return True
        # a Trap carries all fifteen bytes or none (the instruction ran into memory that is not there)
        whole = code if len(code) == MAX_INSN else b""
        trap = Trap("invalid-opcode", rip, instruction_length(whole, bits) if whole else 0, whole)
        handlers = self._opcode_handlers
        for n in self._opcode_lengths:
            handler = handlers.get(whole[:n])
            if handler is not None and handler(self.m, trap, bits):
                return True
        m = self.m
        if m.pm.hook.hvsim_trap(machine=m, trap=trap):
            return True
        self.exception(UD, None, rip)
        return True

    @_guarded
    def on_interrupt(self, intno: int, _ud=None) -> None:
        if intno == DEBUG and self._denied_io is not None:
            self._fault_denied_io()
            return
        rip = self.m.regfile.read(UC_X86_REG_RIP)
        if intno == EXIT_MSR:
            self.on_msr(rip)
        elif intno == EXIT_CPUID:
            self.on_cpuid(rip)
        elif intno == EXIT_CR4_WRITE:
            if not cr4_write(self.m, rip):
                self.exception(GP, 0, rip)
        elif intno == EXIT_SWINT:
            self.on_software_interrupt(rip)
        elif intno == EXIT_INVLPG:
            self.on_invlpg(rip)
        elif intno == EXIT_SHUTDOWN:
            self.m.stop(StopReason("triple-fault", detail=f"shutdown at {rip:#x}: an exception during #DF delivery"))
        elif intno >= EXCP_VMEXIT:
            self.m.stop(StopReason("host-error", detail=f"unexpected #VMEXIT {intno - EXCP_VMEXIT:#x} at {rip:#x}"))
        else:
            error_code, _ = self.m.engine.pending_exception()
            self.engine_exception(intno, error_code, rip)

    def engine_exception(self, intno: int, error_code: int, rip: int) -> None:
        """A CPU exception the engine raised (or the native TLB filler found) at ``rip``: delivered
        after the checks the engine does not make."""
        if intno == DEVICE_NOT_AVAILABLE:
            intno = self._nm_or_ud(rip)
        else:           # the segment checks the engine does not make (memop.py)
            converted = segment_fault(self.m, intno, error_code, rip, self._code_bytes)
            if converted is not None:
                intno, error_code = converted
        self.exception(intno, error_code if intno in HAS_ERROR_CODE else None, rip)

    def on_invlpg(self, rip: int) -> None:
        """``invlpg`` at ``rip`` (intercepted while the native walker may fill the TLB: its entries
        do not know the size of the page they came from, so one ``invlpg`` inside a large page must
        drop them all).  The whole TLB is dropped, which hardware allows, the native walker hands
        over to the engine's, whose ``invlpg`` needs no exit from now on; RIP moves past it."""
        m = self.m
        m.native.hand_over(HANDOVER_INVLPG)
        m.guest_mode.stop_intercepting_invlpg(m.engine)
        self.m.flush_tlb()
        base, bits = self.m.code_segment()
        code = self._code_bytes(rip, base, bits)
        length = instruction_length(code, bits) if code else 0
        if not length:
            self.m.stop(StopReason("host-error", detail=f"invlpg exit at {rip:#x} on undecodable bytes {code.hex()}"))
            return
        self.m.set_rip(rip + length)

    def _nm_or_ud(self, rip: int) -> int:
        """The engine checks CR0.TS before CR0.EM and CR4.OSFXSR for MMX/SSE instructions; the CPU
        raises #UD first (SDM vol. 3, 13.1.3 and 2.5 table 2-2: MMX and SSE are #UD with CR0.EM set,
        SSE also with CR4.OSFXSR clear), so a #NM on such an instruction is #UD when either holds.
        x87 instructions, WAIT, FXSAVE/FXRSTOR (no MMX/XMM operand) and VEX-encoded ones keep #NM."""
        text, _ = disassemble_one(self._code_bytes(rip), rip, self.m.code_segment()[1])
        mnemonic, _, operands = text.partition(" ")
        if mnemonic.startswith("v"):           # VEX (AVX): CR0.EM and CR4.OSFXSR do not apply
            return DEVICE_NOT_AVAILABLE
        sse, mmx = "xmm" in operands, re.search(r"\bmm[0-7]\b", operands) is not None
        cr0, cr4 = self.m.reg("cr0"), self.m.reg("cr4")
        if (sse or mmx) and cr0 & CR0_EM or sse and not cr4 & CR4_OSFXSR:
            return UD
        return DEVICE_NOT_AVAILABLE

    def on_software_interrupt(self, rip: int) -> None:
        """``int N``/``int3``/``into`` (#VMEXIT SWINT: RIP at the instruction, nothing pushed yet)."""
        code = self._code_bytes(rip)
        vector, prefixes, length = software_interrupt(code, self.m.code_segment()[1] == 64)
        if length == 0 or length > len(code):
            self.m.stop(StopReason("host-error", detail=f"software-interrupt exit at {rip:#x} on bytes {code.hex()}"))
            return
        vector = code[length - 1] if vector is None else vector
        trap = Trap(kind="int", rip=rip, length=length, code=code[:length], vector=vector)
        if self.m.pm.hook.hvsim_trap(machine=self.m, trap=trap):
            return
        self.exception(vector, None, rip + length, kind="software", insn_rip=rip)

    def _code_bytes(self, rip: int, base: int | None = None, bits: int | None = None) -> bytes:
        """Up to 15 instruction bytes at ``rip``, fewer where the code runs into unmapped memory
        (``base``/``bits``: the code segment, when the caller has it).  All fifteen within one
        page come through the engine's TLB (``_code``), inline here for the trap path."""
        if bits is None:
            base, bits = self._code_segment()
        address = (base + rip) & (0xFFFF_FFFF_FFFF_FFFF if bits == 64 else 0xFFFF_FFFF)
        if PAGE - address % PAGE >= MAX_INSN:
            if _VMEM_TRANSLATE(self._handle, address, UC_PROT_EXEC, self._physical_at) == UC_ERR_OK:
                try:
                    return self._read_physical(self._physical.value, MAX_INSN)
                except GuestMemoryError:
                    pass
        for size in (MAX_INSN, PAGE - address % PAGE):
            try:
                return self.m.vmem.read(address, size)
            except GuestMemoryError:
                continue
        return b""

    def exception(self, vector: int, error_code: int | None, return_rip: int, rip_bias: int = 0, *,
                  kind: str = "exception", insn_rip: int | None = None) -> None:
        """Deliver ``vector`` through the guest IDT, recording a Fault; stop on a triple fault or on
        a delivery the model does not implement.  ``kind``/``insn_rip`` as in
        ``ExceptionDelivery.deliver`` (``software`` checks the gate DPL: #GP(vector*8+2) if denied)."""
        m = self.m
        m.engine.clear_exception()
        cr2 = m.reg("cr2") if vector == 14 else None
        handled = m.pm.hook.hvsim_exception(
            machine=m, exception=GuestException(vector, return_rip, error_code, cr2))
        if handled is not None:
            m.emit(Fault(vector=vector, name=vector_name(vector), rip=return_rip, error_code=error_code,
                         cr2=cr2, delivered=m.stop_reason is None, detail=str(handled)))
            if rip_bias:
                m.set_rip(m.reg("rip") + rip_bias)
            return
        try:
            delivered = m.delivery.deliver(vector, error_code, return_rip, kind=kind, insn_rip=insn_rip)
        except NotModelled as exc:
            m.emit(Fault(vector=vector, name=vector_name(vector), rip=return_rip, error_code=error_code,
                         cr2=cr2, delivered=False, detail=str(exc)))
            m.stop(StopReason("unhandled-trap", detail=f"{vector_name(vector)} at {return_rip:#x}: {exc}"))
            return
        except DeliveryError as exc:
            m.emit(Fault(vector=vector, name=vector_name(vector), rip=return_rip, error_code=error_code,
                         cr2=cr2, delivered=False, detail=str(exc)))
            m.stop(StopReason("triple-fault", detail=f"{vector_name(vector)} at {return_rip:#x}: {exc}"))
            return
        m.faults_delivered += 1
        if delivered.vector != vector and delivered.escalated_from is None:
            # int n through a gate whose DPL is below the CPL: the CPU raised #GP instead.
            m.emit(Fault(vector=delivered.vector, name=vector_name(delivered.vector), rip=insn_rip or return_rip,
                         error_code=delivered.error_code,
                         detail=f"{vector_name(vector)} denied: gate DPL below CPL"))
        else:
            m.emit(Fault(vector=vector, name=vector_name(vector), rip=return_rip, error_code=error_code, cr2=cr2,
                         detail="" if delivered.escalated_from is None else "escalated to #DF"))
        if rip_bias:
            m.set_rip(delivered.handler + rip_bias)

    # -- memory outside RAM --------------------------------------------------------------------
    @_guarded
    def on_fetch_from_device(self, access: int, address: int, size: int, value: int, _ud=None) -> bool:
        """A fetch from a device window (MMIO: the VGA text window, the local APIC page...).  A PC
        would execute whatever the device returns; the engine cannot execute MMIO, so the run stops
        with the address instead of an engine error."""
        self.m.stop(StopReason("bad-access", detail=f"instruction fetch of {size} byte(s) at guest-physical "
                                                    f"{address:#x} (device memory, which hvsim cannot execute)"))
        return False

    @_guarded
    def on_unmapped(self, access: int, address: int, size: int, value: int, _ud=None) -> bool:
        what = {UC_MEM_WRITE_UNMAPPED: "write", UC_MEM_FETCH_UNMAPPED: "instruction fetch"}.get(access, "read")
        self.m.stop(StopReason("bad-access", detail=f"{what} of {size} byte(s) at guest-physical {address:#x} "
                                                    "(no RAM or device there)"))
        if access != UC_MEM_FETCH_UNMAPPED:
            # the engine synced RIP to the access before this hook; it stops at the next block start
            # (no exit check after each access, engine.py): the state of the stop is this one
            self.m.freeze_state(self.m.regfile.read(UC_X86_REG_RIP))
        return False
