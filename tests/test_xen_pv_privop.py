"""xen_pv: Xen's privileged-op emulation (pv/emul-priv-op.c).  The PV kernel runs in ring 1 with IOPL
0, so what Xen's ring 3 may not execute raises #GP(0): Xen completes some of it for the kernel
(privop.py) and gives the rest to the guest's trap table as #GP(0) at the instruction."""

from __future__ import annotations

import pytest
from test_xen_pv_bad_input import DONE, hypercall, result_at, run_pv, trap_table

from hvsim.abi import xen_pv as pv
from hvsim.core.events import Fault



def counting_handler(name: str, *, error_code: bool, count_at: int, rip_at: int, skip: int) -> str:
    """A trap handler that counts into results[count_at], records the faulting RIP in
    results[rip_at] and resumes ``skip`` bytes on (each probed instruction is padded to ``skip``
    bytes with nops), returning with the iret hypercall.  Xen's frame: rcx r11 [err] rip cs rflags
    rsp ss; the hypercall pops rax r11 rcx flags rip cs rflags rsp ss."""
    rip = 24 if error_code else 16
    flags = "    movq $0, (%rsp)\n" if error_code else "    push $0\n"     # the error code's slot, or a new one
    return (f"{name}:\n    incq results+{8 * count_at}(%rip)\n    mov {rip}(%rsp), %rbx\n"
            f"    mov %rbx, results+{8 * rip_at}(%rip)\n    addq ${skip}, {rip}(%rsp)\n"
            f"    pop %rcx\n    pop %r11\n{flags}    push %rcx\n    push %r11\n    push %rax\n"
            "    mov $23, %eax\n    syscall\n")


def kernel(*, skip: int, ud: bool = False) -> str:
    """A PV kernel whose #GP (and, with ``ud``, #UD) handler counts into results[14] (#UD: [12]) and
    records the RIP in results[15] ([13]), then skips ``skip`` bytes."""
    handlers = counting_handler("gp_handler", error_code=True, count_at=14, rip_at=15, skip=skip)
    if ud:
        handlers += counting_handler("ud_handler", error_code=False, count_at=12, rip_at=13, skip=skip)
    table = trap_table(gp_handler=13, ud_handler=6) if ud else trap_table(gp_handler=13)
    return (f"    jmp main\n{table}iopl_1: .long 1\n{handlers}main:\n    "
            + hypercall(0, "traps", store=0))


GP_KERNEL = kernel(skip=4)


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


UD_GP_KERNEL = kernel(skip=5, ud=True)


def test_fsgsbase_is_xens_the_guests_cr4_bit_is_virtual_and_bases_are_checked():
    """As XTF's pv-fsgsbase checks: CPUID shows FSGSBASE, CR4.FSGSBASE reads clear and the
    instructions are #UD; once the kernel sets it they work in kernel mode, a non-canonical base is
    #GP(0), and clearing it brings the #UD back.  A CR4 write to a bit the guest does not control
    (PGE) is ignored, not a fault."""
    source = UD_GP_KERNEL + f"""
    mov $7, %eax
    xor %ecx, %ecx
    cpuid
    mov %rbx, results+8(%rip)
    mov %cr4, %rax
    mov %rax, results+16(%rip)
ud_first:
    rdfsbase %rax; nop
    mov %cr4, %rax
    or $0x10080, %rax           /* FSGSBASE and PGE */
    mov %rax, %cr4
    mov %cr4, %rbx
    mov %rbx, results+24(%rip)
    movabs $0xffff800000001000, %rcx
    wrfsbase %rcx; nop
    rdfsbase %rdx; nop
    mov %rdx, results+32(%rip)
    movabs $0x0000800000000000, %rcx
gp_wrfsbase:
    wrfsbase %rcx; nop
    and $~0x10080, %rax
    mov %rax, %cr4
ud_again:
    rdgsbase %rax; nop
    {DONE}"""
    result, m, symbols = run_pv(source)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 1) & 1                            # CPUID.7.0:EBX.FSGSBASE
    assert not result_at(m, symbols, 2) & 0x10000                 # CR4.FSGSBASE clear at first
    assert result_at(m, symbols, 3) & 0x10080 == 0x10000          # set; PGE ignored
    assert result_at(m, symbols, 4) & 0xFFFF_FFFF_FFFF_FFFF == 0xFFFF_8000_0000_1000
    assert m.msr_read(0xC000_0100) == 0xFFFF_8000_0000_1000       # the bad base changed nothing
    assert result_at(m, symbols, 12) == 2 and result_at(m, symbols, 13) == symbols["ud_again"]
    assert result_at(m, symbols, 14) == 1 and result_at(m, symbols, 15) == symbols["gp_wrfsbase"]
    assert not m.reg("cr4") & 0x10000                              # the engine's bit stays clear


def test_xsave_as_xen_offers_it_to_a_pv_kernel():
    """The kernel's enlightened CPUID (Xen's forced-emulation prefix) shows OSXSAVE while its CR4 has
    none (Xen's own leaks there, as Linux expects) and the native one does not; xsetbv is #GP until
    the kernel sets CR4.OSXSAVE, then loads XCR0 (xgetbv reads it back), refusing a value without
    x87 or with AVX but not SSE."""
    source = GP_KERNEL + f"""
    mov $1, %eax
    xor %ecx, %ecx
    .byte 0x0f, 0x0b, 0x78, 0x65, 0x6e  /* ud2; .ascii "xen" */
    cpuid
    mov %rcx, results+8(%rip)
    mov $1, %eax
    xor %ecx, %ecx
    cpuid
    mov %rcx, results+16(%rip)
    xor %ecx, %ecx
    xor %edx, %edx
    mov $3, %eax
no_osxsave:
    xsetbv; nop
    mov %cr4, %rax
    or $0x40000, %rax
    mov %rax, %cr4
    xor %ecx, %ecx
    mov $3, %eax
    xsetbv; nop
    xgetbv
    mov %rax, results+24(%rip)
    mov $2, %eax
no_x87:
    xsetbv; nop
    mov $5, %eax
avx_without_sse:
    xsetbv; nop
    xgetbv
    mov %rax, results+32(%rip)
    {DONE}"""
    result, m, symbols = run_pv(source)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 1) & (3 << 26) == 3 << 26            # XSAVE and OSXSAVE, enlightened
    assert result_at(m, symbols, 2) & (3 << 26) == 1 << 26            # XSAVE only, native
    assert result_at(m, symbols, 3) == 3 and result_at(m, symbols, 4) == 3
    refused = [f.rip for f in gp_faults(m) if not f.detail.startswith("emulated")]
    assert refused == [symbols["no_osxsave"], symbols["no_x87"], symbols["avx_without_sse"]]
