"""The PC's two cascaded 8259A programmable interrupt controllers and the PIIX/ICH ELCR.

``Pic8259Pair`` models the master (ports 0x20/0x21, ISA IRQ 0-7) and the slave (0xA0/0xA1, ISA IRQ
8-15) whose INT output is wired to the master's IR2, plus the edge/level control registers at
0x4D0/0x4D1.  The CPU side is one ``intr`` line (high while the master would interrupt) and
``acknowledge()``, the INTA cycle that returns the vector.

Modelled: the ICW1-ICW4 initialisation sequence (ICW1 resets IMR/ISR/IRR, edge-sense latches,
priority and special mask; LTIM selects level triggering for all inputs; SNGL skips ICW3; IC4
asks for ICW4, whose AEOI bit is honoured), OCW1 (IMR), OCW2 (non-specific and specific EOI, their
rotating variants, rotate in automatic-EOI mode set/clear, set priority), OCW3 (IRR/ISR read
select, poll command, special mask mode), spurious IRQ7/IRQ15 when a request vanishes before INTA,
automatic EOI and rotation, per-input level triggering from the ELCR.

Not modelled: 8080/8085 mode (ICW1 bit 2 ADI and the CALL opcode of the INTA sequence; x86 mode is
assumed whatever ICW4 says), buffered mode (ICW4 BUF/M-S), special fully nested mode (stored, not
applied), the slave identity in ICW3 (the slave is on IR2 as on every PC).

Sources: Intel 8259A datasheet (order no. 231468) for the command words; Intel 82371 PIIX
datasheet for the ELCR (IRQ0, 1, 2, 8 and 13 cannot be level triggered); Linux
arch/x86/kernel/i8259.c for what the kernel relies on (IMR readback probe, specific EOI to the
slave then IR2 of the master, spurious IRQ7/15 detection through the ISR).
"""

from __future__ import annotations

from .isa_bus import BytePorts

from .line import IrqLine

# Port numbers (IBM PC/AT; Intel 82371 PIIX for the ELCR).
MASTER_COMMAND, MASTER_DATA = 0x20, 0x21
SLAVE_COMMAND, SLAVE_DATA = 0xA0, 0xA1
ELCR_MASTER, ELCR_SLAVE = 0x4D0, 0x4D1
CASCADE_IRQ = 2                         # the slave's INT drives the master's IR2
SPURIOUS_IRQ = 7                        # the level a vanished request is reported as

# ELCR bits that exist (PIIX): IRQ0, IRQ1, IRQ2 (master) and IRQ8, IRQ13 (slave) are always edge.
ELCR_MASTER_WRITABLE = 0xF8
ELCR_SLAVE_WRITABLE = 0xDE

# ICW1 (A0=0, bit 4 set) and OCW3 (A0=0, bits 4:3 = 01) / OCW2 (bits 4:3 = 00), 8259A datasheet.
ICW1_SELECT = 0x10
ICW1_IC4 = 0x01                         # ICW4 follows
ICW1_SNGL = 0x02                        # single PIC: no ICW3
ICW1_LTIM = 0x08                        # level-triggered mode for every input
OCW3_SELECT = 0x08
OCW3_RIS = 0x01                         # with RR: read ISR rather than IRR
OCW3_RR = 0x02                          # register read command present
OCW3_POLL = 0x04
OCW3_SMM = 0x20                         # with ESMM: special mask mode on/off
OCW3_ESMM = 0x40
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10
POLL_INTERRUPT = 0x80                   # bit 7 of the poll word: a request was pending

# OCW2 R/SL/EOI field (bits 7:5).
OCW2_ROTATE_AEOI_CLEAR = 0
OCW2_NONSPECIFIC_EOI = 1
OCW2_NOP = 2
OCW2_SPECIFIC_EOI = 3
OCW2_ROTATE_AEOI_SET = 4
OCW2_ROTATE_NONSPECIFIC_EOI = 5
OCW2_SET_PRIORITY = 6
OCW2_ROTATE_SPECIFIC_EOI = 7

NO_IRQ = -1


