"""Delivery of CPU exceptions, software interrupts and external interrupts through the guest's IDT.

Unicorn 2.1.4 reports exceptions to a hook and never vectors them itself, so the core does what the
CPU would (Intel SDM vol. 3, 6.12 "Exception and interrupt handling"; AMD APM vol. 2, 8.9): read
the gate, check it, switch stacks on a privilege change, push the frame, clear IF for interrupt
gates, load CS (and SS) with their hidden state and the new CPL, and continue at the handler.

What is modelled:

- IA-32e mode (16-byte gates): delivery at the same privilege or to an inner ring; the new stack is
  TSS.RSP0..2, or the IST slot the gate names (used even without a privilege change); on a privilege
  change SS becomes the NULL selector with RPL = new CPL; the frame is SS, RSP, RFLAGS, CS, RIP
  (+ error code) on a 16-byte aligned stack.
- 32-bit protected mode (8-byte 32-bit interrupt/trap gates): same privilege, or an inner ring with
  SS:ESP from the 32-bit TSS (SSn:ESPn), SS checked as the CPU checks it (RPL and DPL = new CPL,
  writable data, present); the frame is SS, ESP, EFLAGS, CS, EIP (+ error code).
- Conforming handler code segments keep the CPL.
- ``kind``: ``exception`` (error code as given; a hardware exception, external to the program: a
  gate fault while delivering it has EXT set in its error code, as for ``external``), ``software`` (``int n``/``int3``/``into``: the
  gate's DPL must be >= CPL, else #GP with error code vector*8+2), ``external`` (an interrupt
  from a LAPIC/PIC: no DPL check, never an error code).
- Faults raised by the checks of a delivery (SDM vol. 3, 6.12.1.1, 6.13, 6.14.5): the IDT limit or a
  wrong gate type is #GP(IDT entry), a gate not present #NP(IDT entry); a NULL handler selector
  #GP(0), a selector beyond the GDT, not code, of DPL > CPL or (IA-32e) not 64-bit #GP(selector), one
  not present #NP(selector); a TSS whose limit does not hold the RSPn/ISTn/SSn:ESPn needed
  #TS(TSS selector); a bad 32-bit SSn #TS(SSn) (#SS(SSn) when not present).  EXT is set unless the
  event was ``int n``.  The fault is delivered in place of the event, or becomes #DF when the event
  was itself contributory or #PF; a failure to deliver #DF is a triple fault, which the caller
  turns into a stop.  A stack that cannot be written, an IDT, GDT or TSS that cannot be read,
  escalate to #DF (hardware would raise #SS/#PF first).

What is not modelled and stops the run with ``NotModelled``: task gates (32-bit type 5), 16-bit
(286) gates, delivery in virtual-8086 mode, handler selectors in an LDT, and real mode.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import attrs
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CS,
    UC_X86_REG_GDTR,
    UC_X86_REG_IDTR,
    UC_X86_REG_RFLAGS,
    UC_X86_REG_RIP,
    UC_X86_REG_RSP,
    UC_X86_REG_SS,
    UC_X86_REG_TR,
)

from .cpu import MSR_EFER
from .engine_state import DESC_B, DESC_DPL_SHIFT, DESC_L, R_SS, SegmentCache
from .errors import GuestMemoryError

if TYPE_CHECKING:
    from .machine import Machine

VECTOR_NAMES = {
    0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
    10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC",
    19: "#XM", 20: "#VE", 21: "#CP", 29: "#VC", 30: "#SX",
}
HAS_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
DOUBLE_FAULT = 8
GENERAL_PROTECTION = 13
RFLAGS_IF, RFLAGS_TF, RFLAGS_NT, RFLAGS_RF, RFLAGS_VM = 1 << 9, 1 << 8, 1 << 14, 1 << 16, 1 << 17
EFER_LMA = 1 << 10

# Gate and descriptor fields (SDM vol. 3, 3.4.5 and 6.11/6.14.1).
GATE_TASK, GATE_INT16, GATE_TRAP16, GATE_INT, GATE_TRAP = 0x5, 0x6, 0x7, 0xE, 0xF
GATE_PRESENT = 0x80
DESC_S = 1 << 12              # in the descriptor high dword: code/data (not system)
DESC_CODE = 1 << 11
DESC_CONFORMING = 1 << 10
DESC_WRITABLE = 1 << 9
DESC_PRESENT = 1 << 15
DESC_GRANULARITY = 1 << 23
SELECTOR_TI = 1 << 2
# Error code naming an IDT entry (SDM vol. 3, 6.13): index in bits 3-15, IDT flag bit 1.
IDT_ERROR_FLAG = 2
EXT_ERROR_FLAG = 1          # the event was external to the program (an interrupt)
INVALID_TSS, SEGMENT_NOT_PRESENT, STACK_FAULT = 10, 11, 12
# SDM vol. 3 table 6-5: a fault while delivering one of these is a double fault.
CONTRIBUTORY_OR_PF = frozenset({0, 10, 11, 12, 13, 14})
# 64-bit TSS: RSP0 at 4, RSP1 at 12, RSP2 at 20, IST1..7 at 0x24..0x54 (SDM vol. 3, fig. 8-11).
TSS64_RSP0, TSS64_IST1 = 0x04, 0x24
# 32-bit TSS: ESPn at 4 + 8n, SSn at 8 + 8n (SDM vol. 3, fig. 8-2).
TSS32_ESP0, TSS32_SS0 = 0x04, 0x08

KINDS = ("exception", "software", "external")
# Registers delivery reads together (one engine call each tuple: registers.py)
_MODE_REGISTERS = (UC_X86_REG_CR0, UC_X86_REG_RFLAGS)
_FRAME_REGISTERS = (UC_X86_REG_RSP, UC_X86_REG_SS, UC_X86_REG_CS)


def vector_name(vector: int) -> str:
    return VECTOR_NAMES.get(vector, f"vector {vector:#x}")


class DeliveryError(Exception):
    """The gate or stack made delivery impossible (the CPU would raise #GP/#NP/#SS/#TS, then #DF)."""


class NotModelled(DeliveryError):
    """Delivery would need a mechanism this model does not implement (task gates, v8086 mode, ...).
    It is not escalated to #DF: the caller stops the run with this message."""


class GateFault(DeliveryError):
    """A check of the delivery raised a contributory fault (SDM vol. 3, 6.12.1.1/6.13): the IDT
    refused the vector (beyond its limit, a wrong gate type: #GP; a gate not present: #NP), the
    handler's code segment was bad (#GP/#NP), the TSS did not hold the stack pointer (#TS) or its
    SSn was bad (#TS/#SS).  ``error_code`` is the selector part of the error code (the EXT bit is
    the caller's); ``None`` names the IDT entry.  It is a double fault only when the first event
    was itself a contributory exception or #PF."""

    def __init__(self, message: str, fault_vector: int, error_code: int | None = None):
        super().__init__(message)
        self.fault_vector = fault_vector
        self.error_code = error_code


class SoftwareInterruptDenied(Exception):
    """``int n`` through a gate whose DPL is below the CPL: the CPU raises #GP(vector*8+2)."""


@attrs.frozen
class Delivered:
    vector: int
    handler: int
    escalated_from: int | None = None
    error_code: int | None = None      # the error code pushed (differs from the request after a denial)


@attrs.frozen
class _Gate:
    handler: int
    selector: int
    gate_type: int
    dpl: int
    ist: int


class ExceptionDelivery:
    """Vectors interrupts and exceptions through the guest IDT of one machine's CPU."""

    def __init__(self, machine: "Machine"):
        self.m = machine

    def deliver(self, vector: int, error_code: int | None, return_rip: int, *, kind: str = "exception",
                insn_rip: int | None = None) -> Delivered:
        """Vector ``vector`` through the guest IDT; the frame returns to ``return_rip``.

        ``kind`` is ``exception``, ``software`` or ``external`` (see the module docstring);
        ``insn_rip`` is the address of the instruction of a trap-type event (``int n``, ICEBP): the
        return address of the #GP a denied gate raises and of a fault raised by the gate (default
        ``return_rip``).  Escalates to #DF when the
        delivery itself fails; raises ``DeliveryError`` when #DF cannot be delivered either (a
        triple fault) and ``NotModelled`` for what the model does not implement.
        """
        if kind not in KINDS:
            raise ValueError(f"interrupt kind {kind!r} is not one of {KINDS}")
        if kind == "external":
            error_code = None
        try:
            return Delivered(vector, self._deliver_once(vector, error_code, return_rip, kind == "software"),
                             error_code=error_code)
        except SoftwareInterruptDenied:
            gp_error = vector * 8 + IDT_ERROR_FLAG
            fault_rip = return_rip if insn_rip is None else insn_rip
            return self._escalate(GENERAL_PROTECTION, gp_error, fault_rip, None)
        except NotModelled:
            raise
        except GateFault as first:
            if vector == DOUBLE_FAULT or vector in CONTRIBUTORY_OR_PF:
                if vector == DOUBLE_FAULT:
                    raise
                return self._escalate(DOUBLE_FAULT, 0, return_rip, (vector, first))
            error = vector * 8 + IDT_ERROR_FLAG if first.error_code is None else first.error_code
            error |= EXT_ERROR_FLAG if kind != "software" else 0
            fault_rip = return_rip if insn_rip is None else insn_rip
            return self._escalate(first.fault_vector, error, fault_rip, (vector, first))
        except DeliveryError as first:
            if vector == DOUBLE_FAULT:
                raise
            return self._escalate(DOUBLE_FAULT, 0, return_rip, (vector, first))

    def _escalate(self, vector: int, error_code: int, return_rip: int,
                  cause: tuple[int, DeliveryError] | None) -> Delivered:
        try:
            handler = self._deliver_once(vector, error_code, return_rip, False)
            return Delivered(vector, handler, escalated_from=None if cause is None else cause[0],
                             error_code=error_code)
        except NotModelled:
            raise
        except DeliveryError as second:
            prefix = f"{vector_name(cause[0])}: {cause[1]}; then " if cause else ""
            if vector != DOUBLE_FAULT:      # the #GP/#NP raised while delivering failed too: #DF
                chained = DeliveryError(f"{prefix}{vector_name(vector)}: {second}") if cause else second
                return self._escalate(DOUBLE_FAULT, 0, return_rip, (cause[0] if cause else vector, chained))
            raise DeliveryError(f"{prefix}{vector_name(vector)}: {second}") from None

    # -- one delivery attempt --------------------------------------------------------------------
    def _deliver_once(self, vector: int, error_code: int | None, return_rip: int, software: bool) -> int:
        regs = self.m.regfile
        cr0, rflags = regs.read_many(_MODE_REGISTERS)
        if not cr0 & 1:
            raise NotModelled("real-mode interrupt delivery is not modelled")
        if rflags & RFLAGS_VM:
            raise NotModelled("interrupt delivery in virtual-8086 mode is not modelled")
        long_mode = bool(regs.msr_read(MSR_EFER) & EFER_LMA)
        gate = self._gate(vector, long_mode)
        cpl = self.m.engine.cpl()
        if software and gate.dpl < cpl:
            raise SoftwareInterruptDenied()
        code = self._code_segment(gate.selector, vector, cpl, long_mode)
        new_cpl = cpl if code.flags & DESC_CONFORMING else code.dpl
        if long_mode:
            return self._push64(gate, code, new_cpl, cpl, rflags, error_code, return_rip)
        return self._push32(gate, code, new_cpl, cpl, rflags, error_code, return_rip)

    def _gate(self, vector: int, long_mode: bool) -> _Gate:
        _, idt_base, idt_limit, _ = self.m.uc.reg_read(UC_X86_REG_IDTR)
        size = 16 if long_mode else 8
        if vector * size + size - 1 > idt_limit:
            raise GateFault(f"IDT limit {idt_limit:#x} does not cover {vector_name(vector)}", GENERAL_PROTECTION)
        try:
            raw = self.m.vmem.read(idt_base + vector * size, size)
        except GuestMemoryError as exc:
            raise DeliveryError(f"IDT gate unreadable: {exc}") from None
        if long_mode:
            lo, selector, ist, attr, mid, hi, _ = struct.unpack("<HHBBHII", raw)
            handler, ist = lo | mid << 16 | hi << 32, ist & 7
        else:
            lo, selector, _, attr, mid = struct.unpack("<HHBBH", raw)
            handler, ist = lo | mid << 16, 0
        gate_type, dpl = attr & 0xF, (attr >> 5) & 3
        if not long_mode and gate_type == GATE_TASK:
            raise NotModelled(f"task gate for {vector_name(vector)}: task switches are not modelled")
        if not long_mode and gate_type in (GATE_INT16, GATE_TRAP16):
            raise NotModelled(f"16-bit gate for {vector_name(vector)}: 16-bit interrupt frames are not modelled")
        if gate_type not in (GATE_INT, GATE_TRAP):
            raise GateFault(f"IDT gate for {vector_name(vector)} has type {gate_type:#x}, not an interrupt/trap gate",
                            GENERAL_PROTECTION)
        if not attr & GATE_PRESENT:
            raise GateFault(f"IDT gate for {vector_name(vector)} is not present", SEGMENT_NOT_PRESENT)
        return _Gate(handler, selector, gate_type, dpl, ist)

    def _descriptor(self, selector: int, fault: int = GENERAL_PROTECTION) -> SegmentCache:
        """The GDT descriptor ``selector`` names, as the segment cache it would load; a selector
        beyond the GDT limit raises ``fault`` with the selector as error code."""
        if selector & SELECTOR_TI:
            raise NotModelled(f"selector {selector:#x} names the LDT, which is not modelled")
        _, gdt_base, gdt_limit, _ = self.m.uc.reg_read(UC_X86_REG_GDTR)
        index = selector & ~7
        if index + 7 > gdt_limit:
            raise GateFault(f"selector {selector:#x} is outside the GDT (limit {gdt_limit:#x})", fault, index)
        try:
            e1, e2 = struct.unpack("<II", self.m.vmem.read(gdt_base + index, 8))
        except GuestMemoryError as exc:
            raise DeliveryError(f"GDT entry of {selector:#x} unreadable: {exc}") from None
        base = (e1 >> 16) | (e2 & 0xFF) << 16 | (e2 & 0xFF00_0000)
        limit = (e1 & 0xFFFF) | (e2 & 0x000F_0000)
        if e2 & DESC_GRANULARITY:
            limit = limit << 12 | 0xFFF
        return SegmentCache(selector, base, limit, e2)

    def _code_segment(self, selector: int, vector: int, cpl: int, long_mode: bool) -> SegmentCache:
        # SDM vol. 3, 6.12.1.1 / the INT n pseudo-code: #GP(0) for NULL, #GP(selector) for a bad
        # descriptor, #NP(selector) for one not present.
        where = f"handler selector {selector:#x} of {vector_name(vector)}"
        if selector & 0xFFFC == 0:
            raise GateFault(f"{where} is NULL", GENERAL_PROTECTION, 0)
        code = self._descriptor(selector)
        error = selector & 0xFFFC
        if not code.flags & DESC_S or not code.flags & DESC_CODE:
            raise GateFault(f"{where} is not a code segment", GENERAL_PROTECTION, error)
        if code.dpl > cpl:
            raise GateFault(f"{where} has DPL {code.dpl} > CPL {cpl}", GENERAL_PROTECTION, error)
        if not code.flags & DESC_PRESENT:
            raise GateFault(f"{where} is not present", SEGMENT_NOT_PRESENT, error)
        if long_mode and (not code.flags & DESC_L or code.flags & DESC_B):
            raise GateFault(f"{where} is not a 64-bit code segment", GENERAL_PROTECTION, error)
        return code

    def _tss(self, offset: int, size: int, what: str) -> int:
        tr, tss_base, tss_limit, _ = self.m.uc.reg_read(UC_X86_REG_TR)
        if offset + size - 1 > tss_limit:    # #TS(TSS selector): SDM vol. 3, 6.12.1.1 and 6.14.5
            raise GateFault(f"TSS limit {tss_limit:#x} does not hold {what}", INVALID_TSS, tr & 0xFFFC)
        try:
            raw = self.m.vmem.read(tss_base + offset, size)
        except GuestMemoryError as exc:
            raise DeliveryError(f"TSS unreadable: {exc}") from None
        return int.from_bytes(raw, "little")

    def _write_frame(self, address: int, data: bytes, what: str) -> None:
        try:
            self.m.vmem.write(address, data)
        except GuestMemoryError as exc:
            raise DeliveryError(f"{what} unwritable: {exc}") from None

    def _enter(self, gate: _Gate, code: SegmentCache, new_cpl: int, ss: SegmentCache | None,
               rflags: int, rsp: int) -> int:
        """Commit: CS (and SS) with the new CPL, RSP, RFLAGS and RIP (after the frame is written)."""
        cs = attrs.evolve(code, selector=(code.selector & ~3) | new_cpl)
        self.m.engine.load_segments(cs=cs, ss=ss, cpl=new_cpl)
        cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM | (RFLAGS_IF if gate.gate_type == GATE_INT else 0)
        regs = self.m.regfile
        regs.write(UC_X86_REG_RSP, rsp)
        regs.write(UC_X86_REG_RFLAGS, rflags & ~cleared)
        regs.write(UC_X86_REG_RIP, gate.handler)
        return gate.handler

    def _push64(self, gate: _Gate, code: SegmentCache, new_cpl: int, cpl: int, rflags: int,
                error_code: int | None, return_rip: int) -> int:
        rsp, ss_selector, cs_selector = self.m.regfile.read_many(_FRAME_REGISTERS)
        inner = new_cpl < cpl
        if gate.ist:
            frame_rsp = self._tss(TSS64_IST1 + 8 * (gate.ist - 1), 8, f"IST{gate.ist}")
            stack = f"IST{gate.ist} stack"
        elif inner:
            frame_rsp = self._tss(TSS64_RSP0 + 8 * new_cpl, 8, f"RSP{new_cpl}")
            stack = f"RSP{new_cpl} stack"
        else:
            frame_rsp, stack = rsp, "exception stack"
        frame_rsp &= ~0xF
        words = [ss_selector, rsp, rflags, cs_selector, return_rip]
        if error_code is not None:
            words.append(error_code)
        new_rsp = (frame_rsp - 8 * len(words)) & 0xFFFF_FFFF_FFFF_FFFF
        self._write_frame(new_rsp, struct.pack(f"<{len(words)}Q", *(w & 0xFFFF_FFFF_FFFF_FFFF for w in reversed(words))),
                          f"{stack} at {new_rsp:#x}")
        # A privilege change loads SS with the NULL selector, RPL = new CPL (SDM vol. 3, 6.14.4).
        ss = SegmentCache(new_cpl, 0, 0, new_cpl << DESC_DPL_SHIFT) if inner else None
        return self._enter(gate, code, new_cpl, ss, rflags, new_rsp)

    def _push32(self, gate: _Gate, code: SegmentCache, new_cpl: int, cpl: int, rflags: int,
                error_code: int | None, return_rip: int) -> int:
        uc = self.m.uc
        esp = uc.reg_read(UC_X86_REG_RSP) & 0xFFFF_FFFF
        words = [rflags, uc.reg_read(UC_X86_REG_CS), return_rip]
        if new_cpl < cpl:
            stack_ss, frame_esp = self._tss32_stack(new_cpl)
            words = [uc.reg_read(UC_X86_REG_SS), esp, *words]
        else:
            stack_ss, frame_esp = None, esp
        if error_code is not None:
            words.append(error_code)
        ss_cache = stack_ss or self.m.engine.segment(R_SS)
        mask = 0xFFFF_FFFF if ss_cache.flags & DESC_B else 0xFFFF
        new_esp = (frame_esp - 4 * len(words)) & mask
        data = b"".join(struct.pack("<I", w & 0xFFFF_FFFF) for w in reversed(words))
        self._write_frame((ss_cache.base + new_esp) & 0xFFFF_FFFF, data, f"stack at {ss_cache.selector:#x}:{new_esp:#x}")
        old = uc.reg_read(UC_X86_REG_RSP)
        return self._enter(gate, code, new_cpl, stack_ss, rflags, (old & ~mask) | new_esp)

    def _tss32_stack(self, new_cpl: int) -> tuple[SegmentCache, int]:
        """SSn:ESPn of the 32-bit TSS for ring ``new_cpl``, with the checks the CPU makes (#TS)."""
        esp = self._tss(TSS32_ESP0 + 8 * new_cpl, 4, f"ESP{new_cpl}")
        selector = self._tss(TSS32_SS0 + 8 * new_cpl, 2, f"SS{new_cpl}")
        error = selector & 0xFFFC     # SDM vol. 3, INT n pseudo-code: #TS(SS selector), #SS if not present
        if error == 0:
            raise GateFault(f"TSS SS{new_cpl} is NULL", INVALID_TSS, 0)
        if selector & 3 != new_cpl:
            raise GateFault(f"TSS SS{new_cpl} {selector:#x} has RPL != {new_cpl}", INVALID_TSS, error)
        ss = self._descriptor(selector, INVALID_TSS)
        if ss.dpl != new_cpl or not ss.flags & DESC_S or ss.flags & DESC_CODE or not ss.flags & DESC_WRITABLE:
            raise GateFault(f"TSS SS{new_cpl} {selector:#x} is not a writable ring-{new_cpl} data segment",
                            INVALID_TSS, error)
        if not ss.flags & DESC_PRESENT:
            raise GateFault(f"TSS SS{new_cpl} {selector:#x} is not present", STACK_FAULT, error)
        return ss, esp
