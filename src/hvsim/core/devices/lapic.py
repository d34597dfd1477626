"""The local APIC of one processor, in xAPIC mode: its 4 KiB register window, the IA32_APIC_BASE and
IA32_TSC_DEADLINE MSRs, interrupt acceptance (IRR/ISR/TMR, TPR/PPR), the local vector table, the
APIC timer in guest time, and the INTA cycle that hands the CPU a vector.

What it models (Intel SDM vol. 3A ch. 11 "Advanced Programmable Interrupt Controller"):

- Fixed interrupts arriving by ``deliver`` (I/O APIC, MSI, IPI) go to the IRR; the INTA cycle
  (``acknowledge``) moves the highest IRR vector whose priority class beats the PPR to the ISR; an EOI
  retires the highest ISR vector and, for a level-triggered one (TMR bit set), broadcasts the EOI
  (``eoi_broadcast``) so the I/O APIC clears its remote IRR.
- Vectors 0-15 are illegal: arriving, they set ESR "received illegal vector" and are dropped; sent
  by the ICR, "send illegal vector" and are not sent.  Errors accumulate internally and a write to
  the ESR latches them for reading; a new error raises the LVT error entry's vector if unmasked.
- LINT0 in ExtINT mode passes the 8259's INTR through: while the line is high the CPU is interrupted
  and the vector comes from ``extint_ack`` (it never enters the ISR).  LINT1 in NMI mode raises an
  NMI on a rising edge.  A fixed-mode LINT delivers its vector on a rising edge (level-triggered
  LINTs are treated as edge: remote IRR bit 14 is not modelled).  Polarity (bit 13, active low)
  inverts a LINT wire's level.
- The timer counts a 1 GHz input clock (one tick per guest ns) divided by the DCR divider; one-shot,
  periodic and TSC-deadline modes; the TSC is guest ns.  Everything is scheduled on the
  ``GuestClock``; nothing polls.
- ICR: fixed and lowest-priority IPIs to this CPU (shorthand self / all including self, or a
  physical/logical destination that names it) and NMI IPIs are delivered; INIT, SIPI, SMI and
  reserved modes have no one to act on them and are recorded in ``ignored_ipis``.  Delivery status
  always reads idle.
- Software disable (SVR bit 8 clear) masks every LVT and keeps it masked; fixed interrupts that
  arrive then are dropped (as KVM does), while vectors already in the IRR are still dispensed
  (SDM 11.4.7.2: "held and require masking or handling by the CPU").  NMIs are still accepted.
- Hardware disable (IA32_APIC_BASE bit 11 clear): the window reads all ones and ignores writes,
  nothing arrives by the APIC bus, and, as on P6 and later processors, LINT0 and LINT1 become the
  plain INTR and NMI pins: a high LINT0 interrupts the CPU with the vector from ``extint_ack``, a
  rising LINT1 is an NMI.  Setting bit 11 again returns every register to its power-on value.

What it does not model: x2APIC (IA32_APIC_BASE bit 10 is reserved, so setting it is a #GP), more
than one processor (all-excluding-self reaches nobody), the CMCI LVT (the version register says 6
LVT entries: timer, thermal, performance counter, LINT0, LINT1, error — 0x2f0 is reserved), remote
read (RRD reads 0), EOI-broadcast suppression (not advertised in the version register), thermal and
performance-counter sources (their LVT entries are storage), the "illegal register address" error.

MMIO access: each register is the first dword of a 16-byte slot.  A read of 1, 2, 4 or 8 bytes at
a byte inside that dword returns those bytes of the register (zero-extended); reads of bytes 4-15
of a slot and of reserved registers return 0.  A write takes effect only when it is at least 4 bytes
at the slot's start (its low dword is written); narrower or misaligned writes are ignored.
"""

from __future__ import annotations

import collections
from typing import Callable

import attrs

from ..clock import GuestClock, Timer

