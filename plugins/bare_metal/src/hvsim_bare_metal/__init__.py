"""hvsim environment ``bare_metal``: a PC booted through the Linux x86 64-bit boot protocol.

What the guest gets (Documentation/arch/x86/boot.rst, "64-bit BOOT PROTOCOL"):
- a bzImage's protected-mode part loaded at its preferred address (``pref_address`` from protocol
  2.10, else ``code32_start``) and entered at +0x200; or an ELF kernel (``vmlinux``) whose PT_LOADs
  are placed at their physical addresses and which is entered at ``e_entry``, as Firecracker does;
- long mode, paging on, all RAM and the 32-bit MMIO hole identity-mapped with 2 MiB pages, a GDT
  with the flat 64-bit code segment at 0x10 and data at 0x18, interrupts off, no IDT,
  RSI = the zero page (``struct boot_params``);
- the zero page: the kernel's own setup header, ``type_of_loader`` 0xFF, the command line,
  the initrd placed as high as ``initrd_addr_max`` allows, ``acpi_rsdp_addr`` (protocol 2.14+)
  and the E820 map of the ``MachineConfig``;
- the PC devices: COM1, port 0xE9, the ACPI tables with their PM1a block, the exit port, reset.
"""

from __future__ import annotations

import attrs

from hvsim import Acceptance, Environment, hookimpl
from hvsim.abi import boot_params
from hvsim.abi import linux_boot as lb
from hvsim.core.cpu import CODE64, DATA32, PageTableBuilder, flat_descriptor, gdt_bytes, long_mode_entry
from hvsim.core.errors import LoadError
from hvsim.core.layout import FOUR_GIB

ENV = "bare_metal"
GDT = 0x500
BOOT_CS, BOOT_DS = 0x10, 0x18
ZERO_PAGE = 0x7000
STACK = 0x8000
CMDLINE = 0x20000
CMDLINE_MAX = 0x10000
PAGE_TABLES = (0x30000, 0x9F000)
ACPI_AREA = (0xE0000, 0x20000)
ELF_CMDLINE_SIZE = CMDLINE_MAX - 1   # an ELF kernel has no header to say: the whole area, less the NUL
PAGE = 0x1000


@attrs.frozen
class Plan:
    """Where everything goes, decided before anything is written."""

    entry: int
    entry_text: str
    kernel_range: tuple[int, int]                 # [start, end) the kernel needs
    pieces: tuple[tuple[int, bytes, int], ...]    # (address, bytes, zero-filled size after them)
    header_bytes: bytes | None
    cmdline_limit: int
    initrd_max: int                               # highest byte address the initrd may use
    initrd_above_4g: bool


@hookimpl
def hvsim_environments():
    return [Environment(ENV, "bare-metal PC, Linux x86 64-bit boot protocol (bzImage +0x200, or ELF e_entry)")]


@hookimpl
def hvsim_inherent_differences(env):
    """None: bare metal is the baseline the other environments declare their differences against."""
    return [] if env == ENV else None


@hookimpl
def hvsim_accepts(env, image):
    if env != ENV:
        return None
    try:
        plan = _plan(image)
    except LoadError as exc:
        return Acceptance.no(str(exc))
    return Acceptance.yes(plan.entry_text)


def _plan(image) -> Plan:
    if image.bzimage is not None:
        return _plan_bzimage(image)
    if image.elf is not None:
        return _plan_elf(image)
    return _refuse(image, "a PE32+ image without a Linux setup header has no boot-protocol entry")


def _refuse(image, why: str):
    raise LoadError(f"{image.name}: {why}")


def _plan_bzimage(image) -> Plan:
    bz = image.bzimage
    hdr = bz.header
    if hdr.version < 0x020C or not hdr.has_xloadflag(lb.XLF_KERNEL_64):
        _refuse(image, f"boot protocol {hdr.version_str} has no 64-bit entry "
                       "(needs protocol 2.12 or later with XLF_KERNEL_64 in xloadflags)")
    load = hdr.pref_address if hdr.pref_address else (hdr.code32_start or lb.DEFAULT_CODE32_START)
    pm = bz.pm_data
    need = max(len(pm), hdr.init_size or 0)
    return Plan(
        entry=load + lb.KERNEL_64_ENTRY_OFFSET,
        entry_text=f"linux64: bzImage protected-mode part at {load:#x}, entered at +0x200",
        kernel_range=(load, load + need),
        pieces=((load, pm, need - len(pm)),),
        header_bytes=bz.header_bytes,
        cmdline_limit=hdr.cmdline_size if hdr.cmdline_size is not None else 255,
        initrd_max=hdr.initrd_addr_max if hdr.initrd_addr_max is not None else lb.OLD_INITRD_ADDR_MAX,
        initrd_above_4g=hdr.has_xloadflag(lb.XLF_CAN_BE_LOADED_ABOVE_4G),
    )


def _plan_elf(image) -> Plan:
    elf = image.elf
    if elf.machine != 62:   # EM_X86_64; an ELF32 container with EM_X86_64 code is fine
        _refuse(image, f"ELF machine {elf.machine_name} has no 64-bit entry (needs EM_X86_64)")
    if not elf.segments:
        _refuse(image, "ELF has no PT_LOAD segment")
    entry = None
    for seg in elf.segments:
        if seg.paddr <= elf.entry < seg.paddr + seg.memsz:
            entry = elf.entry
        elif seg.vaddr <= elf.entry < seg.vaddr + seg.memsz:
            entry = seg.paddr + (elf.entry - seg.vaddr)
        if entry is not None:
            break
    if entry is None:
        _refuse(image, f"e_entry {elf.entry:#x} lies in no PT_LOAD segment")
    start = min(s.paddr for s in elf.segments)
    end = max(s.paddr + s.memsz for s in elf.segments)
    return Plan(
        entry=entry,
        entry_text=f"elf: e_entry {elf.entry:#x} (physical {entry:#x}), boot_params in RSI",
        kernel_range=(start, end),
        pieces=tuple((s.paddr, s.data[: s.filesz], s.memsz - min(s.filesz, len(s.data))) for s in elf.segments),
        header_bytes=None,
        cmdline_limit=ELF_CMDLINE_SIZE,
        initrd_max=FOUR_GIB - 1,
        initrd_above_4g=True,
    )


