"""The invalid-opcode hook as the engine calls it directly (``TrapDispatcher._invalid_entry``, no
binding wrapper): a handler's exception is a ``host-error`` stop with its traceback kept, Ctrl-C
under the default SIGINT handler reaches the caller of ``execute`` as the binding would raise it,
and a xen_pvh hypercall loop leaves one ``Call`` per hypercall in the run's JSON."""

from __future__ import annotations

import json

import pytest
from guestcode import run_raw

from hvsim import MachineConfig, hookimpl
from hvsim.abi import xen as x
from hvsim.api import Run

from test_xen_pvh_bad_input import pvh_image

VMCALL_LOOP = "    mov $3, %ecx\n1:  vmcall\n    dec %ecx\n    jnz 1b\n    hlt\n"


class Raising:
    """A direct handler for ``vmcall`` that raises ``exc`` on its second trap."""

    def __init__(self, exc):
        self.exc, self.seen = exc, 0

    def handle(self, machine, trap, bits):
        self.seen += 1
        if self.seen == 2:
            raise self.exc
        machine.set_rip(trap.rip + trap.length)
        return True

    @hookimpl
    def hvsim_setup(self, machine, image, config, options):
        machine.traps.add_opcode_handler(x.VMCALL, self.handle)


def test_a_handler_exception_is_a_host_error_stop_with_its_traceback():
    plugin = Raising(ValueError("handler bug"))
    result, m, _ = run_raw(VMCALL_LOOP, plugins=[plugin])
    assert plugin.seen == 2
    assert result.stop.kind == "host-error", result.stop
    assert "ValueError in on_invalid: handler bug" in result.stop.detail
    assert "handler bug" in result.extra["host_traceback"]


def test_ctrl_c_in_a_handler_reaches_the_caller():
    plugin = Raising(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_raw(VMCALL_LOOP, plugins=[plugin])
    assert plugin.seen == 2


@pytest.mark.parametrize("insn", ["vmcall", "vmmcall"])
def test_every_hypercall_of_a_loop_is_in_the_run_json(insn):
    n = 50
    image, _ = pvh_image(f"""
    .globl _start
_start:
    mov ${n}, %esi
1:  mov $17, %eax                     /* xen_version(XENVER_version) */
    xor %ebx, %ebx
    {insn}
    mov %eax, %edi
    mov $29, %eax                     /* sched_op(SCHEDOP_yield): -ENOSYS would be named too */
    mov $0, %ebx
    {insn}
    dec %esi
    jnz 1b
    hlt
""")
    prepared = Run("xen_pvh", image, MachineConfig(memory="64M", timeout=10))
    result = prepared.execute()
    assert result.stop.kind == "halt", result.stop
    assert prepared.machine.reg("rdi") == 4 << 16 | 17
    calls = [e for e in json.loads(result.to_json())["events"]
             if e["kind"] == "Call" and e["interface"] == "xen-hypercall"]
    assert len(calls) == 2 * n
    assert {(c["name"], c["result"]) for c in calls[0::2]} == {("xen_version.version", 4 << 16 | 17)}
    assert {c["name"] for c in calls[1::2]} == {"sched_op.yield"}
    assert [c["seq"] for c in calls] == sorted(c["seq"] for c in calls)
    assert prepared.machine.plugin_state["xen_pvh"].calls == 2 * n


class RipWitness:
    """A direct handler for ``vmcall`` that records the trap's RIP beside the register's, and the
    address of the loop's vmcall the assembler placed."""

    def __init__(self):
        self.seen = []

    def handle(self, machine, trap, bits):
        self.seen.append((trap.rip, machine.reg("rip"), trap.code[:3], bits))
        machine.set_rip(trap.rip + trap.length)
        return True

    @hookimpl
    def hvsim_setup(self, machine, image, config, options):
        machine.traps.add_opcode_handler(x.VMCALL, self.handle)


@pytest.mark.parametrize("bits", [32, 64])
def test_the_trap_rip_read_from_the_context_is_the_register(bits):
    witness = RipWitness()
    result, m, symbols = run_raw("    mov $3, %ecx\nhere:\n    vmcall\n    dec %ecx\n    jnz here\n    hlt\n",
                                 bits=bits, plugins=[witness])
    assert result.stop.kind == "halt", result.stop
    assert witness.seen == [(symbols["here"], symbols["here"], x.VMCALL, bits)] * 3
