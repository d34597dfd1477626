"""Privilege changes as guests see them: a ring-0 kernel (assembly) with its own GDT, TSS and IDT
enters ring 3 with iretq/iret; from there ``int n``, ``syscall``, faults and IST gates come back to
ring 0 on the stacks the TSS names.  Also the STI / MOV-SS interrupt shadow."""

from __future__ import annotations

import struct

from hvsim.core.cpu import segment_descriptor, tss64_descriptor

from guestcode import DATA, run_raw

GDT64, TSS, IDT64 = 0x5000, 0x6000, 0x7000
KSTACK, ISTACK, ISTACK2, USTACK = 0x60000, 0x68000, 0x6C000, 0x70000
KCS, KDS, UCS32, UDS, UCS64, TSS_SEL = 0x08, 0x10, 0x18, 0x20, 0x28, 0x30
USER_CS, USER_SS = UCS64 | 3, UDS | 3
UNMAPPED = 0x4000_0000          # 1 GiB: outside the guest's 1 GiB identity map
STAR = (UCS32 << 48) | (KCS << 32)
FMASK = 0x4700                  # TF, IF, DF, NT (as Linux)


def _quads(values) -> str:
    return "\n".join(f"    .quad {v:#x}" for v in values)


def kernel64(user: str, handlers: str = "", *, gates: str = "", rsp0: int = KSTACK) -> str:
    """A 64-bit kernel: user-accessible page tables, GDT/TSS/IDT, EFER.SCE + STAR/LSTAR/FMASK,
    then iretq to ``user`` in ring 3.  ``gates`` are GATE macro lines; ``handlers`` kernel code."""
    gdt = [0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x00CFFB000000FFFF, 0x00CFF3000000FFFF,
           0x00AFFB000000FFFF, *struct.unpack("<QQ", tss64_descriptor(TSS))]
    return f"""
.macro GATE vec, handler, attr, ist
    lea \\handler(%rip), %rax
    mov $({IDT64} + \\vec * 16), %rdi
    mov %ax, (%rdi)
    movw ${KCS}, 2(%rdi)
    movb $\\ist, 4(%rdi)
    movb $\\attr, 5(%rdi)
    shr $16, %rax
    mov %ax, 6(%rdi)
    shr $16, %rax
    mov %eax, 8(%rdi)
    movl $0, 12(%rdi)
.endm
    /* make the identity map user-accessible: PML4[0], PDPT[0] and the 512 PD entries get U/S */
    orq $4, 0x10000
    orq $4, 0x11000
    mov $0x12000, %rdi
1:  orq $4, (%rdi)
    add $8, %rdi
    cmp $0x13000, %rdi
    jne 1b
    mov %cr3, %rax
    mov %rax, %cr3
    /* GDT, TSS (RSP0, IST1, IST2), IDT */
    lea gdt(%rip), %rsi
    mov ${GDT64}, %rdi
    mov ${len(gdt) * 8}, %rcx
    rep movsb
    lgdt gdtr(%rip)
    mov ${KDS}, %ax
    mov %ax, %ss
    mov %ax, %ds
    mov %ax, %es
    movq ${rsp0:#x}, {TSS + 4}
    movq ${ISTACK:#x}, {TSS + 0x24}
    movq ${ISTACK2:#x}, {TSS + 0x2c}
    movw $0x68, {TSS + 0x66}        /* I/O map base beyond the limit */
    mov ${TSS_SEL}, %ax
    ltr %ax
{gates}
    lidt idtr(%rip)
    /* SYSCALL: EFER.SCE, STAR, LSTAR, FMASK */
    mov $0xc0000080, %ecx
    rdmsr
    or $1, %eax
    wrmsr
    mov $0xc0000081, %ecx
    mov ${STAR & 0xFFFFFFFF:#x}, %eax
    mov ${STAR >> 32:#x}, %edx
    wrmsr
    mov $0xc0000082, %ecx
    lea syscall_entry(%rip), %rax
    xor %edx, %edx
    wrmsr
    mov $0xc0000084, %ecx
    mov ${FMASK:#x}, %eax
    wrmsr
    call kernel_init
    /* to ring 3 */
    pushq ${USER_SS}
    pushq ${USTACK:#x}
    pushq $0x202
    pushq ${USER_CS}
    lea user(%rip), %rax
    push %rax
    iretq
kernel_init:
    ret
{handlers}
{"" if "syscall_entry:" in handlers else "syscall_entry:" + chr(10) + "    sysretq"}
user:
{user}
.balign 8
gdt:
{_quads(gdt)}
gdtr:
    .word {len(gdt) * 8 - 1}
    .quad {GDT64}
idtr:
    .word 4095
    .quad {IDT64}
"""


