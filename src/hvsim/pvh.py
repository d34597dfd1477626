"""Building blocks of a PVH direct boot, for any environment that offers one (Xen's PVH, QEMU/KVM's
``-kernel`` PVH boot, a third party's): the kernel entered at ``XEN_ELFNOTE_PHYS32_ENTRY`` in 32-bit
protected mode with EBX pointing at a ``struct hvm_start_info``.

The layout follows Xen's domain builder (xen-abi.md §2; tools/libs/guest/xg_dom_x86.c): the ELF's
PT_LOADs at ``p_paddr`` (a bzImage: its payload ELF's), the initrd after the image, page-aligned,
then the start-info block, page-aligned: the header (version 1, or version 0 without the memory map),
the command line, the module list (module 0 = the initrd) and the memory map, all below 4 GiB.
``rsdp_paddr`` names the ACPI tables the machine built (``machine.attach_pc_devices``).

The entry state (the PVH ABI, docs/misc/pvh.pandoc in Xen): 32-bit protected mode, paging off,
CR0 = PE|ET, CR4 = 0, EFER = 0, CS base 0 limit 4 GiB attributes 0xc9b, DS/ES/SS 0xc93, TR a busy
32-bit TSS (base 0, limit 0x67), selectors 0, no GDT, no IDT, RSP = 0, EBX = the start info, the
other general registers 0, IF = 0.

    from hvsim import pvh
    elf, entry = pvh.pvh_elf(image)                   # LoadError names what is missing
    start_info = pvh.load(machine, image, config, version=1, memory_map=list(machine.layout.memory_map))
    pvh.enter(machine, entry, start_info)
"""

from __future__ import annotations

import struct
from typing import Sequence

from .abi import xen as x
from .core.cpu import CR0_ET, CR0_PE, EntryState, Segment
from .core.errors import LoadError
from .core.layout import FOUR_GIB, MemoryRange

PAGE = 0x1000
CODE32 = Segment(0, 0xC9B, 0xFFFF_FFFF, 0)
DATA32 = Segment(0, 0xC93, 0xFFFF_FFFF, 0)
TSS32_BUSY = (0, 0, 0x67, 0x8B << 8)   # (selector, base, limit, engine descriptor flags)
VERSIONS = (0, 1)


def pvh_elf(image):
    """``(elf, entry)``: the ELF holding the PVH entry (the image's, or a bzImage payload's) and the
    PHYS32_ENTRY address.  Raises ``LoadError`` saying why the image has no usable PVH entry."""
    entry = image.entry("xen_pvh")
    if entry is None:
        why = image.payload_error if image.bzimage is not None else None
        raise LoadError(f"{image.name}: no XEN_ELFNOTE_PHYS32_ENTRY note" + (f" ({why})" if why else ""))
    elf = image.payload_elf() if entry.in_payload else image.elf
    if not elf.segments:
        raise LoadError(f"{image.name}: the PVH ELF has no PT_LOAD segment")
    start, end = elf.phys_range
    if not start <= entry.address < end:
        raise LoadError(f"{image.name}: PHYS32_ENTRY {entry.address:#x} lies outside the image "
                        f"[{start:#x}, {end:#x})")
    return elf, entry.address


def describe_entry(image) -> str:
    """The acceptance text for a PVH boot of ``image`` (raises ``LoadError`` like ``pvh_elf``)."""
    _, entry = pvh_elf(image)
    where = "payload ELF" if image.elf is None else "ELF"
    return f"pvh: {where} PT_LOADs at p_paddr, entered at PHYS32_ENTRY {entry:#x}"


def load(machine, image, config, *, version: int = 1, memory_map: Sequence[MemoryRange]) -> int:
    """Load the kernel, the initrd and the start-info block (``memory_map`` in it for version 1);
    return the start info's address."""
    if version not in VERSIONS:
        raise LoadError(f"start info version {version}: Xen defines 0 and 1")
    elf, _ = pvh_elf(image)
    cursor = page_up(load_elf(machine, image, elf))
    initrd = None
    if config.initrd is not None:
        data = config.initrd_bytes()
        need_ram(machine, cursor, len(data), f"initrd {config.initrd} ({len(data)} bytes)")
        machine.memory.write(cursor, data)
        initrd = (cursor, len(data))
        cursor = page_up(cursor + len(data))
    return write_start_info(machine, cursor, version=version, initrd=initrd, cmdline=config.cmdline_bytes(),
                            memory_map=memory_map)


