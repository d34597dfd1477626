"""Bad input to the Xen hypervisor under ``xen_pvh``: what the guest sees is a Xen error code, a #GP
or a refused image, never a host traceback.

Guests are a few lines of 32-bit assembly (tests/guestcode.py) wrapped in an ELF with a
``XEN_ELFNOTE_PHYS32_ENTRY`` note (tests/imagegen.py), entered as Xen enters a PVH guest: flat
32-bit protected mode, paging off, EBX = the start info, no stack, no GDT, no IDT.  In 32-bit mode a
hypercall is EAX = number, arguments in EBX, ECX, EDX, ESI, EDI, then ``vmcall``/``vmmcall``; the
result (a negated errno on failure) comes back in EAX.  The guests store results at 0x80000+ and the
tests read them back from guest memory; every test also checks the ``Call`` event the run recorded.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from guestcode import DATA, assemble
from imagegen import Load, build_elf, xen_note

from hvsim import MachineConfig
from hvsim.abi import xen as x
from hvsim.api import Run, inspect
from hvsim.core.errors import LoadError
from hvsim.core.events import Call, ConsoleOutput, Fault, Note, Shutdown
from hvsim.image import load_image

MiB = 1 << 20
XEN_ELFNOTE_PHYS32_ENTRY = 18
WILD = 0xDEAD_0000                 # in the PCI hole: no RAM or device of a 64 MiB guest
PAST_RAM = 64 * MiB + 0x1000       # just above the end of a 64 MiB guest's RAM
STRUCT = DATA + 0x100              # where guests build hypercall argument structures
PAGE = 0x30_0000                   # a free page of RAM for the hypercall page
EFAULT, ENOSYS, EINVAL, EPERM = -x.EFAULT, -x.ENOSYS, -x.EINVAL, -x.EPERM


# -- building and running PVH guests ---------------------------------------------------------------
def pvh_image(source: str, *, elf_bits: int = 32, entry: int | None = None) -> tuple[bytes, dict[str, int]]:
    """``source`` assembled as 32-bit code at 0x100000, rebuilt as an ELF whose PHYS32_ENTRY note
    names ``_start`` (or ``entry``)."""
    code, symbols = assemble(source, bits=32)
    loads = [Load(s.paddr, s.data, memsz=s.memsz) for s in load_image(code).elf.segments]
    entry = symbols["_start"] if entry is None else entry
    notes = [xen_note(XEN_ELFNOTE_PHYS32_ENTRY, entry, size=4)]
    return build_elf(bits=elf_bits, entry=symbols["_start"], loads=loads, notes=notes), symbols


def run_pvh(source: str, **config):
    """Run ``source`` under xen_pvh (64 MiB); returns (result, machine, symbols)."""
    image, symbols = pvh_image(source)
    prepared = Run("xen_pvh", image, MachineConfig(**{"memory": "64M", "timeout": 10, **config}))
    result = prepared.execute()
    assert result.stop.kind != "host-error", (result.stop, result.extra.get("host_traceback"))
    return result, prepared.machine, symbols


def hypercall(nr: int, *args, insn: str = "vmcall", store: int | None = None) -> str:
    """Assembly for hypercall ``nr`` with ``args`` (ints or symbol names) in EBX, ECX, EDX, ESI,
    EDI; EAX stored at ``store``."""
    lines = [f"mov ${nr}, %eax"]
    for reg, value in zip(("ebx", "ecx", "edx", "esi", "edi"), args):
        lines.append(f"mov ${value:#x}, %{reg}" if isinstance(value, int) else f"mov ${value}, %{reg}")
    lines.append(insn)
    if store is not None:
        lines.append(f"mov %eax, {store:#x}")
    return "\n    ".join(lines) + "\n    "


def xen_calls(machine) -> list[Call]:
    return [e for e in machine.events if isinstance(e, Call) and e.interface == "xen-hypercall"]


def s32(machine, address: int) -> int:
    value = machine.memory.read_u32(address)
    return value - (1 << 32) if value & 0x8000_0000 else value


STACK = "mov $0x90000, %esp\n    "
DONE = "movl $0x600d, 0x80ff0\n    hlt\n"            # the guest got past its hypercalls


def assert_got_past(result, machine):
    assert result.stop.kind == "halt", result.stop
    assert machine.memory.read_u32(DATA + 0xFF0) == 0x600D


# -- wild pointers: -EFAULT ------------------------------------------------------------------------
WILD_POINTER_CASES = {
    # console_io(CONSOLEIO_write, count, buf): the buffer is nowhere
    "console_io-write": ("", hypercall(18, x.CONSOLEIO_WRITE, 5, WILD), "console_io", WILD),
    # xen_version(XENVER_get_features, &info): the struct is past the end of RAM
    "xen_version-get_features": ("", hypercall(17, x.XENVER_GET_FEATURES, PAST_RAM), "xen_version", PAST_RAM),
    # memory_op(XENMEM_memory_map, &map): the struct is in RAM, its buffer is not.  The buffer
    # handle is written both where a 32-bit caller's struct has it (offset 4) and where the
    # x86-64 layout has it (offset 8), so the case does not depend on which layout is read.
    "memory_op-memory_map-buffer": (
        f"movl $8, {STRUCT:#x}\n    movl ${WILD:#x}, {STRUCT + 4:#x}\n    "
        f"movl ${WILD:#x}, {STRUCT + 8:#x}\n    movl $0, {STRUCT + 12:#x}\n    ",
        hypercall(12, x.XENMEM_memory_map, STRUCT), "memory_op", WILD),
    # sched_op(SCHEDOP_shutdown, &reason): the reason is nowhere; the guest must not shut down
    "sched_op-shutdown": ("", hypercall(29, x.SCHEDOP_SHUTDOWN, WILD), "sched_op", WILD),
}


@pytest.mark.parametrize("case", list(WILD_POINTER_CASES))
def test_a_wild_pointer_gets_efault_and_the_guest_runs_on(case):
    setup, call, hypercall_name, address = WILD_POINTER_CASES[case]

    result, m, _ = run_pvh(STACK + setup + call + f"mov %eax, {DATA:#x}\n    " + DONE)

    assert_got_past(result, m)
    assert s32(m, DATA) == EFAULT
    [event] = xen_calls(m)
    assert event.name.split(".")[0] == hypercall_name
    assert event.result == EFAULT
    assert f"{address:#x}" in event.args["fault"]
    assert not [e for e in m.events if isinstance(e, Shutdown)]


def test_a_wild_memory_map_buffer_leaves_the_struct_alone():
    setup, call, _, _ = WILD_POINTER_CASES["memory_op-memory_map-buffer"]

    result, m, _ = run_pvh(STACK + setup + call + f"mov %eax, {DATA:#x}\n    " + DONE)

    assert_got_past(result, m)
    assert m.memory.read_u32(STRUCT) == 8                 # nr_entries is not rewritten on -EFAULT
    [event] = xen_calls(m)
    assert event.name == "memory_op.memory_map" and event.result == EFAULT


def test_a_faulting_call_still_names_its_sub_operation():
    result, m, _ = run_pvh(STACK + hypercall(17, x.XENVER_GET_FEATURES, PAST_RAM)
                           + hypercall(29, x.SCHEDOP_SHUTDOWN, WILD) + DONE)

    assert_got_past(result, m)
    assert [c.name for c in xen_calls(m)] == ["xen_version.get_features", "sched_op.shutdown"]


# -- unknown hypercalls and sub-operations: -ENOSYS --------------------------------------------------
def test_unknown_hypercall_and_sub_operation_get_enosys_and_are_recorded():
    result, m, _ = run_pvh(STACK
                           + hypercall(99, 1, 2, 3, 4, 5, store=DATA)
                           + hypercall(18, 7, 5, DATA + 0x200, insn="vmmcall", store=DATA + 4)
                           + hypercall(17, 0x77, 0, store=DATA + 8)
                           + DONE)

    assert_got_past(result, m)
    assert [s32(m, DATA + i) for i in (0, 4, 8)] == [ENOSYS] * 3
    unknown, console_cmd, version_cmd = xen_calls(m)
    assert unknown.name == "hypercall_99" and unknown.result == ENOSYS
    assert unknown.args["args"] == ["0x1", "0x2", "0x3", "0x4", "0x5"]
    assert (console_cmd.name, console_cmd.result) == ("console_io.cmd_7", ENOSYS)
    assert (version_cmd.name, version_cmd.result) == ("xen_version.cmd_119", ENOSYS)


# -- the hypercall-page MSR -------------------------------------------------------------------------
TABLES = """
    mov $0x90000, %esp
    lgdt gdt_desc
    ljmp $0x08, $reload_cs
