"""Segment faults of memory operands, as XTF's memop-seg test drives them: in 64-bit mode a
non-canonical operand is #SS(0) through SS (a base of RSP/RBP, whatever override other than FS/GS it
carries) and #GP(0) otherwise, leaving CR2 alone; in 32-bit protected mode an operand beyond its
segment's limit is #GP(0), or #SS(0) through SS, not the #PF of the page behind it."""

from __future__ import annotations

import struct

import pytest

from guestcode import DATA, run_raw

NON_CANONICAL = 0x8000_0000_4000_0000
CR2_MARK = 0x1234_5000

# Each fault handler (it clobbers %rax and %rbx) records (vector, error code, faulting RIP) at DATA + 24 * n, n counted in
# %r14, and resumes at the address in %r15.
HANDLERS64 = """
gp_handler:
    push $13
    jmp record
ss_handler:
    push $12
    jmp record
pf_handler:
    push $14
record:                         /* frame: vector error rip cs rflags rsp ss */
    imul $24, %r14, %rbx
    pop %rax
    mov %rax, 0x80000(%rbx)
    pop %rax
    mov %rax, 0x80008(%rbx)
    mov (%rsp), %rax
    mov %rax, 0x80010(%rbx)
    mov %r15, (%rsp)
    inc %r14
    iretq
"""


def records(m, count):
    return [struct.unpack("<QQQ", m.memory.read(DATA + 24 * i, 24)) for i in range(count)]


def test_non_canonical_operands_fault_through_their_segment_in_64bit_mode():
    source = f"""
    xor %r14, %r14
    mov ${CR2_MARK:#x}, %rax
    mov %rax, %cr2
    movabs ${NON_CANONICAL:#x}, %rbp
    mov %rbp, %rdx
    lea 1f(%rip), %r15
at_rbp:
    movb $0, (%rbp)             /* SS */
1:  lea 1f(%rip), %r15
at_rdx:
    movb $0, (%rdx)             /* DS */
1:  lea 1f(%rip), %r15
at_ds_rbp:
    movb $0, %ds:(%rbp)         /* the DS override means nothing in 64-bit mode: SS */
1:  lea 1f(%rip), %r15
at_ss_rdx:
    movb $0, %ss:(%rdx)         /* nor does SS: DS */
1:  lea 1f(%rip), %r15
at_fs_rbp:
    movb $0, %fs:(%rbp)         /* FS does (base 0): #GP */
1:  lea 1f(%rip), %r15
at_abs:
    movabsb %al, 0x8000000040000000
1:  lea (%rbp), %rcx            /* no access, no fault */
    mov %cr2, %rdx
    hlt
""" + HANDLERS64
    result, m, sym = run_raw(source, gates={12: "ss_handler", 13: "gp_handler", 14: "pf_handler"})
    assert result.stop.kind == "halt", result.stop
    assert m.reg("r14") == 6
    assert records(m, 6) == [
        (12, 0, sym["at_rbp"]), (13, 0, sym["at_rdx"]), (12, 0, sym["at_ds_rbp"]),
        (13, 0, sym["at_ss_rdx"]), (13, 0, sym["at_fs_rbp"]), (13, 0, sym["at_abs"]),
    ]
    assert m.reg("rdx") == CR2_MARK            # neither #GP nor #SS writes CR2
    assert [e.name for e in result.events if e.kind == "Fault"][:2] == ["#SS", "#GP"]     # the trace


# 32-bit: paging with 4 MiB pages mapping the first 1 GiB, so an access beyond it is a #PF; DS, ES
# and SS get a 2 GiB limit (0x7ffff pages) from GDT entries 3 and 4.
PAGING32 = """
    mov $0x200000, %edi         /* page directory */
    xor %eax, %eax
    mov $1024, %ecx
    rep stosl
    mov $0x200000, %edi
    mov $0x83, %eax             /* P, RW, PS */
    mov $256, %ecx
1:  mov %eax, (%edi)
    add $0x400000, %eax
    add $4, %edi
    loop 1b
    mov %cr4, %eax
    or $0x10, %eax              /* PSE */
    mov %eax, %cr4
    mov $0x200000, %eax
    mov %eax, %cr3
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0
    lgdt gdt_pointer
    mov $0x18, %ax              /* 2 GiB data */
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
"""
GDT32 = """
    .align 8
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff    /* flat code */
    .quad 0x00cf93000000ffff    /* flat data */
    .quad 0x00c793000000ffff    /* data, limit 0x7ffff pages */
gdt_pointer:
    .word 4 * 8 - 1
    .long gdt
"""
HANDLERS32 = """
gp_handler:
    push $13
    jmp record
ss_handler:
    push $12
    jmp record
pf_handler:
    push $14
record:                         /* frame: vector error eip cs eflags */
    imul $12, %esi, %ebx
    pop %eax
    mov %eax, 0x80000(%ebx)
    pop %eax
    mov %eax, 0x80004(%ebx)
    mov (%esp), %eax
    mov %eax, 0x80008(%ebx)
    mov %edi, (%esp)
    inc %esi
    iret
"""


def test_operands_beyond_a_segment_limit_fault_as_gp_or_ss_in_32bit_mode():
    source = PAGING32 + """
    xor %esi, %esi
    mov $0xc0000000, %ebp
    mov %ebp, %edx
    mov $1f, %edi
at_abs:
    movb $0, 0xc0000000         /* DS, beyond its limit */
1:  mov $1f, %edi
at_ebp:
    movb $0, (%ebp)             /* SS */
1:  mov $1f, %edi
at_es_ebp:
    movb $0, %es:(%ebp)         /* the override counts in 32-bit mode: ES, #GP */
1:  mov $1f, %edi
at_ss_edx:
    movb $0, %ss:(%edx)         /* SS */
1:  mov $1f, %edi
at_cs_write:
    movb $0, %cs:0x50000000     /* a write through a code segment: #GP, not the #PF */
1:  mov $1f, %edi
at_within:
    movb $0, 0x50000000         /* inside the 2 GiB limit, unmapped: #PF */
1:  hlt
""" + HANDLERS32 + GDT32
    result, m, sym = run_raw(source, bits=32, gates={12: "ss_handler", 13: "gp_handler", 14: "pf_handler"})
    assert result.stop.kind == "halt", result.stop
    got = [struct.unpack("<III", m.memory.read(DATA + 12 * i, 12)) for i in range(m.reg("esi"))]
    assert got == [
        (13, 0, sym["at_abs"]), (12, 0, sym["at_ebp"]), (13, 0, sym["at_es_ebp"]), (12, 0, sym["at_ss_edx"]),
        (13, 0, sym["at_cs_write"]), (14, 0b10, sym["at_within"]),
    ]
