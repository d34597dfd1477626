"""The machine as guests see it: exception delivery through their own IDT, traps answered by
plugins, and every way a run stops.  Guests are a few lines of assembly (tests/guestcode.py)."""

from __future__ import annotations

import struct


from hvsim import hookimpl
from hvsim.core.engine_state import calibrate

from guestcode import DATA, run_raw

PF_HANDLER_64 = """
pf_handler:                       /* map the faulting 2 MiB page at 0x40000000+ to phys 0x200000 */
    pop %r8                       /* error code */
    mov %r8, 0x80010(,%r10,8)
    mov %cr2, %r9
    mov %r9, 0x80020(,%r10,8)
    inc %r10
    movq $0x200083, 0x10000 + 0x1000*2 + 8   /* PD of the 1 GiB at 0x40000000: first 2 MiB entry */
    iretq
"""


def u64(machine, address):
    return machine.memory.read_u64(address)


def test_page_fault_reaches_the_guest_handler_with_error_code_and_cr2():
    # The identity map covers 1 GiB; 0x40000000 is not mapped until the handler maps it.
    source = """
    xor %r10, %r10
    movq $0x1234, 0x40000008      /* write, not present: error code 2 */
    movq 0x40000008, %rax
    mov %rax, 0x80000
    hlt
    """ + PF_HANDLER_64.replace("0x10000 + 0x1000*2 + 8", "pd_slot")
    # The PD covering 1-2 GiB does not exist; the handler installs it in the PDPT instead.
    source = source.replace("movq $0x200083, pd_slot", "movq $0x200083, 0x50000\n    movq $0x50003, 0x11008")
    result, m, _ = run_raw(source, gates={14: "pf_handler"})
    assert result.stop.kind == "halt", result.stop
    assert u64(m, DATA) == 0x1234                       # the retried store and the load worked
    assert u64(m, DATA + 0x10) == 2 and u64(m, DATA + 0x20) == 0x40000008
    faults = [e for e in result.events if e.kind == "Fault"]
    assert [(f.vector, f.error_code, f.cr2, f.delivered) for f in faults] == [(14, 2, 0x40000008, True)]


def test_second_page_fault_is_not_a_double_fault():
    # The engine remembers the first #PF; left alone, the second becomes #DF (unicorn-notes §3).
    source = """
    xor %r10, %r10
    movq 0x40000000, %rax         /* read, not present: error code 0 */
    movq $0, 0x50000              /* unmap again, flush */
    mov %cr3, %rax
    mov %rax, %cr3
    movq $5, 0x40000000           /* write: error code 2 */
    hlt
    """ + PF_HANDLER_64.replace("movq $0x200083, 0x10000 + 0x1000*2 + 8", "movq $0x200083, 0x50000\n    movq $0x50003, 0x11008")
    result, m, _ = run_raw(source, gates={14: "pf_handler"})
    assert result.stop.kind == "halt", result.stop
    faults = [(e.vector, e.error_code) for e in result.events if e.kind == "Fault"]
    assert faults == [(14, 0), (14, 2)]


def test_invalid_opcode_and_breakpoint_are_delivered_through_the_idt():
    source = """
    ud2
    int3
    hlt
ud_handler:
    incq 0x80000
    addq $2, (%rsp)               /* return past ud2 */
    iretq
bp_handler:
    incq 0x80008
    iretq                         /* int3 is a trap: the frame already points past it */
    """
    result, m, _ = run_raw(source, gates={6: "ud_handler", 3: "bp_handler"})
    assert result.stop.kind == "halt", result.stop
    assert (u64(m, DATA), u64(m, DATA + 8)) == (1, 1)
    assert [e.name for e in result.events if e.kind == "Fault"] == ["#UD", "#BP"]


def test_protected_mode_guest_gets_8_byte_gates():
    source = """
    mov $0x8ff00, %esp
    xor %eax, %eax
    div %eax                      /* #DE */
    movl $0x77, 0x80008
    hlt
de_handler:
    incl 0x80000
    addl $2, (%esp)               /* skip the 2-byte div */
    iret
    """
    result, m, _ = run_raw(source, bits=32, gates={0: "de_handler"})
    assert result.stop.kind == "halt", result.stop
    assert result.state.mode == "protected32"
    assert m.memory.read_u32(DATA) == 1 and m.memory.read_u32(DATA + 8) == 0x77


def test_fault_without_idt_is_a_triple_fault_with_the_instruction_shown():
    result, _, _ = run_raw("movq 0x40000000, %rax\n hlt")
    assert result.stop.kind == "triple-fault" and result.exit_status == 40
    assert "#PF" in result.stop.detail and "IDT limit" in result.stop.detail
    assert result.state.instruction.startswith("mov rax, qword ptr")
    assert result.state.registers["cr2"] == 0x40000000


def test_access_to_a_hole_in_guest_physical_memory_stops_with_the_address():
    # 64 MiB of RAM; 128 MiB is inside the guest's identity map but no RAM backs it.
    result, _, _ = run_raw("mov $0x8000020, %rax\n movl (%rax), %ebx\n hlt")
    assert result.stop.kind == "bad-access" and result.exit_status == 42
    assert "read of 4 byte(s) at guest-physical 0x8000020" in result.stop.detail