def enter(machine, entry: int, start_info: int) -> None:
    """Set the PVH entry state: ``entry`` in 32-bit protected mode, EBX = ``start_info``."""
    for name in ("rax", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        machine.set_reg(name, 0)
    machine.set_reg("rbx", start_info)
    machine.start(EntryState(rip=entry, cr0=CR0_PE | CR0_ET, cs=CODE32, ds=DATA32, gdt=(0, 0), rsp=0,
                             tr=TSS32_BUSY))


def page_up(value: int) -> int:
    return (value + PAGE - 1) & ~(PAGE - 1)


def need_ram(machine, address: int, size: int, what: str) -> None:
    if address + size > FOUR_GIB or not machine.layout.is_ram(address, max(size, 1)):
        raise LoadError(f"{what} does not fit in RAM below 4 GiB at {address:#x}-{address + size:#x} "
                        f"({machine.config.memory >> 20} MiB configured)")


def load_elf(machine, image, elf) -> int:
    """Write the PT_LOADs at their physical addresses; return the end of the highest."""
    for seg in elf.segments:
        if seg.memsz == 0:
            continue
        if not machine.layout.is_ram(seg.paddr, seg.memsz):
            raise LoadError(f"{image.name}: PT_LOAD at p_paddr {seg.paddr:#x}-{seg.paddr + seg.memsz:#x} "
                            f"is not RAM in the {machine.config.memory >> 20} MiB memory map")
        machine.memory.write(seg.paddr, seg.data)
        if seg.memsz > len(seg.data):
            machine.memory.fill(seg.paddr + len(seg.data), seg.memsz - len(seg.data))
    return max(s.paddr + s.memsz for s in elf.segments)


def write_start_info(machine, at: int, *, version: int, initrd: tuple[int, int] | None, cmdline: bytes,
                     memory_map: Sequence[MemoryRange]) -> int:
    """The start-info block at ``at`` as libxc lays it out: header, command line, module list,
    memory map.  Returns the header's address."""
    header_size = struct.calcsize(x.HVM_START_INFO_V1_FORMAT)
    cmdline_at = at + header_size
    modlist_at = (cmdline_at + len(cmdline) + 1 + 7) & ~7
    nr_modules = 1 if initrd else 0
    memmap_at = modlist_at + nr_modules * struct.calcsize(x.HVM_MODLIST_ENTRY_FORMAT)
    end = memmap_at + (len(memory_map) * struct.calcsize(x.HVM_MEMMAP_ENTRY_FORMAT) if version >= 1 else 0)
    need_ram(machine, at, end - at, "the start info block")
    machine.memory.write(cmdline_at, cmdline + b"\0")
    if initrd:
        machine.memory.write(modlist_at, struct.pack(x.HVM_MODLIST_ENTRY_FORMAT, initrd[0], initrd[1], 0, 0))
    rsdp = machine.acpi_tables.rsdp_address if machine.acpi_tables else 0
    fields = (x.HVM_START_MAGIC, version, 0, nr_modules, modlist_at if initrd else 0, cmdline_at, rsdp)
    if version >= 1:
        machine.memory.write(memmap_at, b"".join(struct.pack(x.HVM_MEMMAP_ENTRY_FORMAT, r.start, r.size,
                                                             int(r.type), 0) for r in memory_map))
        header = struct.pack(x.HVM_START_INFO_V1_FORMAT, *fields, memmap_at, len(memory_map), 0)
    else:
        header = struct.pack(x.HVM_START_INFO_FORMAT, *fields).ljust(header_size, b"\0")
    machine.memory.write(at, header)
    return at