class Pic8259:
    """One 8259A: eight inputs, IRR/ISR/IMR, its initialisation state machine and priorities.

    ``inputs`` are the current input levels; ``get_irq()`` is the input the chip would interrupt
    for now (or ``NO_IRQ``); ``intack(irq)`` is what the INTA cycle does to the registers.
    """

    def __init__(self, elcr_writable: int):
        self.elcr = 0
        self.elcr_writable = elcr_writable
        self.inputs = 0                   # current input levels (edge detection)
        self._reset_init()

    def _reset_init(self) -> None:
        self.irr = self.isr = self.imr = 0
        self.vector_base = 0
        self.lowest_priority = 7          # rotation: the input after this one has top priority
        self.read_isr = False
        self.poll = False
        self.special_mask = False
        self.init_step = 0                # 0: operational; 2/3/4: expecting ICW2/ICW3/ICW4
        self.needs_icw4 = False
        self.single = False
        self.level_all = False            # ICW1 LTIM
        self.auto_eoi = False
        self.rotate_on_aeoi = False
        self.special_fully_nested = False
        self.cascade_icw3 = 0

    # --- inputs ---------------------------------------------------------------------------
    def level_mask(self) -> int:
        return 0xFF if self.level_all else self.elcr

    def set_input(self, irq: int, level: bool) -> None:
        bit = 1 << irq
        if self.level_mask() & bit:
            if level:
                self.irr |= bit
            else:
                self.irr &= ~bit
        elif level and not self.inputs & bit:
            self.irr |= bit               # rising edge latches the request
        self.inputs = self.inputs | bit if level else self.inputs & ~bit

    def write_elcr(self, value: int) -> None:
        """Inputs switched to level triggering request exactly while they are high."""
        self.elcr = value & self.elcr_writable
        level = self.level_mask()
        self.irr = (self.irr & ~level) | (self.inputs & level)

    # --- priority resolution --------------------------------------------------------------
    def _highest(self, mask: int) -> int:
        """The priority rank (0 = highest) of the best request in ``mask``, or 8 if none."""
        for rank in range(8):
            if mask & (1 << ((self.lowest_priority + 1 + rank) & 7)):
                return rank
        return 8

    def get_irq(self) -> int:
        rank = self._highest(self.irr & ~self.imr)
        if rank == 8:
            return NO_IRQ
        in_service = self.isr & ~self.imr if self.special_mask else self.isr
        if rank < self._highest(in_service):
            return (self.lowest_priority + 1 + rank) & 7
        return NO_IRQ

    def intack(self, irq: int) -> None:
        bit = 1 << irq
        if self.auto_eoi:
            if self.rotate_on_aeoi:
                self.lowest_priority = irq
        else:
            self.isr |= bit
        if not self.level_mask() & bit:
            self.irr &= ~bit              # a level input keeps requesting while it is high

    def poll_read(self) -> int:
        self.poll = False
        irq = self.get_irq()
        if irq == NO_IRQ:
            return 0
        self.intack(irq)
        return POLL_INTERRUPT | irq

    # --- command words --------------------------------------------------------------------
    def write_command(self, value: int) -> None:
        if value & ICW1_SELECT:
            self._reset_init()
            self.inputs = 0               # the edge-sense circuit is reset: inputs must rise again
            self.needs_icw4 = bool(value & ICW1_IC4)
            self.single = bool(value & ICW1_SNGL)
            self.level_all = bool(value & ICW1_LTIM)
            self.init_step = 2
        elif value & OCW3_SELECT:
            if value & OCW3_POLL:
                self.poll = True
            if value & OCW3_RR:
                self.read_isr = bool(value & OCW3_RIS)
            if value & OCW3_ESMM:
                self.special_mask = bool(value & OCW3_SMM)
        else:
            self._ocw2(value >> 5, value & 7)

    def _ocw2(self, command: int, level: int) -> None:
        if command in (OCW2_ROTATE_AEOI_CLEAR, OCW2_ROTATE_AEOI_SET):
            self.rotate_on_aeoi = command == OCW2_ROTATE_AEOI_SET
        elif command in (OCW2_NONSPECIFIC_EOI, OCW2_ROTATE_NONSPECIFIC_EOI):
            rank = self._highest(self.isr)
            if rank != 8:
                irq = (self.lowest_priority + 1 + rank) & 7
                self.isr &= ~(1 << irq)
                if command == OCW2_ROTATE_NONSPECIFIC_EOI:
                    self.lowest_priority = irq
        elif command in (OCW2_SPECIFIC_EOI, OCW2_ROTATE_SPECIFIC_EOI):
            self.isr &= ~(1 << level)
            if command == OCW2_ROTATE_SPECIFIC_EOI:
                self.lowest_priority = level
        elif command == OCW2_SET_PRIORITY:
            self.lowest_priority = level
        # OCW2_NOP: nothing

    def write_data(self, value: int) -> None:
        if self.init_step == 2:                               # ICW2: vector base
            self.vector_base = value & 0xF8
            self.init_step = 0 if self.single and not self.needs_icw4 else (4 if self.single else 3)
        elif self.init_step == 3:                             # ICW3: cascade wiring
            self.cascade_icw3 = value
            self.init_step = 4 if self.needs_icw4 else 0
        elif self.init_step == 4:                             # ICW4
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.special_fully_nested = bool(value & ICW4_SFNM)
            self.init_step = 0
        else:                                                 # OCW1: interrupt mask
            self.imr = value

    def read_command(self) -> int:
        if self.poll:
            return self.poll_read()
        return self.isr if self.read_isr else self.irr


