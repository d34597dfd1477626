"""The Machine: one Unicorn engine, its guest memory, devices, events, and the API plugins use.

Plugins never touch the engine for memory: they go through ``machine.memory`` (physical) and
``machine.vmem`` (virtual), which are bounds-checked.  Registers go through ``reg``/``set_reg``
(``regs`` reads several in one engine call), which call libunicorn directly (registers.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import attrs
from unicorn import UC_PROT_ALL
from unicorn import x86_const

from . import acpi
from .cpu import MSR_EFER, EntryState, Segment
from .cpuid import LEAF1_ECX_HYPERVISOR, LEAF1_ECX_OSXSAVE, CpuidTable
from .clock import NS_PER_BLOCK, GuestClock
from .devices import AcpiPm, ConsoleSink, DebugCon, ExitPort, ResetControl
from .devices.chipset import COM1_IRQ, PcChipset
from .devices.keyboard import parse_keys
from .devices.line import IrqLine
from .devices.uart import Uart16550A
from .devices.vga_text import TEXT_BASE, TEXT_SIZE
from .engine import fetch_physical, new_engine
from .engine_state import EngineState, calibrate
from .errors import GuestMemoryError, LoadError
from .events import ConsoleOutput, Event, Note, Shutdown
from .exceptions import ExceptionDelivery
from .layout import BIOS_AREA, PhysicalLayout
from .memory import PAGE_SIZE, GuestMemory, VirtualMemory
from .native import NativeHooks
from .registers import RegisterFile
from .result import StopReason
from .svm import GuestMode
from .traps import TrapDispatcher

if TYPE_CHECKING:
    import pluggy

    from .config import MachineConfig

CR4_OSXSAVE = 1 << 18
MSR_IA32_TSC = 0x10     # read and written through the core: the TSC is guest time (clock.py)
RFLAGS_VM = 1 << 17
# MSRs the host itself reads or writes while the guest runs; intercepting them would kill the
# process (svm.py), so plugins cannot own them.
# Linux ends a panic with this line (kernel/panic.c) and then spins with interrupts off forever: the
# run ends there as a crash, the panic message as its detail.
LINUX_PANIC_END = "---[ end Kernel panic - not syncing: "
HOST_MSRS = frozenset({MSR_EFER, 0xC000_0100, 0xC000_0101, 0xC000_0102, 0xC001_0117})

_REGISTERS = {
    name[len("UC_X86_REG_"):].lower(): value
    for name, value in vars(x86_const).items()
    if name.startswith("UC_X86_REG_")
}
_REGISTER_TUPLES: dict[tuple[str, ...], tuple[int, ...]] = {}
STATE_REGISTERS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "rflags", "cs", "ds", "es", "fs", "gs", "ss", "cr0", "cr2", "cr3", "cr4",
    "efer", "fs_base", "gs_base",
)


# RAM a device may later take over (the PC chipset's VGA text window): mapped in the engine as a
# region of its own, because Unicorn 2.1.4's ``mem_unmap`` of part of a region copies the whole
# region (split_region): about 2 s for the 512 MiB at 0 that holds the window.
DEVICE_WINDOWS = ((TEXT_BASE, TEXT_SIZE),)


def _engine_regions(backed) -> list[tuple[int, int]]:
    """The engine mappings for the RAM ranges ``backed``: the same bytes, cut at the edges of the
    ``DEVICE_WINDOWS`` inside them."""
    out = []
    for start, size in backed:
        end = start + size
        cuts = sorted({c for w, n in DEVICE_WINDOWS for c in (w, w + n) if start < c < end})
        for lo, hi in zip([start, *cuts], [*cuts, end]):
            out.append((lo, hi - lo))
    return out


class PortTable:
    """Port number -> device; ``attach`` refuses overlaps so two devices never fight over a port."""

    def __init__(self) -> None:
        self.devices: dict[int, Any] = {}

    def attach(self, device: Any, ports=None) -> None:
        for port in (device.ports if ports is None else ports):
            if port in self.devices:
                raise ValueError(f"port {port:#x} already belongs to {type(self.devices[port]).__name__}")
            self.devices[port] = device


class Machine:
    def __init__(self, config: "MachineConfig", pm: "pluggy.PluginManager"):
        self.config = config
        self.pm = pm
        self.layout = PhysicalLayout.for_config(config)
        self.uc = new_engine()
        self.regfile = RegisterFile(self.uc)     # register access without the binding's per-call work
        for start, size in _engine_regions(self.layout.backed):
            self.uc.mem_map(start, size, UC_PROT_ALL)
        self.guest_mode = GuestMode(self.uc)
        self.guest_mode.intercept_invlpg = config.tlb == "native"     # the native TLB filler needs it
        self.memory = GuestMemory(self.uc, list(self.layout.backed))
        self.vmem = VirtualMemory(self.uc, self.memory)
        self.ports = PortTable()
        self.events: list[Event] = []
        self.acpi_tables: acpi.AcpiTables | None = None
        self.entry_state: EntryState | None = None
        self.stop_reason: StopReason | None = None
        self.host_traceback: str | None = None
        self.stop_registers: dict[str, int] | None = None
        self.unclaimed_ports: dict[int, int] = {}
        self.faults_delivered = 0
        self._sinks: list[Any] = []
        self.plugin_state: dict[str, Any] = {}     # per-run state of the run's plugins, by plugin name
        self.cpuid = CpuidTable.probe()
        self.native = NativeHooks(self.uc, insn_limit=config.max_instructions, ram=list(self.layout.backed))
        self.clock = GuestClock(self.native.control, NS_PER_BLOCK)
        # The CPU's interrupt input (INTR/NMI): an object with ``interrupt_pending() -> bool`` and
        # ``acknowledge() -> int | None`` (the local APIC, or the 8259 when there is none); ``None``
        # on a machine without interrupt sources.
        self.interrupt_source = None
        self.interrupts_delivered = 0
        self.interrupt_counts: dict[int, int] = {}
        self.chipset = None
        # MSRs of the core's own devices: index -> (read() -> int, write(value) -> bool, False = #GP)
        self.core_msrs: dict[int, tuple[Any, Any]] = {}
        # CPUID faulting (MSR_MISC_FEATURES_ENABLES bit 0, which the environment that offers it owns):
        # ``cpuid`` at CPL > 0 raises #GP(0)
        self.cpuid_faulting = False
        self.engine = EngineState(self.uc, calibrate())
        self.delivery = ExceptionDelivery(self)
        self.traps = TrapDispatcher(self)
        self.add_core_msr(MSR_IA32_TSC, self.tsc, self._write_tsc)
        self.memory.after_write = self._forget_code
        # Set (from any thread) when the run is interrupted or its wall-clock budget is spent:
        # long host-side work (a 1 GiB SetMem, a batch of hypercalls) checks it between chunks
        # and gives up, so the run stops within a chunk's time.
        self.run_ending = False

    def tsc(self) -> int:
        """The guest's time-stamp counter: guest time in ns plus what a write to IA32_TSC set."""
        return (self.clock.now() + self.native.control.tsc_offset) & 0xFFFF_FFFF_FFFF_FFFF

    def _write_tsc(self, value: int) -> bool:
        self.native.control.tsc_offset = (value - self.clock.now()) & 0xFFFF_FFFF_FFFF_FFFF
        return True

    # -- registers -------------------------------------------------------------------------
    def reg(self, name: str) -> int:
        if name == "efer":      # unicorn 2.1.4 has no EFER register id; it is an MSR
            return self.regfile.msr_read(MSR_EFER)
        return self.regfile.read(_REGISTERS[name])

    def regs(self, *names: str) -> tuple[int, ...]:
        """The values of several plain registers (general, selectors, control, flags, RIP) read
        in one engine call: what a trap handler reads its arguments with."""
        ids = _REGISTER_TUPLES.get(names)
        if ids is None:
            ids = _REGISTER_TUPLES[names] = tuple(_REGISTERS[n] for n in names)
        return self.regfile.read_many(ids)

    def set_reg(self, name: str, value: int) -> None:
        self.regfile.write(_REGISTERS[name], value)

    def set_rip(self, value: int) -> None:
        self.regfile.write(x86_const.UC_X86_REG_RIP, value)

    def registers(self) -> dict[str, int]:
        out = {}
        for name in STATE_REGISTERS:
            try:
                out[name] = self.reg(name)
            except Exception:   # noqa: BLE001 - a register the engine cannot read now is left out
                continue
        return out

    def code_segment(self) -> tuple[int, int]:
        """``(base, bits)`` of the code segment the guest executes in now: the engine's own hidden
        state (``EngineState.code_segment``), i.e. the descriptor as the CPU loaded it, not as
        the GDT holds it now.  Real and virtual-8086 mode are 16-bit with base CS << 4 as loaded;
        64-bit code has base 0."""
        return self.engine.code_segment()

    def code_address(self, rip: int) -> int:
        """The linear address of ``rip`` in the current code segment."""
        base, bits = self.code_segment()
        return (base + rip) & (0xFFFF_FFFF_FFFF_FFFF if bits == 64 else 0xFFFF_FFFF)

    def read_code(self, rip: int, size: int) -> bytes:
        """The ``size`` bytes at ``rip`` of an instruction the engine has just executed or trapped
        on, read where the engine fetched them.  That is where the guest page tables map them, unless
        the guest (or a hypercall on its behalf) changed the tables without a flush and the engine
        ran the instruction through its TLB, as a CPU does: then the TLB's translation
        (``engine.fetch_physical``).  ``size`` must not go past the instruction (bytes the engine
        did not fetch may not be in its TLB).  GuestMemoryError when neither reaches them."""
        linear = self.code_address(rip)
        try:
            return self.vmem.read(linear, size)
        except GuestMemoryError as exc:
            failure = exc
        out = bytearray()
        while len(out) < size:
            at = (linear + len(out)) & 0xFFFF_FFFF_FFFF_FFFF
            self.native.control.vtlb_probing = 1       # a miss asks the native TLB filler: quietly
            try:
                physical = fetch_physical(self.uc, at)
            finally:
                self.native.control.vtlb_probing = 0
            if physical is None:
                raise failure
            n = min(size - len(out), PAGE_SIZE - at % PAGE_SIZE)
            out += self.memory.read(physical, n)
        return bytes(out)

    def cpl(self) -> int:
        """The current privilege level: 0 in real mode, 3 in virtual-8086 mode, else CS.RPL."""
        cr0, rflags, cs = self.regs("cr0", "rflags", "cs")
        if not cr0 & 1:
            return 0
        return 3 if rflags & RFLAGS_VM else cs & 3

    def start(self, state: EntryState) -> None:
        """Where and how the guest starts (set by the environment in ``hvsim_setup``, after it wrote
        the GDT that ``state``'s selectors name).  Raises ``LoadError`` if a selector names no
        descriptor in guest RAM."""
        for name in ("cs", "ds", "es", "ss"):
            if isinstance(getattr(state, name), Segment):
                continue
            try:
                Segment.from_gdt(self.memory, *state.gdt, getattr(state, name))
            except ValueError as exc:
                raise LoadError(f"entry state: {name.upper()}: {exc}") from None
        self.entry_state = state

    @property
    def entry_rip(self) -> int | None:
        return None if self.entry_state is None else self.entry_state.rip

    # -- CPUID and MSRs ------------------------------------------------------------------------
    def native_cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """What the guest sees for this leaf when no plugin answers: the CPU model with SVM hidden
        and no hypervisor bit (leaf 1 ECX bit 31, which QEMU's model sets), as on a bare PC; an
        environment that is a hypervisor sets it in its ``hvsim_cpuid``."""
        eax, ebx, ecx, edx = self.cpuid.lookup(leaf, subleaf)
        if leaf == 1:
            ecx &= ~(LEAF1_ECX_OSXSAVE | LEAF1_ECX_HYPERVISOR)
            if self.regfile.read(x86_const.UC_X86_REG_CR4) & CR4_OSXSAVE:
                ecx |= LEAF1_ECX_OSXSAVE
        return eax, ebx, ecx, edx

    def guest_cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """What ``cpuid`` returns to the guest now: the run's plugins first, then ``native_cpuid``."""
        answer = self.pm.hook.hvsim_cpuid(machine=self, leaf=leaf, subleaf=subleaf)
        return tuple(answer) if answer is not None else self.native_cpuid(leaf, subleaf)

    def intercept_msr(self, index: int) -> None:
        """Route guest reads and writes of MSR ``index`` to ``hvsim_msr``.  MSRs outside the three
        architectural ranges (0-0x1fff, 0xc0000000-0xc0001fff, 0xc0010000-0xc0011fff), such as
        the hypervisor ranges at 0x40000000, always reach it and need no call."""
        if index in HOST_MSRS:
            raise ValueError(f"MSR {index:#x} is used by the host itself and cannot be intercepted")
        self.guest_mode.intercept_msr(index)

    def add_core_msr(self, index: int, read, write) -> None:
        """An MSR a core device owns (the local APIC's base, its TSC deadline): intercepted, and
        answered by ``read()`` / ``write(value) -> bool`` when no plugin's ``hvsim_msr`` answers."""
        self.intercept_msr(index)
        self.core_msrs[index] = (read, write)

    def msr_read(self, index: int) -> int:
        """The engine's own value of an MSR that is not intercepted (e.g. EFER, FS_BASE)."""
        self._check_host_msr(index)
        return self.regfile.msr_read(index)

    def msr_write(self, index: int, value: int) -> None:
        self._check_host_msr(index)
        self.uc.msr_write(index, value)

    def _check_host_msr(self, index: int) -> None:
        if self.guest_mode.intercepted(index) or self.guest_mode.intercepted(index, write=True):
            raise ValueError(f"MSR {index:#x} is intercepted: its value lives with the plugin that owns it")

    def write_code(self, address: int, data: bytes) -> None:
        """Write instructions into guest memory (a hypercall page, a patched stub).  The engine does
        not notice host stores to code it already translated, so its translations are dropped."""
        self.memory.write(address, data)
        self.uc.ctl_flush_tb()

    def _forget_code(self, address: int, size: int) -> None:
        """After a host write to guest-physical ``[address, address+size)``: drop the engine's
        translations of code there, through whatever linear address the guest fetched it (the
        engine keys translated code by physical address), so the guest runs what is in memory now.
        Before the guest first ran there is no translated code of its own to drop."""
        if self.native.control.blocks:
            self.native.forget_code(address, address + size)

    def flush_tlb(self) -> None:
        """Drop the engine's cached translations, as ``invlpg``/a CR3 reload would: needed after the
        host changed guest page tables (a PV MMU hypercall), or the guest runs on stale mappings."""
        self.native.flush_tlb()

    def add_private_memory(self, start: int, size: int) -> None:
        """Back ``[start, start+size)`` with host RAM that belongs to the environment, not to the
        guest's memory map: a hypervisor's own frames (Xen's M2P table, its GDT area).  It must
        lie outside the configured layout; ``machine.memory`` reaches it afterwards."""
        if any(start < s + n and s < start + size for s, n in self.layout.backed):
            raise ValueError(f"private memory {start:#x}+{size:#x} overlaps guest RAM")
        self.uc.mem_map(start, size, UC_PROT_ALL)
        self.memory.add_region(start, size)
        self.native.add_ram(start, size)

    # -- devices ---------------------------------------------------------------------------
    def attach_pc_devices(self, *, acpi_tables: bool | None = None, interrupts: str | None = "pc",
                          acpi_placement: Callable[[acpi.AcpiPlatform], tuple[int, int | None]] | None = None,
                          type_keys: bool = True) -> None:
        """The devices of a PC: COM1, the 0xE9 debug console, the exit port, reset control, and,
        when ACPI is on, the ACPI tables plus the PM1a block they describe.  The tables go in the BIOS
        area unless ``acpi_placement`` (a firmware's allocator) gives, for the platform, the base of
        the tables and the FACS's own address (None: the FACS stays with the tables).
        ``interrupts``: ``"pc"`` adds the interrupt and timer chipset (local APIC, I/O APIC, 8259 pair,
        PIT, RTC, i8042 and keyboard, VGA text; ``devices/chipset.py``), ``"lapic"`` the local APIC
        alone, ``None`` none of them.  The configuration's scripted keys are typed on the keyboard
        from the start unless ``type_keys`` is false (a firmware that hands them on later, through
        ``chipset.typing.start``); a machine without a keyboard notes that they go nowhere."""
        use_acpi = self.config.acpi if acpi_tables is None else acpi_tables
        platform = acpi.AcpiPlatform(cpus=self.config.smp, io_apic=interrupts != "lapic", i8042=interrupts == "pc")
        if interrupts is not None:
            self.chipset = PcChipset(self, level=interrupts, ioapic_id=platform.ioapic_id)
        serial = ConsoleSink(self, "serial0")
        self.add_sink(serial)
        irq4 = self.chipset.isa_line(COM1_IRQ) if self.chipset is not None else None
        self.ports.attach(Uart16550A(irq=irq4 or IrqLine(name="IRQ4"), output=serial.put))
        self.ports.attach(DebugCon(self))
        self.ports.attach(ExitPort(self))
        legacy = self.chipset is not None and self.chipset.legacy
        self.ports.attach(ResetControl(self, kbc_port=not legacy))
        if self.config.keys and type_keys:
            if legacy:
                self.chipset.typing.start(parse_keys(self.config.keys))
            else:
                self.note("scripted keys given, but this machine has no keyboard: they are not typed")
        if use_acpi:
            base, facs_base = acpi_placement(platform) if acpi_placement is not None else (BIOS_AREA, None)
            self.acpi_tables = acpi.build_acpi_tables(platform, base, facs_base)
            for address, data in self.acpi_tables.writes():
                self.memory.write(address, data)
            self.ports.attach(AcpiPm(self, evt_port=platform.pm1a_evt_port, cnt_port=platform.pm1a_cnt_port,
                                     tmr_port=platform.pm_tmr_port, s5_sleep_type=platform.s5_sleep_type))

    def add_sink(self, sink: Any) -> None:
        self._sinks.append(sink)

    def flush_consoles(self) -> None:
        for sink in self._sinks:
            sink.flush()

    # -- events and stopping ---------------------------------------------------------------
    def emit(self, event: Event) -> Event:
        """Record ``event`` with the next sequence number and show it to observers.  A caller on a
        hot path builds it with ``seq=machine.next_seq()`` and saves the copy."""
        if event.seq != len(self.events):
            event = attrs.evolve(event, seq=len(self.events))
        self.events.append(event)
        hook = self.pm.hook.hvsim_event
        if hook.get_hookimpls():      # nobody observing (a benchmark, a batch run): no hook call per event
            hook(machine=self, event=event)
        return event

    def next_seq(self) -> int:
        """The sequence number the next recorded event gets."""
        return len(self.events)

    def console_text(self, channel: str, text: str) -> None:
        self.emit(ConsoleOutput(channel=channel, text=text))
        if LINUX_PANIC_END in text and self.stop_reason is None:
            line = text[text.index(LINUX_PANIC_END):].splitlines()[0]
            message = line[len(LINUX_PANIC_END):].rstrip().removesuffix("]---").strip()
            self.shutdown(Shutdown(reason="crash", source="linux-panic", detail=f"Kernel panic - not syncing: {message}"))

    def note(self, text: str) -> None:
        self.emit(Note(text=text))

    def shutdown(self, event: Shutdown) -> None:
        """The guest asked to stop (poweroff, reboot, crash, exit): record it and stop the run."""
        self.flush_consoles()
        self.emit(event)
        kind = {"watchdog": "crash"}.get(event.reason, event.reason)    # a watchdog firing is a crash
        kind = kind if kind in ("poweroff", "exit", "reboot", "crash") else "exit"
        detail = f"{event.reason} via {event.source}" + (f": {event.detail}" if event.detail else "")
        self.stop(StopReason(kind, detail=detail, code=event.code))

    def stop(self, reason: StopReason) -> None:
        """End the run with ``reason`` (the first reason given wins); safe inside any hook."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.uc.emu_stop()

    def freeze_state(self, rip: int) -> None:
        """Record the registers now, with ``rip``, as the guest state of the stop (used when the
        engine runs on briefly after a stop requested in the middle of a block)."""
        if self.stop_registers is None:
            self.stop_registers = {**self.registers(), "rip": rip}

    def guest_ns(self) -> int:
        """Guest time in nanoseconds (``clock.py``): deterministic, never the host clock."""
        return self.clock.now()

    def kick(self) -> None:
        """An interrupt may have become deliverable: stop at the next block the guest enters with
        interrupts enabled, so the run loop can deliver it (safe inside any hook)."""
        self.native.control.want_if = 1
