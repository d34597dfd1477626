"""xen_pv: user mode as Xen runs it for a 64-bit PV guest.  A small PV kernel (guests as in
test_xen_pv_bad_input.py) maps a user code page and stack with the USER bit, registers the syscall
callback (CALLBACKOP_register), names its kernel stack (stack_switch) and the user page table
(MMUEXT_NEW_USER_BASEPTR), then enters ring 3 with the iret hypercall.  The user process makes a
``syscall``, which reaches the callback on Xen's frame on the kernel stack; the kernel returns with
the iret hypercall (VGCF_in_syscall); the process then touches a supervisor page, and the #PF is
bounced to the kernel's trap table from user mode.  GS bases swap on every transition.
"""

from __future__ import annotations

import struct

from test_xen_pv_bad_input import DONE, hypercall, result_at, run_pv

from hvsim.abi import xen_pv as pv

USER_GS, KERNEL_GS = "user_data", "kernel_gs_page"
START_INFO_MFN_LIST = 104
KERNEL_STACK_SS = pv.FLAT_KERNEL_SS64

# The kernel: trap table (#UD, #GP, #PF), callbacks, GS bases, user mappings, then iret to ring 3.
SETUP = f"""
    jmp main
    .balign 16
traps:
    .byte 6, 0
    .short 0xe033
    .long 0
    .quad ud_handler
    .byte 13, 0
    .short 0xe033
    .long 0
    .quad gp_handler
    .byte 14, 0
    .short 0xe033
    .long 0
    .quad pf_handler
    .byte 0x80, 3
    .short 0xe033
    .long 0
    .quad int80_handler
    .quad 0, 0
cb: .short 2, 0
    .long 0
    .quad syscall_entry
ext: .long {pv.MMUEXT_NEW_USER_BASEPTR}, 0
    .quad 0, 0
make_user:                      /* rdi = page va (va = pfn << 12 here): remap it with U set */
    mov %rdi, %rax
    shr $12, %rax
    mov {START_INFO_MFN_LIST}(%r15), %rcx
    mov (%rcx,%rax,8), %rsi
    shl $12, %rsi
    or $0x27, %rsi
    mov $14, %eax
    xor %edx, %edx
    syscall
    ret
main:
    mov $0x1234, %rax
    mov %rax, {USER_GS}+0(%rip)
    mov $0x5678, %rax
    mov %rax, {KERNEL_GS}(%rip)
    {hypercall(0, "traps", store=0)}
    {hypercall(30, pv.CALLBACKOP_register, "cb", store=1)}
    lea kstack_top(%rip), %rsi
    {hypercall(3, KERNEL_STACK_SS, store=2).replace("mov $0xe02b, %rdi", "mov $0xe02b, %rdi")}
    mov %cr3, %rax
    shr $12, %rax
    mov %rax, ext+8(%rip)
    {hypercall(26, "ext", 1, 0, 0x7FF0, store=3)}
    lea user_code(%rip), %rdi
    call make_user
    lea user_data(%rip), %rdi
    call make_user
    lea user_stack(%rip), %rdi
    call make_user
    lea {USER_GS}(%rip), %rsi
    {hypercall(25, pv.SEGBASE_GS_USER, store=4)}
    lea {KERNEL_GS}(%rip), %rsi
    {hypercall(25, pv.SEGBASE_GS_KERNEL, store=5)}
    push $0xe02b                /* iret_context: ss rsp rflags cs rip flags rcx r11 rax */
    lea user_stack_top(%rip), %rax
    push %rax
    push $0x202
    push $0xe033
    lea user_code(%rip), %rax
    push %rax
    push $0
    push $0
    push $0
    push $0
    mov $23, %eax
    syscall
    hlt
"""

HANDLERS = """
syscall_entry:                  /* frame: rcx r11 rip cs rflags rsp ss */
    mov %rax, results+48(%rip)  /* the user's RAX */
    mov 16(%rsp), %rbx
    mov %rbx, results+56(%rip)  /* rip after the syscall */
    mov 24(%rsp), %rbx
    mov %rbx, results+64(%rip)  /* cs | mask << 32 */
    mov 40(%rsp), %rbx
    mov %rbx, results+72(%rip)  /* user rsp */
    mov 48(%rsp), %rbx
    mov %rbx, results+80(%rip)  /* ss */
    mov %gs:0, %rbx
    mov %rbx, results+88(%rip)  /* the kernel's GS base is active */
    mov (%rsp), %rbx
    mov %rbx, results+96(%rip)  /* rcx as syscall left it */
    mov %cs, %bx
    mov %bx, results+104(%rip)
    mov (%rsp), %rcx
    mov 8(%rsp), %r11
    add $16, %rsp
    pushq $0x100                /* VGCF_in_syscall */
    push %rcx
    push %r11
    lea 1(%rax), %rax
    push %rax
    mov $23, %eax
    syscall
pf_handler:                     /* frame: rcx r11 err rip cs rflags rsp ss */
    mov 16(%rsp), %rbx
    mov %rbx, results+112(%rip) /* error code: user-mode read of a supervisor page */
    mov 32(%rsp), %rbx
    mov %rbx, results+120(%rip) /* cs from user mode */
""" + DONE + """
ud_handler:
gp_handler:
int80_handler:
    hlt
"""

