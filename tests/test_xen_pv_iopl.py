"""xen_pv: port I/O against the virtual IOPL (Xen's pv/emul-priv-op.c guest_io_okay).  A PV kernel
runs at virtual CPL 1 and its user space at 3; an ``in``/``out`` above the virtual IOPL is #GP(0) at
the I/O instruction, with nothing done on the port and the registers as they were; at or below it the
access goes on to Xen's emulator, which reaches the hardware only for the ports the domain is
permitted (none for a domU: port 0x80 is answered by Xen, counted in ``ports.answered``)."""

from __future__ import annotations

from test_xen_pv_bad_input import DONE, hypercall, result_at, run_pv, trap_table
from test_xen_pv_user import SETUP, run_user

from hvsim.abi import xen_pv as pv
from hvsim.core.events import Fault

IRET_PUSH = "    push $0xe02b                /* iret_context"


def answered(machine) -> dict[int, int]:
    """The accesses Xen completed without a device (ioports.py), per port."""
    return dict(machine.plugin_state["xen_pv"].cpu.ports.answered)


def set_iopl(level: int) -> str:
    return hypercall(33, pv.PHYSDEVOP_set_iopl, f"iopl_{level}")


KERNEL = f"""
    jmp main
{trap_table(gp_handler=13)}iopl_1: .long 1
gp_handler:                     /* frame: rcx r11 err rip ...: record, then carry on */
    mov 16(%rsp), %rbx
    mov %rbx, results+8(%rip)
    mov 24(%rsp), %rbx
    mov %rbx, results+16(%rip)
    mov %rax, results+24(%rip)
    jmp at_iopl_1
main:
    {hypercall(0, "traps", store=0)}
    mov $0x1234, %eax
kern_in:
    inb $0x80, %al              /* vIOPL 0 < CPL 1: #GP, EAX untouched */
    hlt
at_iopl_1:
    {set_iopl(1)}
    mov %rax, results+32(%rip)
    mov $0x55, %eax
    outb %al, $0x80             /* vIOPL 1: reaches the port */
    movq $1, results+40(%rip)
    {DONE}
"""


def test_kernel_port_io_faults_at_viopl_0_and_proceeds_at_viopl_1():
    result, m, symbols = run_pv(KERNEL)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 0) == 0
    assert result_at(m, symbols, 1) == 0                               # #GP(0)
    assert result_at(m, symbols, 2) == symbols["kern_in"]             # at the in, not past it
    assert result_at(m, symbols, 3) & 0xFFFF_FFFF == 0x1234           # the in wrote nothing
    assert result_at(m, symbols, 4) == 0 and result_at(m, symbols, 5) == 1
    assert answered(m) == {0x80: 1}                                   # only the allowed out
    faults = [e for e in m.events if isinstance(e, Fault) and e.vector == 13]
    assert [(f.rip, f.error_code, f.delivered) for f in faults] == [(symbols["kern_in"], 0, True)]


USER_OUT = """
    mov $0x77, %eax
user_out:
    outb %al, $0x80
    int $0x81                   /* DPL 0 gate: #GP(0x81 * 8 + 2), reached only past the out */
    hlt
"""
GP_TO_RESULTS = ("gp_handler:\n    mov 16(%rsp), %rbx\n    mov %rbx, results+112(%rip)\n"
                 "    mov 24(%rsp), %rbx\n    mov %rbx, results+120(%rip)\n" + DONE
                 + "ud_handler:\nint80_handler:\n    hlt\niopl_1: .long 1\niopl_3: .long 3\n")


def run_user_at(level: int):
    setup = SETUP if level == 0 else SETUP.replace(IRET_PUSH, "    " + set_iopl(level) + IRET_PUSH.lstrip(" "), 1)
    return run_user(USER_OUT, handlers=GP_TO_RESULTS, setup=setup)


def test_user_port_io_faults_below_viopl_3_and_reaches_the_port_at_3():
    for level in (0, 1):
        result, m, symbols = run_user_at(level)
        assert result.stop.kind == "poweroff", (level, result.stop)
        assert result_at(m, symbols, 14) == 0, level                   # #GP(0) from the out
        assert result_at(m, symbols, 15) == symbols["user_out"], level
        assert 0x80 not in answered(m), level
    result, m, symbols = run_user_at(3)
    assert result.stop.kind == "poweroff", result.stop
    assert result_at(m, symbols, 14) == 0x81 * 8 + 2                   # the out went through
    assert answered(m) == {0x80: 1}


PORTS = f"""
    {set_iopl(1)}
    mov $0x3fd, %dx
    inb %dx, %al                /* COM1's line status: the machine's UART is there */
    mov %al, results+8(%rip)
    inb $0x21, %al              /* the master 8259's mask */
    mov %al, results+16(%rip)
    mov $0x8c, %al
    outb %al, $0x70             /* RTC index */
    inb $0x70, %al
    mov %al, results+24(%rip)
    mov $0x80000000, %eax
    mov $0xcf8, %dx
    outl %eax, %dx              /* PCI config address */
    inl %dx, %eax
    mov %eax, results+32(%rip)
    mov $0x608, %dx
    inl %dx, %eax               /* the ACPI PM timer */
    mov %eax, results+40(%rip)
    {DONE}
iopl_1: .long 1
"""


def test_a_domu_reaches_no_port_and_dom0_all_but_xens():
    """Xen's guest_io_read: a domU is permitted no port, so COM1 and the 8259 read all ones, its RTC
    index and PCI config address writes are latched and read back; dom0 reaches the machine's UART,
    RTC and PCI config address, while the 8259 and the ACPI PM timer stay Xen's (all ones)."""
    domu, m, symbols = run_pv(PORTS)
    assert domu.stop.kind == "poweroff", domu.stop
    assert [result_at(m, symbols, i) & 0xFF for i in (1, 2, 3)] == [0xFF, 0xFF, 0x0C]
    assert result_at(m, symbols, 4) & 0xFFFF_FFFF == 0x8000_0000
    assert result_at(m, symbols, 5) & 0xFFFF_FFFF == 0xFFFF_FFFF
    assert answered(m) == {0x3FD: 1, 0x21: 1, 0x70: 2, 0xCF8: 2, 0x608: 1}
    dom0, m0, symbols0 = run_pv(PORTS, dom0=True)
    assert dom0.stop.kind == "poweroff", dom0.stop
    assert result_at(m0, symbols0, 1) & 0xFF == 0x60                  # THRE and TEMT: an idle 16550A
    assert result_at(m0, symbols0, 2) & 0xFF == 0xFF
    assert result_at(m0, symbols0, 5) & 0xFFFF_FFFF == 0xFFFF_FFFF
    assert answered(m0) == {0x21: 1, 0x608: 1}
