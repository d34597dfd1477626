"""The firmware of one run: its memory, its tables, and the dispatch of every guest call.

Memory (types as edk2 gives them): the trap stubs in RuntimeServicesCode; the system table, the
runtime-services table, the configuration-table array, the vendor string and SMBIOS in
RuntimeServicesData; the boot-services table, protocol interfaces, handles, GDT, IDT, stack and page
tables in BootServicesData; the ACPI tables (RSDP included) in ACPIReclaimMemory and the FACS in
ACPIMemoryNVS (``place_acpi``).  All of it is allocated top-down below 4 GiB from the map, the
types OVMF keeps in bins from their bins (``memory_map``), so it is what GetMemoryMap shows.

Control transfers into the guest (StartImage, event notification functions) use one mechanism,
``call_guest``: the stub's ``ret`` pops the function's address from a frame written below the
caller's stack, the function returns into the ``callback-returned`` stub, and the firmware then
restores the caller's stack and non-volatile registers and gives it the result.  ``Exit`` unwinds to
the frame of the image that calls it, as setjmp/longjmp does in edk2's StartImage.

Interrupts: the IDT has 256 gates; 0-31 stop the run with the exception (``_fault``), the timer
vector (0x68, ``tick.py``) enters the firmware's interrupt entry (``trap.interrupt_entry``), which
saves the interrupted state and calls the tick's trap stub; the others are not present (an
interrupt there is a #NP the firmware reports).  The tick signals the due timer events and runs
the notifications above the interrupted TPL with ``call_guest`` before its EOI and ``iretq``.
Images start at TPL_APPLICATION with interrupts on; ExitBootServices masks the tick, removes its
gate and leaves interrupts off.
"""

from __future__ import annotations

import struct
from typing import Callable

import attrs

from hvsim.abi import efi
from hvsim.core import acpi
from hvsim.core.cpu import CODE32, CODE64, DATA32, PageTableBuilder, flat_descriptor, gdt_bytes, idt_gate64
from hvsim.core.disasm import disassemble_one
from hvsim.core.errors import GuestMemoryError, LoadError
from hvsim.core.events import Call, Shutdown
from hvsim.core.exceptions import HAS_ERROR_CODE, IDT_ERROR_FLAG, vector_name
from hvsim.core.layout import FOUR_GIB
from hvsim.core.result import StopReason

from . import block_io, console, file_system, flash, protocols, tables
from .calls import SERVICES, CallContext, Cancelled, EfiError
from .console import ConsoleIn, Framebuffer, TextOutput
from .events import EventTable
from .images import Image
from .memory_map import MemoryMap, Pool
from .protocols import ProtocolDatabase
from .runtime_services import rewrite_runtime_table, to_virtual
from .tick import TIMER_VECTOR, FirmwareTimer
from .trap import (
    ARG_REGISTERS, STACK_ARGS_OFFSET, STUB_SIZE, TRAPPED_ARG_REGISTERS, TrapDevice, idle_retry, interrupt_entry, stub,
)
from .variables import VariableStore

PAGE = 0x1000
GDT_CODE64, GDT_DATA64 = 0x38, 0x30
STACK_SIZE = 128 * 1024
# Data regions mapped NX (``protect_data``), and the spare page-table pages for splitting the
# 2 MiB pages they share with other memory (two per region at most; firmware data clusters).
NX_TYPES = (efi.LOADER_DATA, efi.BOOT_SERVICES_DATA, efi.RUNTIME_SERVICES_DATA, efi.ACPI_RECLAIM_MEMORY,
            efi.ACPI_MEMORY_NVS)
