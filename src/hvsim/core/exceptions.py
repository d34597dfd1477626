"""Delivery of CPU exceptions and software interrupts through the guest's own IDT.

Unicorn 2.1.4 reports exceptions to a hook and never vectors them itself, so the core does what the
CPU would: read the gate from the IDT, push the frame on the current stack (or the IST stack named
by a 64-bit gate), clear IF for interrupt gates, and continue at the handler.  Long-mode (16-byte)
and protected-mode (8-byte) gates are both handled.

What is modelled: same-privilege delivery (the guest kernel faulting in ring 0), IST stacks,
error codes, CR2 (left by the engine).  A failure to deliver (IDT limit, gate not present or of a
wrong type, stack not writable) escalates to #DF, and a failure to deliver #DF is a triple fault,
which the caller turns into a stop.  Privilege changes (ring 3 -> 0) are reported as not modelled.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import attrs
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CS,
    UC_X86_REG_IDTR,
    UC_X86_REG_RFLAGS,
    UC_X86_REG_RIP,
    UC_X86_REG_RSP,
    UC_X86_REG_SS,
    UC_X86_REG_TR,
)

from .cpu import MSR_EFER
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
RFLAGS_IF, RFLAGS_TF, RFLAGS_NT, RFLAGS_RF = 1 << 9, 1 << 8, 1 << 14, 1 << 16


def vector_name(vector: int) -> str:
    return VECTOR_NAMES.get(vector, f"vector {vector:#x}")


class DeliveryError(Exception):
    """The gate or stack made delivery impossible (the CPU would raise #GP/#NP/#SS, then #DF)."""


@attrs.frozen
class Delivered:
    vector: int
    handler: int
    escalated_from: int | None = None


class ExceptionDelivery:
    def __init__(self, machine: "Machine"):
        self.m = machine

    def deliver(self, vector: int, error_code: int | None, return_rip: int, *, kind: str = "exception") -> Delivered:
        """Vector ``vector`` through the guest IDT; the frame returns to ``return_rip``.

        Escalates to #DF when the delivery itself fails; raises ``DeliveryError`` when #DF cannot be
        delivered either (a triple fault).
        """
        try:
            return Delivered(vector, self._deliver_once(vector, error_code, return_rip))
        except DeliveryError as first:
            if vector == DOUBLE_FAULT:
                raise
            try:
                handler = self._deliver_once(DOUBLE_FAULT, 0, return_rip)
            except DeliveryError as second:
                raise DeliveryError(f"{vector_name(vector)}: {first}; then #DF: {second}") from None
            return Delivered(DOUBLE_FAULT, handler, escalated_from=vector)

    def _deliver_once(self, vector: int, error_code: int | None, return_rip: int) -> int:
        uc = self.m.uc
        cr0 = uc.reg_read(UC_X86_REG_CR0)
        if not cr0 & 1:
            raise DeliveryError("real-mode interrupt delivery is not modelled")
        long_mode = bool(uc.msr_read(MSR_EFER) & (1 << 10))
        _, idt_base, idt_limit, _ = uc.reg_read(UC_X86_REG_IDTR)
        gate_size = 16 if long_mode else 8
        if vector * gate_size + gate_size - 1 > idt_limit:
            raise DeliveryError(f"IDT limit {idt_limit:#x} does not cover {vector_name(vector)}")
        try:
            gate = self.m.vmem.read(idt_base + vector * gate_size, gate_size)
        except GuestMemoryError as exc:
            raise DeliveryError(f"IDT gate unreadable: {exc}") from None
        if long_mode:
            lo, selector, ist, attr, mid, hi, _ = struct.unpack("<HHBBHII", gate)
            target = lo | mid << 16 | hi << 32
            ist &= 7
        else:
            lo, selector, _, attr, mid = struct.unpack("<HHBBH", gate)
            target, ist = lo | mid << 16, 0
        gate_type = attr & 0xF
        if not attr & 0x80:
            raise DeliveryError(f"IDT gate for {vector_name(vector)} is not present")
        if gate_type not in (0xE, 0xF):
            raise DeliveryError(f"IDT gate for {vector_name(vector)} has type {gate_type:#x}, not an interrupt/trap gate")
        cs = uc.reg_read(UC_X86_REG_CS)
        if (cs & 3) != (selector & 3):
            raise DeliveryError(f"delivery from CPL{cs & 3} to CPL{selector & 3} is not modelled")
        rflags = uc.reg_read(UC_X86_REG_RFLAGS)
        rsp = uc.reg_read(UC_X86_REG_RSP)
        if long_mode:
            frame_rsp = self._ist_stack(ist) if ist else rsp
            frame_rsp &= ~0xF
            words = [uc.reg_read(UC_X86_REG_SS), rsp, rflags, cs, return_rip]
            if error_code is not None:
                words.append(error_code)
            new_rsp = frame_rsp - 8 * len(words)
            data = b"".join(struct.pack("<Q", w & 0xFFFF_FFFF_FFFF_FFFF) for w in reversed(words))
        else:
            words = [rflags, cs, return_rip]
            if error_code is not None:
                words.append(error_code)
            new_rsp = (rsp - 4 * len(words)) & 0xFFFF_FFFF
            data = b"".join(struct.pack("<I", w & 0xFFFF_FFFF) for w in reversed(words))
        try:
            self.m.vmem.write(new_rsp, data)
        except GuestMemoryError as exc:
            raise DeliveryError(f"exception stack unwritable: {exc}") from None
        cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | (RFLAGS_IF if gate_type == 0xE else 0)
        uc.reg_write(UC_X86_REG_RSP, new_rsp)
        uc.reg_write(UC_X86_REG_RFLAGS, rflags & ~cleared)
        uc.reg_write(UC_X86_REG_CS, selector)
        uc.reg_write(UC_X86_REG_RIP, target)
        return target

    def _ist_stack(self, ist: int) -> int:
        _, tss_base, tss_limit, _ = self.m.uc.reg_read(UC_X86_REG_TR)
        offset = 0x24 + (ist - 1) * 8
        if offset + 8 > tss_limit + 1:
            raise DeliveryError(f"TSS limit {tss_limit:#x} does not hold IST{ist}")
        try:
            return struct.unpack("<Q", self.m.vmem.read(tss_base + offset, 8))[0]
        except GuestMemoryError as exc:
            raise DeliveryError(f"TSS unreadable: {exc}") from None