def test_runaway_guest_stops_at_the_timeout_and_resumes_exactly():
    result, _, symbols = run_raw("spin: jmp spin", timeout=0.3)
    assert result.stop.kind == "timeout" and result.exit_status == 30
    assert result.state.registers["rip"] == symbols["spin"]


def test_instruction_budget_is_exact():
    source = "mov $100, %rcx\nloop1: dec %rcx\n jnz loop1\n hlt"
    result, _, _ = run_raw(source, max_instructions=51)      # mov + 25 x (dec, jnz)
    assert result.stop.kind == "budget" and result.stats.instructions == 51
    assert result.state.registers["rcx"] == 75


def test_hlt_with_interrupts_on_and_nothing_to_wake_it_is_idle():
    result, _, _ = run_raw("sti\n hlt")
    assert result.stop.kind == "idle" and result.exit_status == 21


def test_exit_port_code():
    result, _, _ = run_raw("mov $3, %al\n mov $0x501, %dx\n outb %al, %dx\n hlt")
    assert (result.stop.kind, result.stop.code, result.exit_status) == ("exit", 3, 1)


class VmcallAnswerer:
    """A plugin answering ``vmcall`` (which the engine reports as an invalid opcode)."""

    @hookimpl
    def hvsim_trap(self, machine, trap):
        if trap.kind == "invalid-opcode" and trap.code[:3] == b"\x0f\x01\xc1":
            machine.set_reg("rax", machine.reg("rax") + 1000)
            machine.set_rip(trap.rip + trap.length)
            return True
        return None


def test_plugin_answers_vmcall_and_cpuid():
    class CpuidSignature:
        @hookimpl
        def hvsim_cpuid(self, machine, leaf, subleaf):
            return (0x40000001, 0x11111111, 0x22222222, 0x33333333) if leaf == 0x40000000 else None

    import guestcode
    from hvsim import MachineConfig, get_plugin_manager
    from hvsim.api import Run

    code, _ = guestcode.assemble("""
    mov $5, %rax
    vmcall
    mov %rax, 0x80000
    mov $0x40000000, %eax
    cpuid
    mov %ebx, 0x80008
    xor %eax, %eax
    cpuid                          /* native leaf 0 still answers */
    mov %ebx, 0x80010
    hlt
    """)
    pm = get_plugin_manager(load_entrypoints=False,
                            plugins=[guestcode.RawEnv(), VmcallAnswerer(), CpuidSignature()])
    prepared = Run("raw", code, MachineConfig(memory="64M", timeout=10), pm=pm)
    result = prepared.execute()
    m = prepared.machine
    assert result.stop.kind == "halt", result.stop
    assert u64(m, DATA) == 1005
    assert m.memory.read_u32(DATA + 8) == 0x11111111
    assert m.memory.read(DATA + 0x10, 4) == b"Auth"      # the CPU model is AMD EPYC (core/engine.py)
    assert m.native_cpuid(0)[1] == struct.unpack("<I", b"Auth")[0]


def test_plugin_exception_ends_the_run_as_host_error_keeping_the_trace():
    class Broken:
        @hookimpl
        def hvsim_port_io(self, machine, access):
            raise RuntimeError("plugin bug")

    import guestcode
    from hvsim import MachineConfig, get_plugin_manager
    from hvsim.api import Run

    code, _ = guestcode.assemble("movq $9, 0x80000\n mov $0x1234, %dx\n inb %dx, %al\n hlt")
    pm = get_plugin_manager(load_entrypoints=False, plugins=[guestcode.RawEnv(), Broken()])
    result = Run("raw", code, MachineConfig(memory="64M"), pm=pm).execute()
    assert result.stop.kind == "host-error" and "plugin bug" in result.stop.detail
    assert "RuntimeError" in result.extra["host_traceback"]
    assert result.to_json()                      # the result still serialises


def test_engine_fields_calibrate_on_this_unicorn():
    # Pins the engine behaviour exception delivery depends on: a changed unicorn fails here first.
    offsets = calibrate()
    assert len({offsets.old_exception, offsets.error_code, offsets.exception_is_int}) == 3


def test_plugin_can_wake_a_halted_guest():
    class Waker:
        def __init__(self):
            self.halts = 0

        @hookimpl
        def hvsim_trap(self, machine, trap):
            if trap.kind != "hlt" or self.halts == 2:
                return None
            self.halts += 1
            machine.set_reg("rbx", machine.reg("rbx") + 10)
            return True

    import guestcode
    from hvsim import MachineConfig, get_plugin_manager
    from hvsim.api import Run

    code, _ = guestcode.assemble("xor %rbx, %rbx\n again: hlt\n mov %rbx, 0x80000\n jmp again")
    waker = Waker()
    pm = get_plugin_manager(load_entrypoints=False, plugins=[guestcode.RawEnv(), waker])
    prepared = Run("raw", code, MachineConfig(memory="64M", timeout=10), pm=pm)
    result = prepared.execute()
    assert result.stop.kind == "halt" and waker.halts == 2
    assert u64(prepared.machine, DATA) == 20