def u64(m, address):
    return m.memory.read_u64(address)


HALT = """
halt_handler:
    hlt
"""


def ring3_guest():
    """A ring-0 kernel entering ring 3, where int, a denied int, syscall/sysretq, an IST gate and a
    user #PF come back to it: (source, check(result, machine, symbols))."""
    gates = """
    GATE 0x80, int80, 0xee, 0
    GATE 0x81, int81, 0x8e, 0
    GATE 0x82, int82, 0xee, 1
    GATE 0x83, halt_handler, 0xee, 0
    GATE 13, gp_handler, 0x8e, 0
    GATE 14, pf_handler, 0x8e, 0
"""
    handlers = HALT + f"""
int80:                                /* frame: RIP CS RFLAGS RSP SS, copied to DATA+0x00.. */
    mov %rsp, 0x80028
    mov (%rsp), %rax;   mov %rax, 0x80000
    mov 8(%rsp), %rax;  mov %rax, 0x80008
    mov 16(%rsp), %rax; mov %rax, 0x80010
    mov 24(%rsp), %rax; mov %rax, 0x80018
    mov 32(%rsp), %rax; mov %rax, 0x80020
    mov %ss, %ax;       mov %ax, 0x80030
    mov %cs, %ax;       mov %ax, 0x80038
    iretq
int81:
    movq $0xbad, 0x80040              /* never: the gate is DPL0 */
    iretq
gp_handler:
    popq 0x80048                      /* error code */
    mov (%rsp), %rax;   mov %rax, 0x80050   /* RIP of the int $0x81 */
    mov 8(%rsp), %rax;  mov %rax, 0x80058
    addq $2, (%rsp)
    iretq
int82:                                /* IST1: record RSP, once from ring 0 and once from ring 3 */
    mov 0x80060, %rax
    mov %rsp, 0x80068(,%rax,8)
    incq 0x80060
    iretq
syscall_entry:
    mov %rcx, 0x80080
    mov %r11, 0x80088
    mov %cs, %ax;  mov %ax, 0x80090
    mov %ss, %ax;  mov %ax, 0x80098
    pushfq
    popq 0x800a0
    mov $0x55, %rax
    sysretq
pf_handler:                           /* frame with error code; map 1 GiB+ for the user, retry */
    mov %rsp, 0x800b0
    popq 0x800b8
    mov (%rsp), %rax;   mov %rax, 0x800c0
    mov 8(%rsp), %rax;  mov %rax, 0x800c8
    mov 16(%rsp), %rax; mov %rax, 0x800d0
    mov 24(%rsp), %rax; mov %rax, 0x800d8
    mov 32(%rsp), %rax; mov %rax, 0x800e0
    mov %cr2, %rax;     mov %rax, 0x800e8
    movq $0x200087, 0x50000           /* PD at 0x50000: 2 MiB page at phys 2 MiB, user, writable */
    movq $0x50007, 0x11008            /* PDPT[1] */
    iretq
"""
    user = f"""
    int $0x80
int80_ret:
    int $0x81
gp_ret:
    mov $0x1234, %rbx
    syscall
syscall_ret:
    mov %rax, 0x80100
    mov %rcx, 0x80108
    mov %r11, 0x80110
    mov %cs, %ax;  mov %ax, 0x80118
    mov %ss, %ax;  mov %ax, 0x80120
    int $0x82
    mov %rsp, 0x80128
pf_insn:
    movq $7, {UNMAPPED + 8:#x}
    mov {UNMAPPED + 8:#x}, %rax
    mov %rax, 0x80130
    int $0x83
"""
    source = kernel64(user, handlers, gates=gates).replace("kernel_init:\n    ret", "kernel_init:\n    int $0x82\n    ret")
    return source, _check_ring3


