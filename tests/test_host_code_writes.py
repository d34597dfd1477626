"""Host writes over code the guest already ran: the guest runs the new bytes next, whatever linear
address it fetched the old ones through (Machine._forget_code drops translations by physical
address).  Driven by a small xen_pv kernel (as in test_xen_pv_bad_input.py) whose function runs
only through a second mapping of its frame, then is overwritten by Xen (MMUEXT_COPY_PAGE, a host
write to machine memory)."""

from __future__ import annotations

from test_xen_pv_bad_input import DONE, assert_finished, result_at, run_pv

from hvsim.abi import xen as x
from hvsim.abi import xen_pv as pv

START_INFO_MFN_LIST = 104
PTE_P_RW_A = 0x23


def mfn_of(label: str, dest: str) -> str:
    """Assembly leaving in ``dest`` the machine frame of ``label``'s page (start_info's mfn_list)."""
    return (f"lea {label}(%rip), %rax\n    shr $12, %rax\n    mov {START_INFO_MFN_LIST}(%r15), %rcx\n    "
            f"mov (%rcx,%rax,8), {dest}\n    ")


def update_va_mapping(va: str, pte: str, store: int) -> str:
    return (f"lea {va}(%rip), %rdi\n    mov {pte}, %rsi\n    xor %edx, %edx\n    mov $14, %eax\n    syscall\n    "
            f"mov %rax, results+{8 * store}(%rip)\n    ")


def call_alias(store: int) -> str:
    return f"lea alias(%rip), %rax\n    call *%rax\n    mov %rax, results+{8 * store}(%rip)\n    "


def test_code_overwritten_by_the_host_runs_new_through_a_mapping_other_than_its_address():
    source = (mfn_of("old_code", "%r12") + mfn_of("new_code", "%r13")
              + "mov %r12, copy+8(%rip)\n    mov %r13, copy+16(%rip)\n    "
              + f"mov %r12, %r14\n    shl $12, %r14\n    or ${PTE_P_RW_A:#x}, %r14\n    "
              + update_va_mapping("alias", "%r14", 0)             # old_code's frame, also at alias
              + "xor %r14d, %r14d\n    " + update_va_mapping("old_code", "%r14", 1)   # ... and only there
              + call_alias(2)
              + f"lea copy(%rip), %rdi\n    mov $1, %esi\n    xor %edx, %edx\n    mov ${x.DOMID_SELF}, %r10d\n    "
              + "mov $26, %eax\n    syscall\n    mov %rax, results+24(%rip)\n    "
              + call_alias(4)
              + DONE
              + f".balign 8\ncopy: .long {pv.MMUEXT_COPY_PAGE}, 0\n    .quad 0, 0\n"
              + ".balign 4096\nold_code: mov $1, %eax\n    ret\n"
              + ".balign 4096\nnew_code: mov $2, %eax\n    ret\n"
              + ".balign 4096\nalias: .skip 4096\n")
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(5)] == [0, 0, 1, 0, 2]
