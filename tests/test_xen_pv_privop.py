"""xen_pv: Xen's privileged-op emulation (pv/emul-priv-op.c).  The PV kernel runs in ring 1 with IOPL
0, so what Xen's ring 3 may not execute raises #GP(0): Xen completes some of it for the kernel
(privop.py) and gives the rest to the guest's trap table as #GP(0) at the instruction."""

from __future__ import annotations

import pytest
from test_xen_pv_bad_input import DONE, hypercall, result_at, run_pv

from hvsim.abi import xen_pv as pv
from hvsim.core.events import Fault

# A kernel with a #GP handler that records the faulting RIP in results[15] and skips
# ``skip_len`` bytes (every probed instruction below is padded to 4 bytes with nops).
GP_KERNEL = """
    jmp main
    .balign 16
traps:
    .byte 13, 0
    .short 0xe033
    .long 0
    .quad gp_handler
    .quad 0, 0
iopl_1: .long 1
gp_handler:                     /* frame: rcx r11 err rip cs rflags rsp ss */
    incq results+112(%rip)
    mov 24(%rsp), %rbx
    mov %rbx, results+120(%rip)
    addq $4, 24(%rsp)
    pop %rcx                    /* make it the iret hypercall's: rax r11 rcx flags rip ... */
    pop %r11
    movq $0, (%rsp)
    push %rcx
    push %r11
    push %rax
    mov $23, %eax
    syscall
main:
    """ + hypercall(0, "traps", store=0)


def gp_faults(machine) -> list[Fault]:
    return [e for e in machine.events if isinstance(e, Fault) and e.vector == 13]


def test_cli_faults_at_viopl_0_and_is_a_no_op_from_viopl_1():
    source = GP_KERNEL + f"""
first_cli:
    cli; nop; nop; nop
    mov results+112(%rip), %rax
    mov %rax, results+8(%rip)   /* #GPs taken so far */
    {hypercall(33, pv.PHYSDEVOP_set_iopl, "iopl_1", store=2)}
second_cli:
    cli; nop; nop; nop
    sti; nop; nop; nop
    mov results+112(%rip), %rax
    mov %rax, results+24(%rip)
    {DONE}"""
    result, m, symbols = run_pv(source)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 1) == 1 and result_at(m, symbols, 15) == symbols["first_cli"]
    assert result_at(m, symbols, 2) == 0                          # set_iopl(1)
    assert result_at(m, symbols, 3) == 1                          # no further #GP reached the guest
    faults = gp_faults(m)
    assert [(f.rip, f.delivered) for f in faults[:1]] == [(symbols["first_cli"], True)]
    assert [f.detail for f in faults[1:]] == ["emulated as Xen does: cli: a no-op at vIOPL 1, as Xen does",
                                              "emulated as Xen does: sti: a no-op at vIOPL 1, as Xen does"]


def test_msrs_control_and_debug_registers_are_emulated_as_xen_does():
    source = GP_KERNEL + f"""
    mov $0xc0000100, %ecx       /* FS_BASE */
    mov $0x12345000, %eax
    xor %edx, %edx
    wrmsr
    xor %eax, %eax
    rdmsr
    mov %rax, results+8(%rip)
    mov $0x8000, %edx           /* a non-canonical base: the guest's #GP */
bad_wrmsr:
    wrmsr; nop; nop
    mov %cr0, %rax
    or $8, %rax                 /* CR0.TS: the one bit Xen lets the kernel change */
    mov %rax, %cr0
    mov %cr0, %rbx
    mov %rbx, results+16(%rip)
    clts
    mov %cr0, %rbx
    mov %rbx, results+24(%rip)
    and $~0x10000, %rax         /* CR0.WP: unmodifiable, #GP */
bad_cr0:
    mov %rax, %cr0; nop
    mov $0x401, %rax
    mov %rax, %dr7              /* the virtual DR7 */
    mov %dr7, %rbx
    mov %rbx, results+32(%rip)
    wbinvd
bad_hlt:
    hlt; nop; nop; nop          /* not emulated: #GP */
    lea results+48(%rip), %rbx
bad_lgdt:
    lgdt (%rbx); nop
    {DONE}"""
    result, m, symbols = run_pv(source)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 1) == 0x12345000
    assert result_at(m, symbols, 2) & 8 and not result_at(m, symbols, 3) & 8
    assert result_at(m, symbols, 4) == 0x401
    assert m.msr_read(0xC000_0100) == 0x12345000                  # the bad wrmsr changed nothing
    delivered = [f.rip for f in gp_faults(m) if not f.detail.startswith("emulated")]
    assert delivered == [symbols[s] for s in ("bad_wrmsr", "bad_cr0", "bad_hlt", "bad_lgdt")]
    assert result_at(m, symbols, 14) == 4
    emulated = [f.detail.split(": ")[1] for f in gp_faults(m) if f.detail.startswith("emulated")]
    assert emulated == ["wrmsr", "rdmsr", "mov rax, cr0", "mov cr0, rax", "mov rbx, cr0", "clts",
                        "mov rbx, cr0", "mov dr7, rax", "mov rbx, dr7", "wbinvd"]


@pytest.mark.parametrize("assist", [False, True])
def test_with_architectural_iopl_the_kernel_is_cpl_0_for_cli(assist):
    """VMASST_TYPE_architectural_iopl makes the kernel's virtual CPL 0: cli is a no-op at vIOPL 0."""
    enable = hypercall(21, 0, pv.VMASST_ARCHITECTURAL_IOPL, store=1) if assist else ""
    source = GP_KERNEL + enable + f"""
kernel_cli:
    cli; nop; nop; nop
    {DONE}"""
    result, m, symbols = run_pv(source)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 14) == (0 if assist else 1)