def _check_ring3(result, m, sym):
    assert result.stop.kind == "halt", result.stop
    # int $0x80 through a DPL3 gate: ring-3 frame on the RSP0 stack, CS/SS of the kernel in the handler
    assert [u64(m, DATA + 8 * i) for i in range(5)] == [sym["int80_ret"], USER_CS, 0x202, USTACK, USER_SS]
    assert u64(m, DATA + 0x28) == KSTACK - 40
    assert (u64(m, DATA + 0x30) & 0xFFFF, u64(m, DATA + 0x38) & 0xFFFF) == (0, KCS)   # SS = NULL, RPL 0
    # int $0x81 through a DPL0 gate: #GP(0x81*8+2) at the int instruction, from ring 3
    assert u64(m, DATA + 0x40) == 0
    assert u64(m, DATA + 0x48) == 0x81 * 8 + 2
    assert (u64(m, DATA + 0x50), u64(m, DATA + 0x58)) == (sym["gp_ret"] - 2, USER_CS)
    # syscall -> kernel (CS from STAR, SS +8, RCX/R11, FMASK applied) -> sysretq -> ring 3
    assert u64(m, DATA + 0x80) == sym["syscall_ret"]
    r11 = u64(m, DATA + 0x88)
    assert r11 & 0x200 and r11 & 2
    assert (u64(m, DATA + 0x90) & 0xFFFF, u64(m, DATA + 0x98) & 0xFFFF) == (KCS, KDS)
    assert u64(m, DATA + 0xA0) & FMASK == 0
    assert u64(m, DATA + 0x100) == 0x55
    assert (u64(m, DATA + 0x108), u64(m, DATA + 0x110)) == (sym["syscall_ret"], r11)
    assert (u64(m, DATA + 0x118) & 0xFFFF, u64(m, DATA + 0x120) & 0xFFFF) == (USER_CS, USER_SS)
    # IST1 used from ring 0 (kernel_init) and from ring 3: the same aligned stack top both times
    assert u64(m, DATA + 0x60) == 2
    assert u64(m, DATA + 0x68) == u64(m, DATA + 0x70) == ISTACK - 40
    assert u64(m, DATA + 0x128) == USTACK            # user stack untouched by the IST delivery
    # #PF from ring 3: user write to a not-present page, error code P=0 W=1 U=1, CR2, RSP0 frame
    assert u64(m, DATA + 0xB0) == KSTACK - 48
    assert u64(m, DATA + 0xB8) == 6
    assert [u64(m, DATA + 0xC0 + 8 * i) for i in range(5)] == [sym["pf_insn"], USER_CS, 0x202, USTACK, USER_SS]
    assert u64(m, DATA + 0xE8) == UNMAPPED + 8
    assert u64(m, DATA + 0x130) == 7
    faults = [(e.name, e.error_code) for e in result.events if e.kind == "Fault"]
    assert faults == [("vector 0x82", None), ("vector 0x80", None), ("#GP", 0x81 * 8 + 2),
                      ("vector 0x82", None), ("#PF", 6), ("vector 0x83", None)]


def test_ring3_int_gp_syscall_pagefault_and_ist():
    source, check = ring3_guest()
    check(*run_raw(source))