@hookimpl
def hvsim_setup(machine, image, config, options):
    plan = _plan(image)
    reserved = _boot_structures()
    _place_kernel(machine, image, plan, reserved)
    cmdline = config.cmdline_bytes()
    if len(cmdline) > plan.cmdline_limit:
        raise LoadError(f"command line is {len(cmdline)} bytes; {image.name} accepts at most {plan.cmdline_limit}")
    machine.memory.write(CMDLINE, cmdline + b"\0")
    ramdisk = _place_initrd(machine, image, plan, config)
    machine.attach_pc_devices()
    rsdp = machine.acpi_tables.rsdp_address if machine.acpi_tables else None
    e820 = [r.to_tuple() for r in machine.layout.memory_map]
    machine.memory.write(ZERO_PAGE, boot_params.zero_page(
        header_bytes=plan.header_bytes, cmd_line_ptr=CMDLINE, ramdisk=ramdisk, e820=e820, rsdp=rsdp))
    _enter(machine, plan, ramdisk)
    return plan.entry_text


def _boot_structures() -> list[tuple[str, int, int]]:
    return [
        ("GDT", GDT, 0x20),
        ("zero page", ZERO_PAGE, PAGE),
        ("boot stack", STACK, PAGE),
        ("command line", CMDLINE, CMDLINE_MAX),
        ("page tables", PAGE_TABLES[0], PAGE_TABLES[1] - PAGE_TABLES[0]),
        ("ACPI tables", *ACPI_AREA),
    ]


def _overlap(a: int, a_end: int, b: int, b_end: int) -> bool:
    return a < b_end and b < a_end


def _place_kernel(machine, image, plan: Plan, reserved) -> None:
    start, end = plan.kernel_range
    if not machine.layout.is_ram(start, end - start):
        raise LoadError(f"{image.name}: the kernel needs RAM at {start:#x}-{end:#x}, which the "
                        f"{machine.config.memory >> 20} MiB memory map does not provide as RAM")
    for name, where, size in reserved:
        if _overlap(start, end, where, where + size):
            raise LoadError(f"{image.name}: the kernel at {start:#x}-{end:#x} overlaps the {name} "
                            f"at {where:#x}-{where + size:#x}")
    for address, data, zeros in plan.pieces:
        machine.memory.write(address, data)
        if zeros:
            machine.memory.fill(address + len(data), zeros)


def _place_initrd(machine, image, plan: Plan, config) -> tuple[int, int] | None:
    data = config.initrd_bytes()
    if data is None:
        return None
    size = len(data)
    kernel_end = plan.kernel_range[1]
    candidates = []
    for ram in sorted(machine.layout.ram(), key=lambda r: r.start, reverse=True):
        top = min(ram.end, plan.initrd_max + 1)
        if ram.start >= FOUR_GIB and not plan.initrd_above_4g:
            continue
        address = (top - size) & ~(PAGE - 1)
        if address >= max(ram.start, kernel_end, PAGE_TABLES[1]) and address + size <= top:
            candidates.append(address)
    if not candidates:
        raise LoadError(f"initrd {config.initrd} ({size} bytes) does not fit in RAM above the kernel "
                        f"(ends {kernel_end:#x}) and below {plan.initrd_max + 1:#x}")
    address = max(a for a in candidates if a < FOUR_GIB) if any(a < FOUR_GIB for a in candidates) else candidates[0]
    machine.memory.write(address, data)
    return address, size


def _enter(machine, plan: Plan, ramdisk: tuple[int, int] | None) -> None:
    """Long mode on an identity map of all RAM (and the first 4 GiB): executable except the pages
    hvsim filled with data (boot structures, ACPI tables, the initrd), which are NX; EFER.NXE on,
    as a 64-bit boot loader may leave it (Linux only ever sets it)."""
    machine.memory.write(GDT, gdt_bytes([0, 0, flat_descriptor(CODE64), flat_descriptor(DATA32)]))
    tables = PageTableBuilder(machine.memory, *PAGE_TABLES)
    tables.identity(0, max(FOUR_GIB, machine.layout.top_of_ram()))
    # An entry point at the start of a page must have an executable page before it: the engine
    # enters the guest by stopping at the entry (svm.py), and the empty translation block it makes
    # there is checked against the page holding ``entry - 1`` (QEMU tb_gen_code's second-page
    # check), so an NX page there would raise a #PF before the first instruction.
    keep = (plan.entry - PAGE, plan.entry) if plan.entry % PAGE == 0 else (0, 0)
    for _, where, size in _boot_structures() + ([("initrd", *ramdisk)] if ramdisk else []):
        for start, end in ((where, min(where + size, keep[0])), (max(where, keep[1]), where + size)):
            if start < end:
                tables.no_execute(start, end - start)
    for name in ("rax", "rbx", "rcx", "rdx", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        machine.set_reg(name, 0)
    machine.set_reg("rsi", ZERO_PAGE)
    machine.start(long_mode_entry(plan.entry, cr3=tables.pml4, gdt=(GDT, 0x1F), cs=BOOT_CS, ds=BOOT_DS,
                                  rsp=STACK + PAGE - 0x10, nx=True))
