"""Faults raised by the checks of an interrupt delivery, as XTF's lm-ts test drives them: ``int n``
from ring 3 through a gate to ring 1 needs RSP1 from the TSS; a TSS limit that ends before RSP1 is
#TS with the TSS selector as error code (EXT clear for a software interrupt), reported at the
``int`` itself and delivered to ring 0 on RSP0, which the limit still covers.  A handler code
segment that is not present is #NP(selector).  The ring-0/ring-3 guests are test_privilege's kernels
(64-bit, and 32-bit for the SS0:ESP0 half)."""

from __future__ import annotations

from test_privilege import (DATA, GDT32, GDT64, IDT32, IDT64, KSTACK, TSS, TSS32, TSS_SEL, USER_CS, USTACK,
                            _quads, kernel64, u64)

from hvsim.core.cpu import segment_descriptor

from guestcode import run_raw

RSP1 = 0x5F000
RING1_CS = 0x40                  # GDT entry 8, after the 16-byte TSS descriptor
RING1_CODE = 0x00AFBB000000FFFF  # 64-bit code, DPL 1, present
MISSING_CODE = 0x00AF3B000000FFFF
GATES = """
    GATE 0x40, ring1_handler, 0xee, 0
    GATE 10, ts_handler, 0x8e, 0
    GATE 11, np_handler, 0x8e, 0
    GATE 0x83, halt_handler, 0xee, 0
"""
HANDLERS = """
halt_handler:
    hlt
ring1_handler:                    /* only with the TSS limit covering RSP1 */
    incq 0x80040
    mov %rsp, 0x80048
    iretq
ts_handler:                       /* frame: error rip cs rflags rsp ss */
    mov %rsp, 0x80000
    popq 0x80008
    mov (%rsp), %rax;   mov %rax, 0x80010
    mov 8(%rsp), %rax;  mov %rax, 0x80018
    addq $2, (%rsp)               /* skip the int $0x40 */
    iretq
np_handler:
    popq 0x80020
    mov (%rsp), %rax;   mov %rax, 0x80028
    addq $2, (%rsp)
    iretq
"""


def guest(descriptor: int, tss_limit: int) -> str:
    """kernel_init adds the ring-1 code segment (``descriptor``), points gate 0x40 at it with RPL 1,
    shrinks the TSS limit to ``tss_limit`` and reloads TR (the busy type back to available)."""
    init = f"""kernel_init:
    movabs ${descriptor:#x}, %rax
    mov %rax, {GDT64 + RING1_CS}
    movw ${RING1_CS + 7}, gdtr_ring1
    movl ${GDT64}, gdtr_ring1 + 2
    lgdt gdtr_ring1
    movw ${RING1_CS | 1}, {IDT64 + 0x40 * 16 + 2}
    movq ${RSP1:#x}, {TSS + 12}
    movw ${tss_limit}, {GDT64 + TSS_SEL}
    andb $0xfd, {GDT64 + TSS_SEL + 5}
    mov ${TSS_SEL}, %ax
    ltr %ax
    ret
gdtr_ring1:
    .word 0
    .quad 0
"""
    user = "ts_insn:\n    int $0x40\n    int $0x83\n"
    return kernel64(user, HANDLERS, gates=GATES).replace("kernel_init:\n    ret\n", init)


def test_tss_limit_short_of_rsp1_is_ts_with_the_tss_selector_on_rsp0():
    result, m, sym = run_raw(guest(RING1_CODE, 0x0B))     # RSP0 (4..11) fits, RSP1 (12..19) does not
    assert result.stop.kind == "halt", result.stop
    assert u64(m, DATA + 0x40) == 0
    assert u64(m, DATA + 0x08) == TSS_SEL                  # #TS(TSS selector), EXT and IDT clear
    assert (u64(m, DATA + 0x10), u64(m, DATA + 0x18)) == (sym["ts_insn"], USER_CS)
    assert u64(m, DATA) == KSTACK - 48                     # ring 0's RSP0, frame with error code
    assert u64(m, DATA + 0x20) == 0                        # no #NP


def test_tss_limit_covering_rsp1_enters_ring_1():
    result, m, _ = run_raw(guest(RING1_CODE, 0x67))
    assert result.stop.kind == "halt", result.stop
    assert (u64(m, DATA + 0x40), u64(m, DATA + 0x48)) == (1, RSP1 - 40)
    assert u64(m, DATA + 0x08) == 0


def test_handler_code_segment_not_present_is_np_with_its_selector():
    result, m, sym = run_raw(guest(MISSING_CODE, 0x67))
    assert result.stop.kind == "halt", result.stop
    assert u64(m, DATA + 0x20) == RING1_CS                 # #NP(selector), RPL bits dropped
    assert u64(m, DATA + 0x28) == sym["ts_insn"]
    assert u64(m, DATA + 0x08) == 0 and u64(m, DATA + 0x40) == 0


def test_32bit_tss_limit_short_of_esp1_is_ts_with_the_tss_selector_on_ss0_esp0():
    # lm-ts's hvm32 half: ESP0/SS0 (4..9) inside the limit, ESP1 (12..15) beyond it.
    gdt = [0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF, 0x00CFFB000000FFFF, 0x00CFF3000000FFFF,
           segment_descriptor(TSS32, 0x0B, 0x89, 0), 0x00CFBB000000FFFF]
    source = f"""
.macro GATE vec, handler, attr, sel
    mov $\\handler, %eax
    mov $({IDT32} + \\vec * 8), %edi
    mov %ax, (%edi)
    movw $\\sel, 2(%edi)
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
    GATE 0x40, ring1_handler, 0xee, 0x31
    GATE 10, ts_handler, 0x8e, 0x08
    GATE 0x83, halt_handler, 0xee, 0x08
    lidt idtr
    pushl $0x23
    pushl ${USTACK:#x}
    pushl $0x202
    pushl $0x1b
    pushl $user
    iret
ring1_handler:
    incl 0x80040
    iret
ts_handler:                       /* frame: error eip cs eflags esp ss */
    mov %esp, 0x80000
    popl 0x80004
    mov (%esp), %eax;   mov %eax, 0x80008
    mov 4(%esp), %eax;  mov %eax, 0x8000c
    addl $2, (%esp)
    iret
halt_handler:
    hlt
user:
ts_insn:
    int $0x40
    int $0x83
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
    assert u32(DATA + 0x40) == 0
    assert (u32(DATA + 4), u32(DATA + 8), u32(DATA + 0xC)) == (0x28, sym["ts_insn"], 0x1B)
    assert u32(DATA) == KSTACK - 24                        # SS0:ESP0, frame with error code