# --- MSRs (SDM vol. 3A §11.4.4, §11.5.4.1; vol. 4 table 2-2) ---
IA32_APIC_BASE_MSR = 0x1B
IA32_TSC_DEADLINE_MSR = 0x6E0
APIC_BASE_BSP = 1 << 8           # processor is the bootstrap processor
APIC_BASE_EXTD = 1 << 10         # x2APIC mode enable (not supported here: reserved)
APIC_BASE_ENABLE = 1 << 11       # APIC global enable
APIC_BASE_ADDRESS_MASK = ~0xFFF
DEFAULT_APIC_BASE_ADDRESS = 0xFEE00000
APIC_WINDOW_SIZE = 0x1000
DEFAULT_PHYS_ADDR_BITS = 40      # QEMU's TCG CPUs report 40 physical address bits (CPUID 0x80000008)

# --- register offsets in the window (SDM vol. 3A table 11-1 "Local APIC Register Address Map") ---
REG_ID = 0x20
REG_VERSION = 0x30
REG_TPR = 0x80
REG_APR = 0x90
REG_PPR = 0xA0
REG_EOI = 0xB0
REG_RRD = 0xC0
REG_LDR = 0xD0
REG_DFR = 0xE0
REG_SVR = 0xF0
REG_ISR = 0x100                  # eight dwords at 0x100-0x170
REG_TMR = 0x180                  # 0x180-0x1f0
REG_IRR = 0x200                  # 0x200-0x270
REG_ESR = 0x280
REG_ICR_LOW = 0x300
REG_ICR_HIGH = 0x310
REG_LVT_TIMER = 0x320
REG_LVT_THERMAL = 0x330
REG_LVT_PMC = 0x340
REG_LVT_LINT0 = 0x350
REG_LVT_LINT1 = 0x360
REG_LVT_ERROR = 0x370
REG_TIMER_INITIAL = 0x380
REG_TIMER_CURRENT = 0x390
REG_TIMER_DCR = 0x3E0

# Version register (§11.4.8): version 0x14 (integrated APIC), max LVT entry 5 (six entries).
APIC_VERSION = 0x14
APIC_MAX_LVT = 5
APIC_VERSION_VALUE = (APIC_MAX_LVT << 16) | APIC_VERSION

ID_MASK = 0xFF000000             # §11.4.6: xAPIC ID in bits 24-31
LDR_MASK = 0xFF000000            # §11.6.2.2: logical APIC ID in bits 24-31
DFR_MODEL_MASK = 0xF0000000      # §11.6.2.2: model in bits 28-31, bits 0-27 read as 1
DFR_RESERVED_ONES = 0x0FFFFFFF
DFR_FLAT, DFR_CLUSTER = 0xF, 0x0
SVR_VECTOR_MASK = 0xFF           # §11.9: all 8 vector bits writable on P6 and later
SVR_ENABLE = 1 << 8
SVR_FOCUS_DISABLE = 1 << 9
SVR_WRITABLE = SVR_VECTOR_MASK | SVR_ENABLE | SVR_FOCUS_DISABLE
SVR_POWER_ON = 0xFF
TPR_MASK = 0xFF

# ESR bits (§11.5.3, figure 11-9)
ESR_SEND_CHECKSUM = 1 << 0
ESR_RECEIVE_CHECKSUM = 1 << 1
ESR_SEND_ACCEPT = 1 << 2
ESR_RECEIVE_ACCEPT = 1 << 3
ESR_REDIRECTABLE_IPI = 1 << 4
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7