NX_SPLIT_TABLES = 64
BOOT_TABLES = ("BS", "ConOut", "ConIn", "GOP", "LoadFile2", "SFS", "File", "BlockIo")     # gone after ExitBootServices
STUB_TABLES = (
    ("BS", efi.BOOT_SERVICES), ("RT", efi.RUNTIME_SERVICES), ("ConOut", efi.TEXT_OUTPUT_SERVICES),
    ("ConIn", efi.TEXT_INPUT_SERVICES), ("GOP", efi.GOP_SERVICES), ("LoadFile2", ("LoadFile",)),
    ("SFS", file_system.SFS_SERVICES), ("File", file_system.FILE_SERVICES),
    ("BlockIo", block_io.BLOCK_IO_SERVICES),
)
ENTRY_RETURNED, CALLBACK_RETURNED, TIMER_TICK, FAULT_BASE = 0x1000, 0x1001, 0x1002, 0x1100
NONVOLATILE = ("rbx", "rbp", "rdi", "rsi", "r12", "r13", "r14", "r15")
IDT_VECTORS = 256
RFLAGS_IF = 1 << 9
EXCEPTION_VECTORS = 32
BLOCKING = (("BS", "WaitForEvent"),)       # services that may block (``CallContext.block``)


@attrs.define
class Frame:
    """A guest call the firmware made (StartImage, notification functions), to return from."""

    saved_rsp: int
    saved_regs: dict[str, int]
    queue: list[tuple[int, tuple[int, ...]]]
    finish: Callable[[int], int]
    image: int | None = None
    notify_above: int | None = None    # a notification frame: runs the notifications queued above this TPL
    saved_if: bool = False             # RFLAGS.IF to give back when a notification frame returns