DF_GATES = """
    GATE 0x80, int80, 0xee, 0
    GATE 0x83, halt_handler, 0xee, 0
"""
DF_HANDLERS = HALT + """
int80:
    movq $1, 0x80000
    iretq
df_handler:
    mov %rsp, 0x80010
    mov 8(%rsp), %rax;  mov %rax, 0x80018      /* RIP after the int */
    mov 16(%rsp), %rax; mov %rax, 0x80020      /* CS */
    hlt
"""


def test_unmapped_rsp0_is_a_triple_fault_without_a_double_fault_gate():
    source = kernel64("    int $0x80\n    int $0x83\n", DF_HANDLERS, gates=DF_GATES, rsp0=UNMAPPED)
    result, m, _ = run_raw(source)
    assert result.stop.kind == "triple-fault", result.stop
    assert "RSP0 stack" in result.stop.detail and "#DF" in result.stop.detail
    assert u64(m, DATA) == 0


def test_unmapped_rsp0_delivers_double_fault_on_its_ist():
    gates = DF_GATES + "    GATE 8, df_handler, 0x8e, 2\n"
    source = kernel64("    int $0x80\nafter_int:\n    int $0x83\n", DF_HANDLERS, gates=gates, rsp0=UNMAPPED)
    result, m, sym = run_raw(source)
    assert result.stop.kind == "halt", result.stop
    assert u64(m, DATA) == 0                                   # int80 never ran
    assert u64(m, DATA + 0x10) == ISTACK2 - 48                 # #DF frame (with error code) on IST2
    assert (u64(m, DATA + 0x18), u64(m, DATA + 0x20)) == (sym["after_int"], USER_CS)
    faults = [(e.name, e.detail) for e in result.events if e.kind == "Fault"]
    assert faults == [("vector 0x80", "escalated to #DF")]


def test_software_int_to_dpl0_gate_from_ring0_is_allowed():
    # The DPL check compares with the CPL: the same DPL0 gate that gives #GP from ring 3 works in ring 0.
    gates = "    GATE 0x81, int81, 0x8e, 0\n    GATE 0x83, halt_handler, 0xee, 0\n"
    handlers = HALT + "int81:\n    incq 0x80000\n    iretq\n"
    source = kernel64("    int $0x83\n", handlers, gates=gates).replace(
        "kernel_init:\n    ret", "kernel_init:\n    int $0x81\n    ret")
    result, m, _ = run_raw(source)
    assert result.stop.kind == "halt", result.stop
    assert u64(m, DATA) == 1


# -- 32-bit protected mode ----------------------------------------------------------------------
GDT32, TSS32, IDT32 = 0x5000, 0x6000, 0x7000