# LVT fields (§11.5.1, figure 11-8)
LVT_VECTOR = 0xFF
LVT_DELIVERY_MODE_SHIFT = 8
LVT_DELIVERY_MODE = 0x7 << LVT_DELIVERY_MODE_SHIFT
LVT_DELIVERY_STATUS = 1 << 12
LVT_POLARITY = 1 << 13           # LINT0/1 only
LVT_REMOTE_IRR = 1 << 14         # LINT0/1 only
LVT_TRIGGER_LEVEL = 1 << 15      # LINT0/1 only
LVT_MASKED = 1 << 16
LVT_TIMER_MODE_SHIFT = 17
LVT_TIMER_MODE = 0x3 << LVT_TIMER_MODE_SHIFT
TIMER_ONE_SHOT, TIMER_PERIODIC, TIMER_TSC_DEADLINE = 0, 1, 2
LVT_POWER_ON = LVT_MASKED

# Delivery modes (§11.5.1 LVT, §11.6.1 ICR)
DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_STARTUP, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7

# Writable bits of each LVT entry (figure 11-8); everything else reads 0
LVT_WRITABLE = {
    REG_LVT_TIMER: LVT_VECTOR | LVT_MASKED | LVT_TIMER_MODE,
    REG_LVT_THERMAL: LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,
    REG_LVT_PMC: LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,
    REG_LVT_LINT0: LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY | LVT_TRIGGER_LEVEL | LVT_MASKED,
    REG_LVT_LINT1: LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY | LVT_TRIGGER_LEVEL | LVT_MASKED,
    REG_LVT_ERROR: LVT_VECTOR | LVT_MASKED,
}

# ICR (§11.6.1, figure 11-12)
ICR_VECTOR = 0xFF
ICR_DELIVERY_MODE_SHIFT = 8
ICR_DEST_LOGICAL = 1 << 11
ICR_DELIVERY_STATUS = 1 << 12
ICR_LEVEL_ASSERT = 1 << 14
ICR_TRIGGER_LEVEL = 1 << 15
ICR_SHORTHAND_SHIFT = 18
ICR_LOW_WRITABLE = 0xFFF | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL | (0x3 << ICR_SHORTHAND_SHIFT)
ICR_HIGH_WRITABLE = 0xFF000000
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL_INCLUDING_SELF, SHORTHAND_ALL_EXCLUDING_SELF = 0, 1, 2, 3

# Timer divide configuration (§11.5.4, figure 11-10): bits 0, 1 and 3
DCR_MASK = 0xB
TIMER_INPUT_NS_PER_TICK = 1      # 1 GHz input clock, one tick per guest ns (as QEMU's model)
TIMER_COUNT_MASK = 0xFFFFFFFF

NMI_VECTOR = 2                   # the NMI is always vector 2 (SDM vol. 3A §6.3.1)
FIRST_LEGAL_VECTOR = 16          # vectors 0-15 are reserved for exceptions (§11.5.2)
BROADCAST_ID = 0xFF
IGNORED_IPI_HISTORY = 64


@attrs.frozen
class IgnoredIpi:
    """An IPI this one-processor model has no one to act on (INIT, SIPI, SMI, reserved mode)."""
    delivery_mode: int
    vector: int
    icr_low: int
    icr_high: int


def timer_divider(dcr: int) -> int:
    """The divider the DCR encodes: bits 0, 1 and 3 form 0-7; 7 is divide by 1, n is 2^(n+1)."""
    code = (dcr & 0x3) | ((dcr >> 1) & 0x4)
    return 1 << ((code + 1) & 7)


def _highest(bitmap: int) -> int:
    """The highest set vector of a 256-bit map, -1 if none."""
    return bitmap.bit_length() - 1