class Firmware:
    def __init__(self, machine, *, keys=(), variables: VariableStore | None = None, framebuffer=None,
                 esp_volume=None, legacy_bios_area: bool = False):
        self.m = machine
        self.legacy_bios_area = legacy_bios_area   # also copy the RSDP to 0xE0000 (``place_acpi``)
        self.esp_volume = esp_volume          # an esp.EspVolume (``--esp DIR``), served once built
        self.esp: file_system.Esp | None = None
        self.map = MemoryMap.from_layout(machine.layout)
        self.map.set_aside_bins()
        self.pool = Pool(self.map)
        self.db = ProtocolDatabase()
        self.events = EventTable(self)
        self.variables = variables if variables is not None else VariableStore()
        self.framebuffer_request = framebuffer
        self.boot_services_active = True
        self.frames: list[Frame] = []
        self._pending: Frame | None = None
        self.images: dict[int, Image] = {}
        self.main_image: int | None = None
        self.monotonic = 0
        self.virtual_mode = False
        self.virtual_map: list[tuple[int, int, int]] | None = None
        self.clock_offset = 0.0
        self.exit_map = None
        self._arenas: dict[int, list[int]] = {}
        self.services: dict[int, tuple[str, str]] = {}
        self.stubs: dict[tuple[str, str], int] = {}
        self.special_stubs: dict[int, int] = {}
        self.keys = list(keys)
        self.con_in: ConsoleIn | None = None
        self.text_outputs: dict[int, TextOutput] = {}
        self.gop: Framebuffer | None = None
        self.load_file2: tuple[int, bytes] | None = None
        self.timer = FirmwareTimer(machine)
        self.ticks = 0
        self.idle_stubs: dict[tuple[str, str], int] = {}

    # -- firmware-internal memory --------------------------------------------------------------
    def alloc(self, memory_type: int, size: int, align: int = 16) -> int:
        """Firmware-owned memory of ``memory_type`` (never freed), bump-allocated from pages."""
        arena = self._arenas.get(memory_type)
        if arena is not None:
            start = -(-arena[0] // align) * align
            if start + size <= arena[1]:
                arena[0] = start + size
                return start
        pages = max(-(-size // PAGE), 4 if memory_type == efi.BOOT_SERVICES_DATA else 1)
        try:
            base = self.map.allocate(efi.ALLOCATE_MAX_ADDRESS, memory_type, pages, FOUR_GIB - 1,
                                     by_allocate_pages=False)
        except EfiError as exc:
            raise LoadError(f"efi: no room for firmware memory ({exc.why})") from None
        self.m.memory.fill(base, pages * PAGE)
        self._arenas[memory_type] = [base + size, base + pages * PAGE]
        return base

    def place_acpi(self, platform) -> tuple[int, int]:
        """Where the machine's ACPI tables go (``Machine.attach_pc_devices(acpi_placement=)``): as
        edk2's AcpiTableDxe puts them, the RSDP and the tables in EfiACPIReclaimMemory (the OS may
        reuse it once it has read them), the FACS, which the OS and firmware share for the life of
        the system, in EfiACPIMemoryNVS; both allocated top-down below 4 GiB like the firmware's
        other memory.  Nothing goes in the legacy BIOS area: the RSDP is reached through the
        configuration table (``build``) unless ``legacy_bios_area`` asks for a copy at 0xE0000."""
        tables_size, facs_size = acpi.acpi_sizes(platform)
        return (self.alloc(efi.ACPI_RECLAIM_MEMORY, tables_size, PAGE),
                self.alloc(efi.ACPI_MEMORY_NVS, facs_size, acpi.FACS_ALIGN))

    def put(self, memory_type: int, data: bytes, align: int = 16) -> int:
        address = self.alloc(memory_type, max(len(data), 1), align)
        self.m.memory.write(address, data)
        return address

    # -- building ---------------------------------------------------------------------------------
    def build(self) -> None:
        m = self.m
        code = self.alloc(efi.RUNTIME_SERVICES_CODE, PAGE, PAGE)
        blob = bytearray()
        for table, names in STUB_TABLES:
            for name in names:
                index = len(self.services)
                self.services[index] = (table, name)
                self.stubs[(table, name)] = code + len(blob)
                blob += stub(index)
        for index in (ENTRY_RETURNED, CALLBACK_RETURNED):
            self.special_stubs[index] = code + len(blob)
            blob += stub(index, keep_rax=True)
        self.special_stubs[TIMER_TICK] = code + len(blob)
        blob += stub(TIMER_TICK)
        for vector in range(EXCEPTION_VECTORS):
            self.special_stubs[FAULT_BASE + vector] = code + len(blob)
            blob += stub(FAULT_BASE + vector, returns=False, keep_rax=True)
        self.timer_entry = code + len(blob)
        blob += interrupt_entry(self.timer_entry, self.special_stubs[TIMER_TICK])
        for key in BLOCKING:
            self.idle_stubs[key] = code + len(blob)
            blob += idle_retry(code + len(blob), self.stubs[key])
        assert len(blob) <= PAGE and len(blob) % STUB_SIZE == 0
        m.write_code(code, bytes(blob))
        flash.install(m)
        m.ports.attach(TrapDevice(self.dispatch))

        self.vendor = self.put(efi.RUNTIME_SERVICES_DATA, "hvsim".encode("utf-16-le") + b"\0\0", 8)
        self.system_table = self.alloc(efi.RUNTIME_SERVICES_DATA, efi.SYSTEM_TABLE_SIZE, 8)
        self.runtime_table = self.put(efi.RUNTIME_SERVICES_DATA, tables.service_table(
            efi.RUNTIME_SERVICES_SIGNATURE, efi.RUNTIME_SERVICES_FIRST_SLOT,
            [self.stubs[("RT", n)] for n in efi.RUNTIME_SERVICES]), 8)
        self.boot_table = self.put(efi.BOOT_SERVICES_DATA, tables.service_table(
            efi.BOOT_SERVICES_SIGNATURE, efi.BOOT_SERVICES_FIRST_SLOT,
            [self.stubs[("BS", n)] for n in efi.BOOT_SERVICES]), 8)
        self.config_array = self.alloc(efi.RUNTIME_SERVICES_DATA,
                                       tables.CONFIG_TABLE_CAPACITY * efi.CONFIGURATION_TABLE_ENTRY_SIZE, 8)
        self.config_tables: list[tuple[bytes, int]] = []
        if m.acpi_tables is not None:
            self.config_tables.append((efi.ACPI_20_TABLE_GUID, m.acpi_tables.rsdp_address))
            self.config_tables.append((efi.ACPI_10_TABLE_GUID, m.acpi_tables.rsdp_address))
            if self.legacy_bios_area:      # a CSM-style copy where a BIOS OSPM scans (ACPI 6.5 §5.2.5.1)
                rsdp = m.memory.read(m.acpi_tables.rsdp_address, acpi.RSDP_LENGTH)
                m.memory.write(acpi.BIOS_AREA_START, rsdp)
        entry_at = self.alloc(efi.RUNTIME_SERVICES_DATA, 0x18, 16)
        entry, structures = tables.smbios3(0)
        structures_at = self.put(efi.RUNTIME_SERVICES_DATA, structures)
        entry, _ = tables.smbios3(structures_at)
        m.memory.write(entry_at, entry)
        self.config_tables.append((efi.SMBIOS3_TABLE_GUID, entry_at))

        self.con_out = console.install_text_output(self, "efi-conout")
        self.std_err = console.install_text_output(self, "efi-stderr")
        self.con_in = console.install_text_input(self)
        if self.framebuffer_request is not None:
            self.gop = console.install_gop(self, *self.framebuffer_request)
        protocols.install_boot_device(self)
        if self.esp_volume is not None:
            file_system.install(self, self.esp_volume)
        self.write_system_table()
        self._build_cpu_tables()
        self.timer.start()

    def guest_pointer(self, address: int) -> int:
        """A firmware pointer as the guest must see it: virtual after SetVirtualAddressMap."""
        return (to_virtual(self, address) or address) if self.virtual_mode else address

    def runtime_pointers_to_virtual(self) -> None:
        rewrite_runtime_table(self, self.guest_pointer)
        self.write_system_table()

    def write_system_table(self) -> None:
        m = self.m
        v = self.guest_pointer
        for i, (guid, table) in enumerate(self.config_tables):
            m.memory.write(self.config_array + i * efi.CONFIGURATION_TABLE_ENTRY_SIZE, tables.config_entry(guid, v(table)))
        live = self.boot_services_active
        body = tables.table_header(efi.SYSTEM_TABLE_SIGNATURE, efi.SPECIFICATION_REVISION, efi.SYSTEM_TABLE_SIZE)
        body += struct.pack("<QI4x", v(self.vendor), 0x00010000)
        body += struct.pack("<6Q", *(v if live else 0 for v in (
            self.con_in.handle, self.con_in.address, self.con_out.handle, self.con_out.address,
            self.std_err.handle, self.std_err.address)))
        body += struct.pack("<QQQQ", v(self.runtime_table), self.boot_table if live else 0,
                            len(self.config_tables), v(self.config_array))
        m.memory.write(self.system_table, tables.with_crc(body))

    def _build_cpu_tables(self) -> None:
        m = self.m
        entries = [0, flat_descriptor(DATA32), flat_descriptor(CODE32), flat_descriptor(DATA32),
                   flat_descriptor(CODE32), 0, flat_descriptor(DATA32), flat_descriptor(CODE64)]
        self.gdt = self.put(efi.BOOT_SERVICES_DATA, gdt_bytes(entries), 16)
        gates = [idt_gate64(self.special_stubs[FAULT_BASE + v], GDT_CODE64) for v in range(EXCEPTION_VECTORS)]
        gates += [bytes(16)] * (IDT_VECTORS - EXCEPTION_VECTORS)
        gates[TIMER_VECTOR] = idt_gate64(self.timer_entry, GDT_CODE64)
        self.idt = self.put(efi.BOOT_SERVICES_DATA, b"".join(gates), 16)
        top = max(FOUR_GIB, m.layout.top_of_ram())
        pages = 2 + -(-top // (1 << 39)) + -(-top // (1 << 30)) + NX_SPLIT_TABLES
        pool = self.alloc(efi.BOOT_SERVICES_DATA, pages * PAGE, PAGE)
        self.page_tables = PageTableBuilder(m.memory, pool, pool + pages * PAGE)
        self.page_tables.identity(0, top)
        self.stack_top = self.alloc(efi.BOOT_SERVICES_DATA, STACK_SIZE, PAGE) + STACK_SIZE

    def protect_data(self) -> None:
        """Mark the firmware's data NX in its identity map (EFER.NXE is on at entry): the regions
        of the memory map whose type is data when the image is entered, as edk2's default
        DXE NX policy does.  Memory allocated later (the image's own LoaderData included) keeps
        the executable mapping it had as free memory: the tables are not rebuilt per allocation."""
        try:
            for region in list(self.map.regions):
                if region.type in NX_TYPES:
                    self.page_tables.no_execute(region.start, region.end - region.start)
        except MemoryError as exc:
            raise LoadError(f"efi: too many firmware data regions to map NX ({exc})") from None

    def install_config_table(self, guid: bytes, table: int) -> None:
        """InstallConfigurationTable semantics: add, replace, or (table 0) remove; NOT_FOUND when
        removing a GUID that is not there."""
        existing = [i for i, (g, _) in enumerate(self.config_tables) if g == guid]
        if table == 0:
            if not existing:
                raise EfiError(efi.NOT_FOUND, "no table with that GUID to remove")
            del self.config_tables[existing[0]]
            self.m.memory.fill(self.config_array + len(self.config_tables) * efi.CONFIGURATION_TABLE_ENTRY_SIZE,
                               efi.CONFIGURATION_TABLE_ENTRY_SIZE)
        elif existing:
            self.config_tables[existing[0]] = (guid, table)
        elif len(self.config_tables) >= tables.CONFIG_TABLE_CAPACITY:
            raise EfiError(efi.OUT_OF_RESOURCES, f"the configuration table holds {tables.CONFIG_TABLE_CAPACITY} entries")
        else:
            self.config_tables.append((guid, table))
        self.write_system_table()

    # -- dispatch -----------------------------------------------------------------------------------
    def dispatch(self, index: int) -> None:
        m = self.m
        if index >= FAULT_BASE:
            return self._fault(index - FAULT_BASE)
        if index == ENTRY_RETURNED:
            return self.image_finished(m.reg("r11"), "returned from its entry point")
        if index == CALLBACK_RETURNED:
            self._callback_returned()
        elif index == TIMER_TICK:
            self._tick()
        elif index in self.services:
            self._service(index)
        else:
            m.stop(StopReason("crash", detail=f"efi: a trap into the firmware with unknown index {index:#x}"))
        if self._pending is not None and m.stop_reason is None:
            frame, self._pending = self._pending, None
            self.frames.append(frame)
            self._enter(frame)
        self._pending = None

    def _service(self, index: int) -> None:
        m = self.m
        table, name = self.services[index]
        fn, params = SERVICES.get((table, name), (None, ()))
        ctx = CallContext(self, table, name)
        rsp = m.reg("rsp")
        values = [m.reg(r) for r in TRAPPED_ARG_REGISTERS[:len(params)]]
        try:
            ctx.return_address = ctx.read_u64(rsp)
            for k in range(len(params) - len(ARG_REGISTERS)):
                values.append(ctx.read_u64(rsp + STACK_ARGS_OFFSET + 8 * k))
        except GuestMemoryError as exc:
            m.stop(StopReason("bad-access", detail=f"efi {table}.{name}: the caller's stack is unreadable: {exc}"))
            return
        ctx.args = dict(zip(params, values))
        status = None
        try:
            if table in BOOT_TABLES and not self.boot_services_active:
                raise EfiError(efi.UNSUPPORTED, "boot services ended with ExitBootServices")
            if fn is None:
                raise EfiError(efi.UNSUPPORTED, "not provided by this firmware")
            status = fn(ctx)
        except EfiError as exc:
            status = exc.status
            if exc.why:
                ctx.record["error"] = exc.why
        except GuestMemoryError as exc:
            status = efi.INVALID_PARAMETER
            ctx.record["error"] = str(exc)
        except Cancelled:
            m.emit(Call(interface="efi", name=f"{table}.{name}", args={**ctx.args, **ctx.record},
                        result="cancelled: the run is ending", rip=ctx.return_address))
            return                 # the run stops at the next block boundary (RunLoop)
        if ctx.blocked and status is None:
            return self._block(table, name, rsp)
        if status is not None:
            m.set_reg("rax", status)
        shown = status if status is not None else ctx.record.pop("result", None)
        m.emit(Call(interface="efi", name=f"{table}.{name}", args={**ctx.args, **ctx.record},
                    result=efi.status_name(shown) if isinstance(shown, int) else shown, rip=ctx.return_address))
        if ctx.after_call is not None:
            ctx.after_call()
        if self._pending is None and m.stop_reason is None and self.events.notification_above(self.events.tpl):
            result = m.reg("rax")
            self.call_notifications(self.events.tpl, lambda _rax, result=result: result)

    def _block(self, table: str, name: str, rsp: int) -> None:
        """The stub's ``ret`` goes to the service's idle code, which waits for an interrupt and
        calls again with the same arguments (RDX back from R10, where the stub kept it)."""
        m = self.m
        try:
            m.vmem.write(rsp - 8, struct.pack("<Q", self.idle_stubs[(table, name)]))
        except GuestMemoryError as exc:
            m.stop(StopReason("bad-access", detail=f"efi {table}.{name}: the caller's stack is unwritable: {exc}"))
            return
        m.set_reg("rdx", m.reg("r10"))
        m.set_reg("rsp", rsp - 8)

    # -- interrupts and TPL ------------------------------------------------------------------------------
    def set_interrupts(self, enabled: bool) -> None:
        """RFLAGS.IF of the code the firmware returns to (the trap stub's ``ret`` keeps it)."""
        m = self.m
        rflags = m.reg("rflags")
        m.set_reg("rflags", rflags | RFLAGS_IF if enabled else rflags & ~RFLAGS_IF)
        if enabled:
            m.kick()                # an interrupt held while IF was clear is taken at the next block

    def _tick(self) -> None:
        """The timer interrupt (edk2's TimerInterruptHandler + CoreTimerTick): at TPL_HIGH_LEVEL
        signal the due timers, drop back to the interrupted TPL running the notifications above it
        (with interrupts on), then interrupts off and EOI; the entry code ``iretq``s."""
        m = self.m
        if not self.boot_services_active:
            m.stop(StopReason("crash", detail="efi: the firmware's timer handler was entered after ExitBootServices"))
            return
        self.ticks += 1
        interrupted = self.events.tpl
        self.events.tpl = efi.TPL_HIGH_LEVEL
        self.events.tick()
        self.events.tpl = interrupted
        if m.stop_reason is None and self.events.notification_above(interrupted):
            self.call_notifications(interrupted, self._tick_done)
        else:
            self.timer.end_of_interrupt()

    def _tick_done(self, rax: int) -> int:
        self.set_interrupts(False)
        self.timer.end_of_interrupt()
        return rax

    def stop_timer(self) -> None:
        """ExitBootServices: mask the tick, take its gate out of the IDT, leave interrupts off."""
        self.timer.stop()
        self.m.memory.write(self.idt + 16 * TIMER_VECTOR, bytes(16))
        self.set_interrupts(False)

    # -- calls into the guest --------------------------------------------------------------------------
    def call_guest(self, calls: list[tuple[int, tuple[int, ...]]], finish: Callable[[int], int],
                   image: int | None = None) -> None:
        """After the current service returns its status, call each ``(function, args)`` in turn;
        the caller then gets ``finish(rax of the last call)`` instead."""
        m = self.m
        self._pending = Frame(m.reg("rsp"), {r: m.reg(r) for r in NONVOLATILE}, list(calls), finish, image)

    def call_notifications(self, tpl: int, finish: Callable[[int], int]) -> None:
        """Like ``call_guest`` for the notifications queued above ``tpl``, each at its own TPL
        (interrupts on below TPL_HIGH_LEVEL), including those queued while they run; then the TPL
        is ``tpl`` again and RFLAGS.IF as it is now."""
        m = self.m
        self._pending = Frame(m.reg("rsp"), {r: m.reg(r) for r in NONVOLATILE}, [], finish, None,
                              notify_above=tpl, saved_if=bool(m.reg("rflags") & RFLAGS_IF))

    def _enter(self, frame: Frame) -> None:
        m = self.m
        if frame.notify_above is not None:
            function, args, tpl = self.events.take_notification(frame.notify_above)
            self.events.tpl = tpl
            self.set_interrupts(tpl < efi.TPL_HIGH_LEVEL)
        else:
            function, args = frame.queue.pop(0)
        rsp = (frame.saved_rsp - 0x200) & ~0xF
        m.vmem.write(rsp, struct.pack("<QQ", function, self.special_stubs[CALLBACK_RETURNED]))
        for reg, value in zip(ARG_REGISTERS, args):
            m.set_reg(reg, value)
        m.set_reg("rsp", rsp)

    def _callback_returned(self) -> None:
        m = self.m
        if not self.frames:
            m.stop(StopReason("crash", detail="efi: a return into the firmware's callback stub with no call pending"))
            return
        frame = self.frames[-1]
        if frame.notify_above is not None:
            if self.events.notification_above(frame.notify_above):
                return self._enter(frame)
            self.events.tpl = frame.notify_above
            self.set_interrupts(frame.saved_if)
        elif frame.queue:
            return self._enter(frame)
        self.frames.pop()
        self._resume(frame, frame.finish(m.reg("r11")))

    def _resume(self, frame: Frame, rax: int) -> None:
        m = self.m
        for reg, value in frame.saved_regs.items():
            m.set_reg(reg, value)
        m.set_reg("rsp", frame.saved_rsp)
        m.set_reg("rax", rax)

    def unwind_to(self, image: int, status: int) -> bool:
        """``Exit`` from a started image: back to its StartImage caller with ``status``."""
        for depth in range(len(self.frames) - 1, -1, -1):
            if self.frames[depth].image == image:
                frame = self.frames[depth]
                del self.frames[depth:]
                self._resume(frame, frame.finish(status))
                return True
        return False

    def image_finished(self, status: int, how: str) -> None:
        """The image the run started returned or called Exit: the run ends with its status."""
        reason = "poweroff" if status == 0 else "exit"
        self.m.shutdown(Shutdown(reason=reason, source=f"EFI image {how}: {efi.status_name(status)}", code=status))

    # -- exceptions ---------------------------------------------------------------------------------------
    def _fault(self, vector: int) -> None:
        """An exception reached the firmware's IDT (the core recorded it as a delivered Fault): stop
        the run with the faulting instruction and the registers at the fault."""
        m = self.m
        rsp = m.reg("rsp")
        try:
            frame = m.vmem.read(rsp, 48)
        except GuestMemoryError:
            frame = bytes(48)
        error_code = struct.unpack_from("<Q", frame, 0)[0] if vector in HAS_ERROR_CODE else None
        base = 8 if error_code is not None else 0
        rip, saved_rsp = struct.unpack_from("<Q", frame, base)[0], struct.unpack_from("<Q", frame, base + 24)[0]
        cr2 = m.reg("cr2") if vector == 14 else None
        try:
            text = disassemble_one(m.vmem.read(rip, 15), rip)[0]
        except GuestMemoryError:
            text = "(instruction unreadable)"
        m.set_reg("rsp", saved_rsp)
        m.set_reg("rax", m.reg("r11"))
        m.freeze_state(rip)
        where = f" (cr2 {cr2:#x})" if cr2 is not None else ""
        if error_code is not None and error_code & IDT_ERROR_FLAG:
            where += f" (error code {error_code:#x}: IDT vector {error_code >> 3:#x})"
        m.stop(StopReason("crash", detail=f"{vector_name(vector)} at {rip:#x}: {text}{where}; "
                                          "the firmware's exception handler stopped the run"))
