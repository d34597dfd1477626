"""Tiny guests for engine tests: GNU as source assembled to flat bytes, run by a hand-registered
test environment (``RawEnv``), which is also a plugin written exactly as a third party would."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from hvsim import Acceptance, Environment, hookimpl
from hvsim.core.cpu import (
    CODE32, CODE64, DATA32, PageTableBuilder, flat_descriptor, gdt_bytes, idt_gate32, idt_gate64,
    long_mode_entry, protected_mode32_entry,
)

CODE = 0x100000
GDT = 0x1000
IDT = 0x2000
TABLES = (0x10000, 0x40000)
STACK_TOP = 0x90000
DATA = 0x80000          # guests store results here; tests read them back


def assemble(source: str, bits: int = 64, base: int = CODE) -> tuple[bytes, dict[str, int]]:
    """Assemble ``source`` (AT&T syntax) linked at ``base``; returns the ELF file and the symbols."""
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, elf = (Path(tmp) / n for n in ("g.S", "g.o", "g.elf"))
        src.write_text(f".code{bits}\n.globl _start\n_start:\n{source}\n")
        flag = "--64" if bits == 64 else "--32"
        subprocess.run(["as", flag, "-o", obj, src], check=True, capture_output=True)
        emul = "elf_x86_64" if bits == 64 else "elf_i386"
        subprocess.run(["ld", "-m", emul, "-N", f"-Ttext={base:#x}", "-o", elf, obj], check=True, capture_output=True)
        nm = subprocess.run(["nm", elf], check=True, capture_output=True, text=True).stdout
        symbols = {parts[2]: int(parts[0], 16) for parts in (l.split() for l in nm.splitlines()) if len(parts) == 3}
        return elf.read_bytes(), symbols


class RawEnv:
    """Environment ``raw``: an ELF's segments loaded at their physical addresses, entered at
    0x100000 in 64-bit mode
    (identity map of the first 1 GiB) or, with ``bits=32``, flat 32-bit protected mode with paging
    off.  ``gates`` maps a vector to a handler symbol to build an IDT; none means no IDT at all."""

    def __init__(self, bits: int = 64, gates: dict[int, int] | None = None, map_bytes: int = 1 << 30):
        self.bits = bits
        self.gates = gates
        self.map_bytes = map_bytes

    @hookimpl
    def hvsim_environments(self):
        return [Environment("raw", "test: flat code at 0x100000")]

    @hookimpl
    def hvsim_accepts(self, env, image):
        return Acceptance.yes("code at 0x100000") if env == "raw" and image.elf else None

    @hookimpl
    def hvsim_setup(self, machine, image, config, options):
        for segment in image.elf.segments:
            machine.memory.write(segment.paddr, segment.data)
        machine.attach_pc_devices(acpi_tables=False)
        idt_limit = 0
        if self.gates:
            gate = idt_gate64 if self.bits == 64 else idt_gate32
            size = 16 if self.bits == 64 else 8
            for vector, handler in self.gates.items():
                machine.memory.write(IDT + vector * size, gate(handler, 0x08))
            idt_limit = 256 * size - 1
        if self.bits == 64:
            machine.memory.write(GDT, gdt_bytes([0, flat_descriptor(CODE64), flat_descriptor(DATA32)]))
            tables = PageTableBuilder(machine.memory, *TABLES)
            tables.identity(0, self.map_bytes)
            machine.start(long_mode_entry(CODE, cr3=tables.pml4, gdt=(GDT, 23), cs=0x08, ds=0x10,
                                          idt=(IDT if self.gates else 0, idt_limit), rsp=STACK_TOP))
        else:
            machine.memory.write(GDT, gdt_bytes([0, flat_descriptor(CODE32), flat_descriptor(DATA32)]))
            machine.start(protected_mode32_entry(CODE, gdt=(GDT, 23), cs=0x08, ds=0x10,
                                                 idt=(IDT if self.gates else 0, idt_limit), rsp=STACK_TOP))
        return "raw"


def run_raw(source: str, *, bits: int = 64, gates: dict[int, str] | None = None, plugins=(),
            map_bytes: int = 1 << 30, **config):
    """Assemble and run ``source`` (with extra ``plugins`` in the run); returns (result, machine, symbols).
    ``map_bytes``: how much the 64-bit identity map covers (4 GiB reaches the local APIC)."""
    from hvsim import MachineConfig, get_plugin_manager
    from hvsim.api import Run

    code, symbols = assemble(source, bits)
    env = RawEnv(bits, {v: symbols[name] for v, name in (gates or {}).items()}, map_bytes)
    pm = get_plugin_manager(load_entrypoints=False, plugins=[env, *plugins])
    prepared = Run("raw", code, MachineConfig(**{"memory": "64M", "timeout": 10, **config}), pm=pm)
    return prepared.execute(), prepared.machine, symbols