class LocalApic:
    """One xAPIC: registers, interrupt acceptance and priority, timer, INTA cycle (see the module)."""

    def __init__(self, clock: GuestClock, *, kick: Callable[[], None],
                 extint_ack: Callable[[], int] | None = None, apic_id: int = 0,
                 eoi_broadcast: Callable[[int], None] | None = None,
                 phys_addr_bits: int = DEFAULT_PHYS_ADDR_BITS):
        self._clock = clock
        self._kick = kick
        self._extint_ack = extint_ack
        self._eoi_broadcast = eoi_broadcast
        self._power_on_id = apic_id & 0xFF
        self._apic_base = DEFAULT_APIC_BASE_ADDRESS | APIC_BASE_BSP | APIC_BASE_ENABLE
        self._reserved_base_bits = ~((1 << phys_addr_bits) - 1) | 0xFF | (1 << 9) | APIC_BASE_EXTD
        self._lint0_level = False
        self._lint1_level = False
        self.ignored_ipis: collections.deque[IgnoredIpi] = collections.deque(maxlen=IGNORED_IPI_HISTORY)
        self.ignored_ipi_count = 0
        self._timer_event: Timer | None = None
        self._deadline_event: Timer | None = None
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        """The power-on (and re-enable after hardware disable) values of every register."""
        self._cancel_timers()
        self.id = self._power_on_id << 24
        self.tpr = 0
        self.ldr = 0
        self.dfr = 0xFFFFFFFF
        self.svr = SVR_POWER_ON
        self.irr = self.isr = self.tmr = 0
        self._esr_accumulated = 0
        self.esr = 0
        self.icr_low = self.icr_high = 0
        self.lvt = {reg: LVT_POWER_ON for reg in LVT_WRITABLE}
        self.dcr = 0
        self.initial_count = 0
        self._count_base_ns = 0      # the time the count last (re)started from _count_base
        self._count_base = 0         # the count at _count_base_ns (0: stopped)
        self._tsc_deadline = 0
        self._nmi = False
        self._extint_message = False

    def _cancel_timers(self) -> None:
        for event in (self._timer_event, self._deadline_event):
            if event is not None:
                event.cancel()
        self._timer_event = self._deadline_event = None

    # ------------------------------------------------------------------ MSRs
    @property
    def apic_base(self) -> int:
        """The IA32_APIC_BASE MSR (0x1b): base address, bit 8 BSP, bit 11 global enable."""
        return self._apic_base

    @property
    def base_address(self) -> int:
        """The physical address of the register window (the MSR's bits 12 and up)."""
        return self._apic_base & APIC_BASE_ADDRESS_MASK

    @property
    def hardware_enabled(self) -> bool:
        return bool(self._apic_base & APIC_BASE_ENABLE)

    @property
    def software_enabled(self) -> bool:
        return self.hardware_enabled and bool(self.svr & SVR_ENABLE)

    def write_apic_base(self, value: int) -> bool:
        """WRMSR 0x1b.  False (the CPU raises #GP, nothing changes) when a reserved bit is set: bits
        0-7, 9, 10 (x2APIC is not offered) and those at or above MAXPHYADDR."""
        if value & self._reserved_base_bits or value < 0:
            return False
        was_enabled = self.hardware_enabled
        self._apic_base = value
        if was_enabled and not self.hardware_enabled:
            self._cancel_timers()
        elif not was_enabled and self.hardware_enabled:
            self._reset()
        if self.interrupt_pending() or self._nmi:
            self._kick()
        return True

    @property
    def tsc_deadline(self) -> int:
        """IA32_TSC_DEADLINE (0x6e0): the armed deadline, 0 when disarmed or not in TSC-deadline mode."""
        return self._tsc_deadline if self._timer_mode() == TIMER_TSC_DEADLINE else 0

    def write_tsc_deadline(self, value: int) -> None:
        """WRMSR 0x6e0: in TSC-deadline mode a non-zero value arms the timer at that TSC (guest ns),
        0 disarms; in the other modes (or with the APIC hardware-disabled) the write is ignored."""
        if not self.hardware_enabled or self._timer_mode() != TIMER_TSC_DEADLINE:
            return
        if self._deadline_event is not None:
            self._deadline_event.cancel()
            self._deadline_event = None
        self._tsc_deadline = value & 0xFFFFFFFFFFFFFFFF
        if self._tsc_deadline:
            self._deadline_event = self._clock.schedule(self._tsc_deadline, self._tsc_deadline_fired)

    def _tsc_deadline_fired(self) -> None:
        self._deadline_event = None
        self._tsc_deadline = 0
        self._local_interrupt(REG_LVT_TIMER)

    # ------------------------------------------------------------------ MMIO
    def read(self, offset: int, size: int) -> int:
        if not self.hardware_enabled:
            return (1 << (8 * size)) - 1
        byte = offset & 0xF
        if byte >= 4:
            return 0
        value = self._read_register(offset & 0xFF0)
        return (value >> (8 * byte)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if not self.hardware_enabled or offset & 0xF or size < 4:
            return
        self._write_register(offset & 0xFF0, value & 0xFFFFFFFF)

    def _read_register(self, reg: int) -> int:
        if reg == REG_ID:
            return self.id
        if reg == REG_VERSION:
            return APIC_VERSION_VALUE
        if reg == REG_TPR:
            return self.tpr
        if reg == REG_APR:
            return self.apr()
        if reg == REG_PPR:
            return self.ppr()
        if reg == REG_LDR:
            return self.ldr
        if reg == REG_DFR:
            return self.dfr
        if reg == REG_SVR:
            return self.svr
        for base, bitmap in ((REG_ISR, self.isr), (REG_TMR, self.tmr), (REG_IRR, self.irr)):
            if base <= reg < base + 0x80:
                return (bitmap >> (32 * ((reg - base) >> 4))) & 0xFFFFFFFF
        if reg == REG_ESR:
            return self.esr
        if reg == REG_ICR_LOW:
            return self.icr_low          # delivery status (bit 12) is always idle
        if reg == REG_ICR_HIGH:
            return self.icr_high
        if reg in self.lvt:
            return self.lvt[reg]
        if reg == REG_TIMER_INITIAL:
            return self.initial_count
        if reg == REG_TIMER_CURRENT:
            return self.current_count()
        if reg == REG_TIMER_DCR:
            return self.dcr
        return 0                         # EOI and RRD read 0, as do reserved offsets

    def _write_register(self, reg: int, value: int) -> None:
        if reg == REG_ID:
            self.id = value & ID_MASK
        elif reg == REG_TPR:
            self.tpr = value & TPR_MASK
            self._kick_if_pending()
        elif reg == REG_EOI:
            self._eoi()
        elif reg == REG_LDR:
            self.ldr = value & LDR_MASK
        elif reg == REG_DFR:
            self.dfr = (value & DFR_MODEL_MASK) | DFR_RESERVED_ONES
        elif reg == REG_SVR:
            self._write_svr(value)
        elif reg == REG_ESR:
            self.esr, self._esr_accumulated = self._esr_accumulated, 0
        elif reg == REG_ICR_LOW:
            self.icr_low = value & ICR_LOW_WRITABLE
            self._send_ipi()
        elif reg == REG_ICR_HIGH:
            self.icr_high = value & ICR_HIGH_WRITABLE
        elif reg in self.lvt:
            self._write_lvt(reg, value)
        elif reg == REG_TIMER_INITIAL:
            self._write_initial_count(value)
        elif reg == REG_TIMER_DCR:
            self._write_dcr(value)
        # version, APR, PPR, RRD, ISR/TMR/IRR, current count and reserved offsets: read-only / ignored

    def _write_svr(self, value: int) -> None:
        self.svr = value & SVR_WRITABLE
        if not self.svr & SVR_ENABLE:
            for reg in self.lvt:         # §11.4.7.2: software disable masks every LVT entry
                self.lvt[reg] |= LVT_MASKED
        self._kick_if_pending()

    def _write_lvt(self, reg: int, value: int) -> None:
        old_mode = self._timer_mode()
        entry = value & LVT_WRITABLE[reg]
        if not self.svr & SVR_ENABLE:
            entry |= LVT_MASKED          # cannot unmask while software-disabled
        if reg in (REG_LVT_LINT0, REG_LVT_LINT1):
            entry |= self.lvt[reg] & LVT_REMOTE_IRR
        self.lvt[reg] = entry
        if reg == REG_LVT_TIMER and self._timer_mode() != old_mode and TIMER_TSC_DEADLINE in (
                old_mode, self._timer_mode()):
            # §11.5.4.1: a change to or from TSC-deadline mode disarms the timer
            self._cancel_timers()
            self._tsc_deadline = 0
            self.initial_count = 0
            self._count_base = 0
        if reg == REG_LVT_LINT0:
            self._kick_if_pending()

    # ------------------------------------------------------------------ priorities
    def ppr(self) -> int:
        """Processor priority (§11.8.3.1): the TPR, or the in-service vector's class if higher."""
        isrv = max(_highest(self.isr), 0)
        return self.tpr if (self.tpr >> 4) >= (isrv >> 4) else isrv & 0xF0

    def apr(self) -> int:
        """Arbitration priority (§11.8.4, figure 11-15)."""
        isrv, irrv = max(_highest(self.isr), 0), max(_highest(self.irr), 0)
        if (self.tpr >> 4) >= (irrv >> 4) and (self.tpr >> 4) > (isrv >> 4):
            return self.tpr
        return max(self.tpr & 0xF0, isrv & 0xF0, irrv & 0xF0)

    def _extint_pending(self) -> bool:
        if self._extint_ack is None:
            return False                 # nothing to supply the vector
        if not self.hardware_enabled:
            return self._lint0_level     # LINT0 is the plain INTR pin
        if self._extint_message:
            return True
        lint0 = self.lvt[REG_LVT_LINT0]
        return (self._lint_asserted(REG_LVT_LINT0, self._lint0_level) and not lint0 & LVT_MASKED
                and (lint0 & LVT_DELIVERY_MODE) >> LVT_DELIVERY_MODE_SHIFT == DM_EXTINT)

    def _fixed_pending(self) -> bool:
        irrv = _highest(self.irr)
        return irrv >= 0 and (irrv & 0xF0) > (self.ppr() & 0xF0)

    def interrupt_pending(self) -> bool:
        """True when the CPU should take a maskable interrupt now (if its IF allows)."""
        if self._extint_pending():
            return True
        return self.hardware_enabled and self._fixed_pending()

    def nmi_pending(self) -> bool:
        return self._nmi

    def _kick_if_pending(self) -> None:
        if self.interrupt_pending():
            self._kick()

    def acknowledge(self) -> int | None:
        """The INTA cycle.  NMI first (vector 2, cleared); then ExtINT (vector from ``extint_ack``,
        not placed in the ISR); then the highest IRR vector above the PPR (moved to the ISR); else
        the spurious vector from the SVR, or None with the APIC hardware-disabled."""
        if self._nmi:
            self._nmi = False
            return NMI_VECTOR
        if self._extint_pending():
            self._extint_message = False
            return self._extint_ack() & 0xFF
        if not self.hardware_enabled:
            return None
        if self._fixed_pending():
            vector = _highest(self.irr)
            self.irr &= ~(1 << vector)
            self.isr |= 1 << vector
            return vector
        return self.svr & SVR_VECTOR_MASK

    def _eoi(self) -> None:
        vector = _highest(self.isr)
        if vector < 0:
            return
        self.isr &= ~(1 << vector)
        if self.tmr >> vector & 1 and self._eoi_broadcast is not None:
            self._eoi_broadcast(vector)
        self._kick_if_pending()

    # ------------------------------------------------------------------ arrivals
    def accepts(self, destination: int, logical: bool) -> bool:
        """Whether an APIC-bus message to ``destination`` (8-bit xAPIC) names this processor:
        physical mode by APIC ID or broadcast 0xff; logical mode by the LDR under the DFR model
        (flat: any common bit; cluster: same cluster (high nibble, 0xf = all) and a common low bit)."""
        destination &= 0xFF
        if not logical:
            return destination in (self.id >> 24, BROADCAST_ID)
        if destination == BROADCAST_ID:
            return True
        logical_id = self.ldr >> 24
        if self.dfr >> 28 == DFR_FLAT:
            return bool(logical_id & destination)
        cluster = destination >> 4
        return (cluster in (logical_id >> 4, 0xF)) and bool(logical_id & destination & 0xF)

    def _error(self, bits: int) -> None:
        new = bits & ~self._esr_accumulated
        self._esr_accumulated |= bits
        if new:
            self._local_interrupt(REG_LVT_ERROR)

    def deliver(self, vector: int, *, level: bool = False) -> None:
        """A fixed interrupt arriving on the APIC bus (I/O APIC, MSI or IPI)."""
        if not self.hardware_enabled:
            return
        vector &= 0xFF
        if vector < FIRST_LEGAL_VECTOR:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        if not self.svr & SVR_ENABLE:
            return
        self._accept(vector, level)

    def _accept(self, vector: int, level: bool) -> None:
        self.irr |= 1 << vector
        if level:
            self.tmr |= 1 << vector
        else:
            self.tmr &= ~(1 << vector)
        self._kick_if_pending()

    def deliver_extint(self, level: bool = False) -> None:
        """An ExtINT message on the APIC bus (an I/O APIC pin in ExtINT mode): the next INTA cycle
        takes its vector from ``extint_ack``.  ``level`` is the pin's trigger mode (unused)."""
        if self.hardware_enabled and self._extint_ack is not None:
            self._extint_message = True
            self._kick()

    def nmi(self) -> None:
        """An NMI arriving on the APIC bus (I/O APIC or IPI); accepted even when software-disabled."""
        if self.hardware_enabled:
            self._raise_nmi()

    def _raise_nmi(self) -> None:
        self._nmi = True
        self._kick()

    def _lint_asserted(self, reg: int, level: bool) -> bool:
        """A LINT pin's input after the LVT's polarity (bit 13: active low); with the APIC
        hardware-disabled the pins are plain active-high INTR/NMI."""
        if not self.hardware_enabled:
            return level
        return level != bool(self.lvt[reg] & LVT_POLARITY)

    def set_lint0(self, level: bool) -> None:
        """LINT0's wire (an 8259's INTR in the PC).  ExtINT mode passes the level through; other
        modes act on a rising edge of the (polarity-adjusted) input."""
        was = self._lint_asserted(REG_LVT_LINT0, self._lint0_level)
        self._lint0_level = bool(level)
        if self._lint_asserted(REG_LVT_LINT0, self._lint0_level) and not was and self.hardware_enabled:
            self._lint_edge(REG_LVT_LINT0)
        self._kick_if_pending()

    def set_lint1(self, level: bool) -> None:
        """LINT1's wire (the NMI line in the PC); acts on a rising edge."""
        was = self._lint_asserted(REG_LVT_LINT1, self._lint1_level)
        self._lint1_level = bool(level)
        if not self._lint_asserted(REG_LVT_LINT1, self._lint1_level) or was:
            return
        if not self.hardware_enabled:
            self._raise_nmi()            # LINT1 is the plain NMI pin
        else:
            self._lint_edge(REG_LVT_LINT1)

    def _lint_edge(self, reg: int) -> None:
        if (self.lvt[reg] & LVT_DELIVERY_MODE) >> LVT_DELIVERY_MODE_SHIFT != DM_EXTINT:
            self._local_interrupt(reg)

    def _local_interrupt(self, reg: int) -> None:
        """An LVT entry's source fired: deliver it by the entry's mode unless masked."""
        entry = self.lvt[reg]
        if entry & LVT_MASKED or not self.hardware_enabled:
            return
        mode = (entry & LVT_DELIVERY_MODE) >> LVT_DELIVERY_MODE_SHIFT
        if reg in (REG_LVT_TIMER, REG_LVT_ERROR):
            mode = DM_FIXED              # these entries have no delivery-mode field
        if mode == DM_FIXED:
            vector = entry & LVT_VECTOR
            if vector < FIRST_LEGAL_VECTOR:
                self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            else:
                self._accept(vector, False)
        elif mode == DM_NMI:
            self._raise_nmi()
        # SMI, INIT, ExtINT (other than LINT0's pass-through) and reserved modes: nothing to do

    # ------------------------------------------------------------------ IPIs
    def _send_ipi(self) -> None:
        low, high = self.icr_low, self.icr_high
        mode = (low >> ICR_DELIVERY_MODE_SHIFT) & 0x7
        vector = low & ICR_VECTOR
        shorthand = (low >> ICR_SHORTHAND_SHIFT) & 0x3
        if shorthand in (SHORTHAND_SELF, SHORTHAND_ALL_INCLUDING_SELF):
            to_self = True
        elif shorthand == SHORTHAND_ALL_EXCLUDING_SELF:
            to_self = False
        else:
            to_self = self.accepts(high >> 24, bool(low & ICR_DEST_LOGICAL))
        if mode in (DM_FIXED, DM_LOWEST):
            if vector < FIRST_LEGAL_VECTOR:
                self._error(ESR_SEND_ILLEGAL_VECTOR)
            elif to_self and self.svr & SVR_ENABLE:
                self._accept(vector, False)
        elif mode == DM_NMI:
            if to_self:
                self._raise_nmi()
        else:
            self.ignored_ipis.append(IgnoredIpi(mode, vector, low, high))
            self.ignored_ipi_count += 1

    # ------------------------------------------------------------------ timer
    def _timer_mode(self) -> int:
        mode = (self.lvt[REG_LVT_TIMER] & LVT_TIMER_MODE) >> LVT_TIMER_MODE_SHIFT
        return TIMER_ONE_SHOT if mode == 3 else mode     # mode 3 is reserved: treated as one-shot

    def _write_initial_count(self, value: int) -> None:
        if self._timer_mode() == TIMER_TSC_DEADLINE:
            return                       # §11.5.4.1: ignored in TSC-deadline mode
        self.initial_count = value & TIMER_COUNT_MASK
        self._start_count(self.initial_count)

    def _write_dcr(self, value: int) -> None:
        remaining = self.current_count() if self._count_base else 0
        self.dcr = value & DCR_MASK
        if remaining:                    # keep counting from where it is, at the new rate
            self._start_count(remaining)

    def _start_count(self, count: int) -> None:
        if self._timer_event is not None:
            self._timer_event.cancel()
            self._timer_event = None
        self._count_base_ns = self._clock.now()
        self._count_base = count
        if count:
            self._timer_event = self._clock.schedule(
                self._count_base_ns + count * self._ns_per_tick(), self._timer_expired)

    def _ns_per_tick(self) -> int:
        return timer_divider(self.dcr) * TIMER_INPUT_NS_PER_TICK

    def current_count(self) -> int:
        """The current-count register: counts down once per divided tick from the initial count;
        one-shot stays at 0, periodic reloads from the initial count."""
        if not self._count_base:
            return 0
        ticks = (self._clock.now() - self._count_base_ns) // self._ns_per_tick()
        if ticks < self._count_base:
            return self._count_base - ticks
        if self._timer_mode() != TIMER_PERIODIC or not self.initial_count:
            return 0
        return self.initial_count - (ticks - self._count_base) % self.initial_count

    def _timer_expired(self) -> None:
        deadline = self._timer_event.at if self._timer_event is not None else self._clock.now()
        self._timer_event = None
        if self._timer_mode() == TIMER_PERIODIC and self.initial_count:
            period = self.initial_count * self._ns_per_tick()
            missed = max(self._clock.now() - deadline, 0) // period
            self._timer_event = self._clock.schedule(deadline + (missed + 1) * period, self._timer_expired)
        else:
            self._count_base = 0         # one-shot: the count rests at 0
        self._local_interrupt(REG_LVT_TIMER)