USER = """
    .balign 4096
user_code:
    mov %gs:0, %rbx
    mov %rbx, user_data+8(%rip)   /* the user's GS base is active */
    mov %cs, %ax
    mov %ax, user_data+16(%rip)
    mov %ss, %ax
    mov %ax, user_data+24(%rip)
    mov $0xe02b, %eax
    mov %eax, %ds                 /* FLAT_RING3_DS32 loads in ring 3 */
    mov $41, %eax
    syscall
after_syscall:
    mov %rax, user_data+32(%rip)
    mov %rcx, user_data+40(%rip)
    mov results+8(%rip), %rax     /* a kernel page: Xen gave it _PAGE_USER (one table for both modes) */
    mov %rax, user_data+48(%rip)
    movabs 0x7f0000000000, %rax   /* nothing maps it: #PF to the kernel */
    hlt
    .balign 4096
user_data: .skip 4096
user_stack: .skip 4096
user_stack_top:
kernel_gs_page: .skip 4096
    .skip 4096
kstack_top:
"""


def user_qword(m, symbols, index: int) -> int:
    return struct.unpack("<Q", m.vmem.read(symbols["user_data"] + 8 * index, 8))[0]


def test_a_ring_3_process_makes_a_syscall_returns_by_iret_and_faults_to_the_kernel():
    result, m, symbols = run_pv(SETUP + HANDLERS + USER)

    assert result.stop.kind == "poweroff", result.stop
    assert [result_at(m, symbols, i) for i in range(6)] == [0] * 6          # every hypercall succeeded
    # in the kernel, from the user's syscall: Xen's lstar_enter frame on the kernel stack
    assert result_at(m, symbols, 6) == 41
    assert result_at(m, symbols, 7) == result_at(m, symbols, 12) == symbols["after_syscall"]
    assert result_at(m, symbols, 8) == pv.FLAT_USER_CS64                   # upcall mask 0
    assert result_at(m, symbols, 9) == symbols["user_stack_top"]
    assert result_at(m, symbols, 10) == pv.FLAT_KERNEL_SS64
    assert result_at(m, symbols, 11) == 0x5678                             # kernel GS base active
    assert result_at(m, symbols, 13) & 0xFFFF == 0xE031                    # the kernel's ring 1 again
    # in user mode
    assert user_qword(m, symbols, 1) == 0x1234                             # user GS base active
    assert user_qword(m, symbols, 2) & 0xFFFF == pv.FLAT_USER_CS64
    assert user_qword(m, symbols, 3) & 0xFFFF == pv.FLAT_USER_SS64
    assert user_qword(m, symbols, 4) == 42                                 # the kernel's answer
    assert user_qword(m, symbols, 5) == symbols["after_syscall"]       # sysret: RCX = RIP
    # Xen adds _PAGE_USER to a 64-bit PV kernel's mappings: with the kernel's table as the user table,
    # user mode reads kernel data, and the kernel reads its L1 entry back with USER and GUEST_KERNEL set
    assert user_qword(m, symbols, 6) == result_at(m, symbols, 1) == 0
    entry = m.memory.read_u64(m.plugin_state["xen_pv"].mmu.l1_entry_address(symbols["results"]))
    assert entry & (pv.PTE_USER | pv.PTE_GUEST_KERNEL) == pv.PTE_USER | pv.PTE_GUEST_KERNEL
    # the #PF from user mode: U bit in the error code, the user's CS in the frame
    assert result_at(m, symbols, 14) == 0x4                   # U, not present: a user read of nothing
    assert result_at(m, symbols, 15) & 0xFFFF == pv.FLAT_USER_CS64
    extra = result.extra["xen_pv"]
    assert (extra["user_entries"], extra["user_syscalls"]) == (2, 1)