def test_ring3_int80_on_a_32bit_kernel_uses_ss0_esp0():
    gdt = [0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF, 0x00CFFB000000FFFF, 0x00CFF3000000FFFF,
           segment_descriptor(TSS32, 0x67, 0x89, 0)]
    source = f"""
.macro GATE vec, handler, attr
    mov $\\handler, %eax
    mov $({IDT32} + \\vec * 8), %edi
    mov %ax, (%edi)
    movw $0x08, 2(%edi)
    movb $0, 4(%edi)
    movb $\\attr, 5(%edi)
    shr $16, %eax
    mov %ax, 6(%edi)
.endm
    mov $gdt, %esi
    mov ${GDT32}, %edi
    mov ${len(gdt) * 8}, %ecx
    rep movsb
    lgdt gdtr
    movl ${KSTACK:#x}, {TSS32 + 4}
    movl $0x10, {TSS32 + 8}
    mov $0x28, %ax
    ltr %ax
    GATE 0x80, int80, 0xee
    GATE 0x81, halt_handler, 0xee
    lidt idtr
    pushl $0x23
    pushl ${USTACK:#x}
    pushl $0x202
    pushl $0x1b
    pushl $user
    iret
int80:
    mov %esp, 0x80028
    mov (%esp), %eax;   mov %eax, 0x80000
    mov 4(%esp), %eax;  mov %eax, 0x80004
    mov 8(%esp), %eax;  mov %eax, 0x80008
    mov 12(%esp), %eax; mov %eax, 0x8000c
    mov 16(%esp), %eax; mov %eax, 0x80010
    mov %ss, %ax;       mov %ax, 0x80030
    mov %cs, %ax;       mov %ax, 0x80034
    mov $0x77, %eax
    iret
halt_handler:
    hlt
user:
    mov $0x23, %ax
    mov %ax, %ds
    int $0x80
int80_ret:
    mov %eax, 0x80040
    mov %cs, %ax;  mov %ax, 0x80044
    mov %ss, %ax;  mov %ax, 0x80048
    int $0x81
.balign 8
gdt:
{_quads(gdt)}
gdtr:
    .word {len(gdt) * 8 - 1}
    .long {GDT32}
idtr:
    .word 2047
    .long {IDT32}
"""
    result, m, sym = run_raw(source, bits=32)
    assert result.stop.kind == "halt", result.stop
    u32 = m.memory.read_u32
    assert [u32(DATA + 4 * i) for i in range(5)] == [sym["int80_ret"], 0x1B, 0x202, USTACK, 0x23]
    assert u32(DATA + 0x28) == KSTACK - 20
    assert (u32(DATA + 0x30) & 0xFFFF, u32(DATA + 0x34) & 0xFFFF) == (0x10, 0x08)
    assert (u32(DATA + 0x40), u32(DATA + 0x44) & 0xFFFF, u32(DATA + 0x48) & 0xFFFF) == (0x77, 0x1B, 0x23)


# -- the interrupt shadow -----------------------------------------------------------------------
SHADOW_GUEST = """
    mov $0x10, %eax
    sti
after_sti:
    nop
after_nop:
    mov %eax, %ss
after_mov_ss:
    nop
after_nop2:
    hlt
"""


def test_interrupt_shadow_after_sti_and_mov_ss():
    # Stop after each instruction in turn (the instruction budget is exact) and ask the engine.
    seen = {}
    for count in range(1, 7):
        result, m, sym = run_raw(SHADOW_GUEST, max_instructions=count)
        assert result.stop.kind == "budget", result.stop
        seen[m.reg("rip")] = m.engine.interrupt_shadow()
    assert seen[sym["after_sti"]] is True and seen[sym["after_mov_ss"]] is True
    assert seen[sym["after_nop"]] is False and seen[sym["after_nop2"]] is False
    assert seen[sym["after_sti"] - 6] is False          # before anything ran


def test_cpl_follows_the_ring():
    result, m, _ = run_raw("hlt")
    assert m.engine.cpl() == 0


def test_external_interrupt_pushes_no_error_code_and_ignores_gate_dpl():
    # The lead's run loop injects LAPIC/PIC vectors with kind="external": no DPL check, no error code.
    gates = "    GATE 0x40, ext_handler, 0x8e, 0\n    GATE 0x83, halt_handler, 0xee, 0\n"
    handlers = HALT + "ext_handler:\n    hlt\n"
    result, m, sym = run_raw(kernel64("spin:\n    jmp spin\n", handlers, gates=gates), max_instructions=5000)
    assert result.stop.kind == "budget" and m.engine.cpl() == 3, result.stop
    rsp, rip = m.reg("rsp"), m.reg("rip")
    delivered = m.delivery.deliver(0x40, 7, rip, kind="external")
    assert delivered.handler == sym["ext_handler"] and m.reg("rip") == sym["ext_handler"]
    assert m.engine.cpl() == 0 and m.reg("cs") == KCS and m.reg("ss") == 0
    assert m.reg("rsp") == KSTACK - 40                           # five words: no error code
    assert [u64(m, KSTACK - 40 + 8 * i) for i in range(5)] == [rip, USER_CS, 0x202, rsp, USER_SS]
    assert not m.reg("rflags") & 0x200                           # interrupt gate: IF cleared