reload_cs:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $gp_handler, %eax             /* IDT vector 13: a 32-bit interrupt gate to gp_handler */
    mov %ax, idt + 13 * 8
    movw $0x08, idt + 13 * 8 + 2
    movw $0x8e00, idt + 13 * 8 + 4
    shr $16, %eax
    mov %ax, idt + 13 * 8 + 6
    lidt idt_desc
    jmp main
gp_handler:                           /* record the error code, count, skip the 2-byte wrmsr */
    popl 0x80100
    incl 0x80104
    addl $2, (%esp)
    iret
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff          /* 0x08: 32-bit code, DPL 0 */
    .quad 0x00cf92000000ffff          /* 0x10: data, DPL 0 */
    .quad 0x00cffa000000ffff          /* 0x18: 32-bit code, DPL 3 */
    .quad 0x00cff2000000ffff          /* 0x20: data, DPL 3 */
gdt_desc:
    .word 5 * 8 - 1
    .long gdt
idt_desc:
    .word 32 * 8 - 1
    .long idt
    .balign 8
idt:
    .fill 32 * 8, 1, 0
main:
"""


def wrmsr_hypercall_page(value: int) -> str:
    return (f"mov $0x40000000, %ecx\n    mov ${value & 0xFFFF_FFFF:#x}, %eax\n    "
            f"mov ${value >> 32:#x}, %edx\nmsr_site:\n    wrmsr\n    ")


@pytest.mark.parametrize("value, why", [
    (128 * MiB, "not a page of guest RAM"),                # above the end of a 64 MiB guest
    (0x1_0000_0000 | PAGE, "not a page of guest RAM"),     # EDX selects a page above 4 GiB
    (0xFEE0_0000, "not a page of guest RAM"),              # the local APIC, not RAM
    (PAGE | 1, "page index must be 0"),                    # a good page, but page index 1
], ids=["outside-ram", "above-4g", "apic", "page-index-1"])
def test_a_bad_hypercall_page_msr_write_is_a_gp_in_the_guest(value, why):
    result, m, symbols = run_pvh(TABLES + wrmsr_hypercall_page(value) + DONE)

    assert_got_past(result, m)
    assert m.memory.read_u32(DATA + 0x104) == 1           # one #GP, delivered to the guest's handler
    assert m.memory.read_u32(DATA + 0x100) == 0           # error code 0
    [fault] = [e for e in m.events if isinstance(e, Fault)]
    assert (fault.name, fault.vector, fault.error_code, fault.rip) == ("#GP", 13, 0, symbols["msr_site"])
    [call] = [e for e in m.events if isinstance(e, Call) and e.interface == "msr"]
    assert call.name == "wrmsr 0x40000000" and call.args["value"] == value and call.result == "#GP"
    [note] = [e for e in m.events if isinstance(e, Note) and "hypercall-page MSR" in e.text]
    assert why in note.text and f"{value:#x}" in note.text
    assert m.memory.read(PAGE, 64) == bytes(64)           # nothing was written anywhere
    assert xen_calls(m) == []


def test_a_good_hypercall_page_msr_write_fills_the_page_with_vmmcall_stubs():
    stub = PAGE + 18 * 32                                  # __HYPERVISOR_console_io
    result, m, _ = run_pvh(TABLES + wrmsr_hypercall_page(PAGE) + f"""
    mov $0x40000000, %ecx
    rdmsr                                                  /* Xen: reads give 0 */
    mov %eax, 0x80008
    mov %edx, 0x8000c
    movl $0x0a6968, 0x80200                                /* "hi\\n" */
    mov ${x.CONSOLEIO_WRITE}, %ebx
    mov $3, %ecx
    mov $0x80200, %edx
    call {stub:#x}
    mov %eax, 0x80000
    """ + DONE)

    assert_got_past(result, m)
    assert m.memory.read_u32(DATA + 0x104) == 0           # no #GP
    assert m.memory.read(stub, 9) == bytes.fromhex("b812000000" "0f01d9" "c3")   # AMD EPYC: vmmcall
    assert m.memory.read(PAGE + 23 * 32, 2) == b"\x0f\x0b"   # iret: ud2 for HVM guests
    assert m.memory.read(PAGE + 18 * 32 + 9, 23) == b"\xcc" * 23
    assert m.memory.read_u64(DATA + 8) == 0
    assert s32(m, DATA) == 0
    [event] = xen_calls(m)
    assert (event.name, event.args["count"], event.result, event.rip) == ("console_io.write", 3, 0, stub + 5)
    assert [e.text for e in m.events if isinstance(e, ConsoleOutput) and e.channel == "xen"] == ["hi\n"]
    msr_writes = [e for e in m.events if isinstance(e, Call) and e.name.startswith("wrmsr")]
    assert [(e.args["value"], e.result) for e in msr_writes] == [(PAGE, None)]


# -- CPL 3 ------------------------------------------------------------------------------------------
RING3 = TABLES + f"""
    movl $0, 0x80200                  /* SHUTDOWN_poweroff */
    push $0x23                        /* SS: ring-3 data */
    push $0x8f000                     /* ESP */
    push $0x3002                      /* EFLAGS: IOPL 3, so ring 3 may use the exit port */
    push $0x1b                        /* CS: ring-3 code */
    push $ring3
    iret
ring3:
    mov $0x23, %ax
    mov %ax, %ds
    mov %ax, %es
    {hypercall(17, x.XENVER_VERSION, 0, store=DATA)}
    {hypercall(29, x.SCHEDOP_SHUTDOWN, 0x80200, insn="vmmcall", store=DATA + 4)}
    mov %cs, %eax
    mov %eax, 0x80008
    mov $0x501, %dx
    mov $7, %al
    out %al, %dx                      /* exit code 7 */
    hlt
"""


def test_a_hypercall_from_cpl_3_gets_eperm():
    result, m, _ = run_pvh(RING3)

    assert (result.stop.kind, result.stop.code) == ("exit", 7), result.stop
    assert m.memory.read_u32(DATA + 8) == 0x1B           # the calls came from ring 3
    assert (s32(m, DATA), s32(m, DATA + 4)) == (EPERM, EPERM)
    assert [e.source for e in m.events if isinstance(e, Shutdown)] == ["exit-port"]   # not SCHEDOP_shutdown
    assert [c.args["why"] for c in xen_calls(m)] == ["from CPL 3", "from CPL 3"]


def test_a_hypercall_from_cpl_3_is_recorded_as_a_call():
    result, m, _ = run_pvh(RING3)

    assert result.stop.kind == "exit", result.stop
    calls = xen_calls(m)
    assert [(c.name.split(".")[0], c.result) for c in calls] == [("xen_version", EPERM), ("sched_op", EPERM)]


# -- sched_op shutdown reasons ------------------------------------------------------------------------
@pytest.mark.parametrize("reason, stop", [(0, "poweroff"), (1, "reboot"), (3, "crash")])
def test_shutdown_reasons_end_the_run(reason, stop):
    result, m, _ = run_pvh(STACK + f"movl ${reason}, {STRUCT:#x}\n    "
                           + hypercall(29, x.SCHEDOP_SHUTDOWN, STRUCT, store=DATA) + DONE)

    assert result.stop.kind == stop, result.stop
    assert m.memory.read_u32(DATA + 0xFF0) == 0          # the guest did not run on
    [shutdown] = [e for e in m.events if isinstance(e, Shutdown)]
    assert (shutdown.reason, shutdown.source) == (stop, "SCHEDOP_shutdown")
    [event] = xen_calls(m)
    assert (event.name, event.args["reason"], event.result) == ("sched_op.shutdown", stop, 0)


@pytest.mark.parametrize("reason, name", [(2, "suspend"), (5, "soft_reset"), (42, "reason_42")])
def test_unsupported_shutdown_reasons_get_einval_and_the_guest_runs_on(reason, name):
    result, m, _ = run_pvh(STACK + f"movl ${reason}, {STRUCT:#x}\n    "
                           + hypercall(29, x.SCHEDOP_SHUTDOWN, STRUCT, store=DATA) + DONE)

    assert_got_past(result, m)
    assert s32(m, DATA) == EINVAL
    assert not [e for e in m.events if isinstance(e, Shutdown)]
    [event] = xen_calls(m)
    assert (event.name, event.args["reason"], event.result) == ("sched_op.shutdown", name, EINVAL)


# -- 32-bit callers: the compat structure layouts (bug) -----------------------------------------------
def test_a_32_bit_caller_gets_its_memory_map_in_the_compat_layout():
    # struct compat_memory_map {u32 nr_entries; u32 buffer} (xen/arch/x86/x86_64/compat/mm.c)
    result, m, _ = run_pvh(STACK + f"movl $8, {STRUCT:#x}\n    movl $0x80400, {STRUCT + 4:#x}\n    "
                           f"movl $0, {STRUCT + 8:#x}\n    movl $0, {STRUCT + 12:#x}\n    "
                           + hypercall(12, x.XENMEM_memory_map, STRUCT, store=DATA) + DONE)

    assert_got_past(result, m)
    assert s32(m, DATA) == 0
    first = m.layout.memory_map[0]
    assert m.memory.read_u32(STRUCT) == len(m.layout.memory_map)
    assert m.memory.read(0x80400, 20) == struct.pack(x.E820_ENTRY_FORMAT, first.start, first.size, int(first.type))


def test_a_32_bit_caller_can_place_shared_info():
    # struct compat_add_to_physmap {u16 domid; u16 size; u32 space; u32 idx; u32 gpfn}
    gpfn = 0x400
    result, m, _ = run_pvh(STACK + f"movw ${x.DOMID_SELF:#x}, {STRUCT:#x}\n    movw $0, {STRUCT + 2:#x}\n    "
                           f"movl ${x.XENMAPSPACE_shared_info}, {STRUCT + 4:#x}\n    movl $0, {STRUCT + 8:#x}\n    "
                           f"movl ${gpfn:#x}, {STRUCT + 12:#x}\n    "
                           + hypercall(12, x.XENMEM_add_to_physmap, STRUCT, store=DATA) + DONE)

    assert_got_past(result, m)
    assert s32(m, DATA) == 0
    [event] = xen_calls(m)
    assert (event.name, event.args["idx"], event.args["gpfn"], event.result) == ("memory_op.add_to_physmap", 0, gpfn, 0)


# Long mode with a 32-bit code segment: paging on, EFER.LME set, CS still the 32-bit one Xen entered
# the guest with.  Then console_io(write, 3, "hi\n") with the 32-bit ABI, RDI holding 7.
COMPAT_MODE = STACK + """
    mov $0x10000, %edi                /* PML4, PDPT, PD at 0x10000: identity map of 1 GiB */
    xor %eax, %eax
    mov $3 * 1024, %ecx
    rep stosl
    movl $0x11003, 0x10000
    movl $0x12003, 0x11000
    mov $0x12000, %edi
    mov $0x83, %eax
    mov $512, %ecx
1:  mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b
    mov %cr4, %eax
    or $0x20, %eax                    /* PAE */
    mov %eax, %cr4
    mov $0x10000, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax                   /* EFER.LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax              /* paging on: EFER.LMA, compatibility mode */
    mov %eax, %cr0
    movl $0x0a6968, 0x80200           /* "hi\\n" */
    mov $7, %edi                      /* a 64-bit reading of the arguments sees console_io cmd 7 */
    """ + hypercall(18, x.CONSOLEIO_WRITE, 3, 0x80200, store=DATA) + DONE


def test_a_compatibility_mode_caller_uses_the_32_bit_register_abi():
    result, m, _ = run_pvh(COMPAT_MODE)

    assert_got_past(result, m)            # absolute addressing worked: the code ran as 32-bit code
    assert m.reg("efer") & (1 << 10)      # with EFER.LMA set
    assert s32(m, DATA) == 0
    [event] = xen_calls(m)
    assert (event.name, event.result) == ("console_io.write", 0)


def test_the_stop_state_of_a_compatibility_mode_guest_says_compat32():
    result, m, _ = run_pvh(COMPAT_MODE)

    assert_got_past(result, m)
    assert result.state.mode == "compat32"


# -- real mode: CPL 0, code segments with a base ----------------------------------------------------
def real_mode(body: str, end: str = "ljmp $0, $0x7004") -> str:
    """Back to real mode through a 16-bit protected-mode segment, then ``body`` with CS = 0xffff (base
    0xffff0, so the code at 0x100000 stays addressable), DS = SS = 0x8000 (DATA is DS:0).  The
    stub at 0x7000 is ``vmcall; lret``, for a far call with CS = 0; the guest ends with ``hlt`` at
    0x7004, with CS = 0 (``end``), or at CS = 0xffff (``end="hlt"``)."""
    return STACK + """
    movl $0xcbc1010f, 0x7000          /* vmcall; lret */
    movb $0xf4, 0x7004                /* hlt */
    lgdt gdt16_desc
    ljmp $0x08, $(pm16 - _start)
    .balign 8
gdt16:
    .quad 0
    .quad 0x00009a100000ffff          /* 0x08: 16-bit code, base 0x100000 (= _start) */
    .quad 0x000092000000ffff          /* 0x10: 16-bit data, base 0 */
gdt16_desc:
    .word 3 * 8 - 1
    .long gdt16
    .code16
pm16:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr0, %eax
    and $0xfffffffe, %eax
    mov %eax, %cr0
    ljmp $0xffff, $(rm - _start + 0x10)
rm:
    mov $0x8000, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0xf000, %sp
    """ + body + """
    movw $0x600d, 0xff0
    """ + end + "\n"


def test_a_hypercall_from_real_mode_with_cs_0_is_answered():
    result, m, _ = run_pvh(real_mode("""
    mov $17, %eax                     /* xen_version(XENVER_version) */
    xor %ebx, %ebx
    lcall $0, $0x7000
    mov %eax, 0
    """), max_instructions=100_000)

    assert_got_past(result, m)
    assert result.state.mode == "real"
    assert m.memory.read_u32(DATA) == 4 << 16 | 17
    [event] = xen_calls(m)
    assert (event.name, event.result, event.rip) == ("xen_version.version", 4 << 16 | 17, 0x7000)


def test_a_hypercall_from_real_mode_with_a_cs_base_is_answered():
    result, m, _ = run_pvh(real_mode("""
    mov $17, %eax
    xor %ebx, %ebx
    vmcall                            /* at 0xffff:xxxx */
    mov %eax, 0
    """), max_instructions=100_000)

    assert_got_past(result, m)
    assert m.memory.read_u32(DATA) == 4 << 16 | 17
    [event] = xen_calls(m)
    assert (event.name, event.result) == ("xen_version.version", 4 << 16 | 17)


def test_the_hypercall_msr_read_from_real_mode_with_a_cs_base_is_zero():
    result, m, _ = run_pvh(real_mode("""
    mov $0x40000000, %ecx
    mov $0x1234, %eax
    rdmsr
    mov %eax, 0
    """), max_instructions=100_000)          # run_pvh asserts the stop is not host-error

    assert_got_past(result, m)
    assert m.memory.read_u32(DATA) == 0
    [call] = [e for e in m.events if isinstance(e, Call) and e.interface == "msr"]
    assert (call.name, call.result) == ("rdmsr 0x40000000", 0)


def test_hlt_in_real_mode_with_a_cs_base_is_a_halt():
    result, m, _ = run_pvh(real_mode("", end="hlt"), max_instructions=100_000)

    assert_got_past(result, m)


# -- images the environment cannot place or enter ----------------------------------------------------
def almost_all_of_16m() -> bytes:
    """A PT_LOAD at 1 MiB whose memsz reaches 16 MiB - 0x100: no room for the start info after it."""
    entry = 0x100000
    return build_elf(bits=32, entry=entry, loads=[Load(entry, b"\xf4" * 16, memsz=16 * MiB - 0x100 - entry)],
                     notes=[xen_note(XEN_ELFNOTE_PHYS32_ENTRY, entry, size=4)])


def test_start_info_that_does_not_fit_is_a_load_error():
    with pytest.raises(LoadError) as caught:
        Run("xen_pvh", almost_all_of_16m(), MachineConfig(memory="16M", timeout=5)).execute()

    message = str(caught.value)
    assert "start info" in message and "16 MiB" in message and "\n" not in message


def hvsim_cli(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvsim.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)


def test_start_info_that_does_not_fit_is_one_line_and_status_4(tmp_path):
    (tmp_path / "KERNEL").write_bytes(almost_all_of_16m())

    done = hvsim_cli(tmp_path, "run", "--env", "xen_pvh", "KERNEL", "--memory", "16M")

    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvsim: ") and "start info" in lines[0], done.stderr
    assert done.returncode == 4, done.stderr
    assert done.stdout == ""


def entry_outside_the_image() -> bytes:
    image, _ = pvh_image("hlt", elf_bits=64, entry=0x200000)     # the image spans 0x100000-0x100001
    return image


def test_a_phys32_entry_outside_the_image_is_refused_by_inspect():
    verdict = inspect(entry_outside_the_image())["environments"]["xen_pvh"]

    assert verdict["accepted"] is False
    assert "PHYS32_ENTRY 0x200000 lies outside the image" in verdict["reason"]


def test_a_phys32_entry_outside_the_image_is_refused_by_the_cli(tmp_path):
    (tmp_path / "KERNEL").write_bytes(entry_outside_the_image())

    inspected = hvsim_cli(tmp_path, "inspect", "KERNEL", "--json")
    ran = hvsim_cli(tmp_path, "run", "--env", "xen_pvh", "KERNEL")

    assert inspected.returncode == 0, inspected.stderr
    verdict = json.loads(inspected.stdout)["environments"]["xen_pvh"]
    assert verdict["accepted"] is False and "outside the image" in verdict["reason"]
    assert "Traceback" not in ran.stderr and len(ran.stderr.splitlines()) == 1, ran.stderr
    assert ran.returncode == 3 and "outside the image" in ran.stderr, ran.stderr