def run_user(user: str, *, handlers: str = "", setup: str = SETUP):
    """SETUP, then ``user`` as the ring-3 code; ``handlers`` replaces the trap handlers' ``hlt``."""
    tail = HANDLERS.replace("ud_handler:\ngp_handler:\nint80_handler:\n    hlt\n", handlers)
    source = setup + tail + USER.replace(USER[USER.index("user_code:") + 11:USER.index("    .balign 4096\nuser_data")],
                                         user)
    return run_pv(source)


FRAME_TO_RESULTS = ("    mov 16(%rsp), %rbx\n    mov %rbx, results+112(%rip)\n"
                    "    mov 24(%rsp), %rbx\n    mov %rbx, results+120(%rip)\n" + DONE)


def test_int_n_from_user_mode_reaches_a_dpl_3_handler_and_a_dpl_0_one_raises_gp():
    result, m, symbols = run_user("    int $0x80\nafter_int:\n    hlt\n",
                                  handlers="int80_handler:\n    mov 16(%rsp), %rbx\n    mov %rbx, results+112(%rip)\n"
                                           "    mov 24(%rsp), %rbx\n    mov %rbx, results+120(%rip)\n" + DONE
                                           + "ud_handler:\ngp_handler:\n    hlt\n")
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 14) == symbols["after_int"]          # no error code: rip, cs
    assert result_at(m, symbols, 15) & 0xFFFF == pv.FLAT_USER_CS64

    result, m, symbols = run_user("    int $0x81\n    hlt\n",
                                  handlers="gp_handler:\n" + FRAME_TO_RESULTS + "ud_handler:\nint80_handler:\n    hlt\n")
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 14) == 0x81 * 8 + 2                   # #GP naming the vector


def test_a_user_syscall_without_a_syscall_callback_is_ud_at_the_instruction():
    setup = SETUP.replace(hypercall(30, pv.CALLBACKOP_register, "cb", store=1), "")
    result, m, symbols = run_user("user_syscall:\n    syscall\n    hlt\n", setup=setup,
                                  handlers="ud_handler:\n    mov 16(%rsp), %rbx\n    mov %rbx, results+112(%rip)\n"
                                           + DONE + "gp_handler:\nint80_handler:\n    hlt\n")
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 14) == symbols["user_syscall"]


def test_an_iret_frame_with_a_kernel_only_stack_segment_crashes_the_domain():
    # 0xe010 is Xen's own DPL-0 data segment: a ring-3 SS cannot be loaded from it.
    setup = SETUP.replace("push $0xe02b                /* iret_context", "push $0xe010                /* iret_context")
    result, _, _ = run_user("    hlt\n", setup=setup, handlers="ud_handler:\ngp_handler:\nint80_handler:\n    hlt\n")
    assert result.stop.kind == "crash" and "SS 0xe013" in result.stop.detail


def test_segment_bases_are_checked_and_gs_user_sel_loads_from_the_gdt():
    source = (hypercall(25, pv.SEGBASE_FS, 0x8000_0000_0000_0000, store=0)
              + hypercall(25, pv.SEGBASE_GS_KERNEL, 0x5000, store=1)
              + hypercall(25, pv.SEGBASE_GS_USER_SEL, 0xE02B, store=2)
              + "mov %gs, %ax\n    mov %ax, results+24(%rip)\n    "
              + hypercall(25, pv.SEGBASE_GS_USER_SEL, 0xE010, store=4)          # DPL 0: NULL instead
              + "mov %gs, %ax\n    mov %ax, results+40(%rip)\n    "
              + "mov $0xc0000101, %ecx\n    rdmsr\n    mov %eax, results+48(%rip)\n    "
              + "mov $0xe02b, %eax\n    mov %eax, %ds\n    mov %eax, %es\n    mov %ds, %ax\n    mov %ax, results+56(%rip)\n    "
              + DONE)
    result, m, symbols = run_pv(source)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 0) == -22                              # not canonical: -EINVAL
    assert [result_at(m, symbols, i) for i in (1, 2, 4)] == [0, 0, 0]  # GS_USER_SEL never fails
    assert result_at(m, symbols, 3) & 0xFFFF == 0xE02B
    assert result_at(m, symbols, 5) & 0xFFFF == 0
    assert result_at(m, symbols, 6) & 0xFFFF_FFFF == 0x5000             # the kernel's GS base stays active
    assert result_at(m, symbols, 7) & 0xFFFF == 0xE02B                  # FLAT_RING3_DS32 loads in the kernel's ring 1