class Pic8259Pair(BytePorts):
    """The cascaded master/slave pair as on a PC, with the ELCR; see the module docstring."""

    def __init__(self, *, intr: IrqLine):
        self.intr = intr
        self.master = Pic8259(ELCR_MASTER_WRITABLE)
        self.slave = Pic8259(ELCR_SLAVE_WRITABLE)
        self.ports = (MASTER_COMMAND, MASTER_DATA, SLAVE_COMMAND, SLAVE_DATA, ELCR_MASTER, ELCR_SLAVE)

    # --- device side ----------------------------------------------------------------------
    def set_irq(self, irq: int, level: bool) -> None:
        """Drive ISA input ``irq`` (0-15) to ``level``; IRQ2 is the cascade and cannot be driven."""
        if not 0 <= irq < 16 or irq == CASCADE_IRQ:
            return
        if irq < 8:
            self.master.set_input(irq, level)
        else:
            self.slave.set_input(irq - 8, level)
        self._update()

    def _update(self) -> None:
        """Propagate the slave's INT to IR2 and the master's INT to ``intr``."""
        self.master.set_input(CASCADE_IRQ, self.slave.get_irq() != NO_IRQ)
        self.intr.set(self.master.get_irq() != NO_IRQ)

    # --- CPU side ---------------------------------------------------------------------------
    def acknowledge(self) -> int:
        """The INTA cycle: move the winning request to ISR and return its vector.  A request that
        vanished before INTA gives the chip's IR7 vector without touching its ISR (spurious)."""
        irq = self.master.get_irq()
        if irq == NO_IRQ:
            vector = self.master.vector_base + SPURIOUS_IRQ
        else:
            self.master.intack(irq)
            if irq == CASCADE_IRQ:
                slave_irq = self.slave.get_irq()
                if slave_irq == NO_IRQ:
                    vector = self.slave.vector_base + SPURIOUS_IRQ
                else:
                    self.slave.intack(slave_irq)
                    vector = self.slave.vector_base + slave_irq
            else:
                vector = self.master.vector_base + irq
        self._update()
        return vector

    # --- ports ------------------------------------------------------------------------------
    def _read_byte(self, port: int) -> int:
        if port == MASTER_COMMAND:
            value = self.master.read_command()
        elif port == MASTER_DATA:
            value = self.master.imr
        elif port == SLAVE_COMMAND:
            value = self.slave.read_command()
        elif port == SLAVE_DATA:
            value = self.slave.imr
        elif port == ELCR_MASTER:
            return self.master.elcr
        elif port == ELCR_SLAVE:
            return self.slave.elcr
        else:
            return 0xFF                   # not ours: the ISA bus floats high
        self._update()                    # a poll read acknowledges
        return value

    def _write_byte(self, port: int, value: int) -> None:
        if port == MASTER_COMMAND:
            self.master.write_command(value)
        elif port == MASTER_DATA:
            self.master.write_data(value)
        elif port == SLAVE_COMMAND:
            self.slave.write_command(value)
        elif port == SLAVE_DATA:
            self.slave.write_data(value)
        elif port == ELCR_MASTER:
            self.master.write_elcr(value)
        elif port == ELCR_SLAVE:
            self.slave.write_elcr(value)
        else:
            return
        self._update()
