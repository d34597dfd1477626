"""xen_pv as XTF's pv64 tests drive it: the iret hypercall's frame as Xen reads it."""

from __future__ import annotations

import pytest
from test_xen_pv_user import HANDLERS, SETUP, USER, result_at, run_pv

from hvsim.abi import xen_pv as pv


def test_pv_iret_hypercall_keeps_16_bits_of_cs_and_ss():
    # Xen copies the iret frame's CS and SS into cpu_user_regs' 16-bit fields: bits above are
    # ignored (XTF's pv64 tests enter user mode with such a frame).
    setup = SETUP.replace("    push $0x202\n    push $0xe033\n",
                          "    push $0x202\n    mov $0x10000e033, %rbx\n    push %rbx\n")
    assert setup != SETUP
    result, m, symbols = run_pv(setup + HANDLERS + USER)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 6) == 41                   # the user's syscall reached the kernel


@pytest.mark.parametrize("viopl", [0, 3])
def test_user_mode_cli_and_sti_are_no_ops_at_viopl_3_and_gp_below(viopl):
    # XTF pv-iopl: Xen's iopl_ok compares the virtual IOPL (PHYSDEVOP_set_iopl) with the virtual
    # CPL, 3 in user mode; when it holds, the emulator completes cli/sti without touching anything.
    from test_xen_pv_user import FRAME_TO_RESULTS, run_user

    set_iopl = (f"main:\n    push ${viopl}\n    mov $33, %eax\n"
                f"    mov ${pv.PHYSDEVOP_set_iopl}, %edi\n    mov %rsp, %rsi\n    syscall\n    pop %rbx\n")
    setup = SETUP.replace("main:\n", set_iopl)
    assert setup != SETUP
    result, m, symbols = run_user("user_cli:\n    cli\n    sti\n    mov $41, %eax\n    syscall\n    hlt\n",
                                  setup=setup, handlers="gp_handler:\n" + FRAME_TO_RESULTS
                                  + "ud_handler:\nint80_handler:\n    hlt\n")
    assert result.stop.kind == "poweroff", result.stop
    if viopl == 3:
        assert result_at(m, symbols, 6) == 41                   # the user's syscall reached the kernel
    else:
        assert result_at(m, symbols, 14) == 0                   # #GP(0) ...
        assert result_at(m, symbols, 15) == symbols["user_cli"]           # ... at the user's cli
