"""The interrupt and hypercall fast paths against what they replace: invalid-opcode traps answered
by a direct handler registered per opcode (before ``hvsim_trap``, which still sees every other
trap), xen_pvh's hypercalls through it, and RAM mapped in the engine cut at the VGA text window so
the chipset takes the window without splitting a large region."""

from __future__ import annotations

import pytest

from guestcode import run_raw

from hvsim import MachineConfig, hookimpl
from hvsim.abi import xen as x
from hvsim.core.devices.vga_text import TEXT_BASE, TEXT_SIZE
from hvsim.core.machine import _engine_regions

VMCALL_LOOP = ("    mov $3, %ecx\n1:  vmcall\n    dec %ecx\n    jnz 1b\n    ud2\n    hlt\n")


class DirectHandler:
    """Registers a handler for ``vmcall`` in setup; answers ``answer`` after recording the trap."""

    def __init__(self, answer):
        self.seen, self.answer = [], answer

    def handle(self, machine, trap, bits):
        self.seen.append((trap.kind, trap.rip, trap.length, trap.code[:trap.length], bits))
        if self.answer:
            machine.set_rip(trap.rip + trap.length)
        return self.answer

    @hookimpl
    def hvsim_setup(self, machine, image, config, options):
        machine.traps.add_opcode_handler(x.VMCALL, self.handle)
        return None


class HookRecorder:
    def __init__(self):
        self.seen = []

    @hookimpl
    def hvsim_trap(self, machine, trap):
        if trap.kind != "invalid-opcode":
            return None
        self.seen.append(trap.code[:trap.length])
        if trap.code[:3] == x.VMCALL:
            machine.set_rip(trap.rip + trap.length)
            return True
        return None


def test_a_direct_handler_takes_its_opcode_and_the_hook_the_rest():
    direct, hook = DirectHandler(True), HookRecorder()
    result, m, symbols = run_raw(VMCALL_LOOP, plugins=[hook, direct])
    # vmcall three times through the handler, then ud2: not its opcode, so the hook sees it, and
    # with nobody answering it is #UD through the IDT (no gate here: a triple fault)
    assert [s[0] for s in direct.seen] == ["invalid-opcode"] * 3
    assert {s[2:] for s in direct.seen} == {(3, x.VMCALL, 64)}
    assert hook.seen == [b"\x0f\x0b"]
    assert result.stop.kind == "triple-fault", result.stop


def test_a_handler_that_declines_leaves_the_trap_to_the_hook():
    direct, hook = DirectHandler(None), HookRecorder()
    result, m, _ = run_raw(VMCALL_LOOP, plugins=[hook, direct])
    assert len(direct.seen) == 3 and hook.seen == [x.VMCALL] * 3 + [b"\x0f\x0b"]
    assert result.stop.kind == "triple-fault", result.stop


def test_a_handler_in_32_bit_code_is_told_so():
    direct = DirectHandler(True)
    run_raw(VMCALL_LOOP, bits=32, plugins=[direct])
    assert {s[4] for s in direct.seen} == {32} and len(direct.seen) == 3


def test_one_handler_per_opcode():
    class Twice(DirectHandler):
        @hookimpl
        def hvsim_setup(self, machine, image, config, options):
            machine.traps.add_opcode_handler(x.VMCALL, self.handle)
            with pytest.raises(ValueError, match="already"):
                machine.traps.add_opcode_handler(x.VMCALL, self.handle)
            with pytest.raises(ValueError):
                machine.traps.add_opcode_handler(b"", self.handle)
            self.checked = True
    twice = Twice(True)
    run_raw(VMCALL_LOOP, plugins=[twice])
    assert twice.checked and len(twice.seen) == 3


@pytest.mark.parametrize("backed, expected", [
    ([(0, 0x2000_0000)], [(0, TEXT_BASE), (TEXT_BASE, TEXT_SIZE), (TEXT_BASE + TEXT_SIZE, 0x2000_0000 - TEXT_BASE - TEXT_SIZE)]),
    ([(0, 0x9F000), (0x10_0000, 0x100_0000)], [(0, 0x9F000), (0x10_0000, 0x100_0000)]),     # the window is not RAM
    ([(TEXT_BASE, TEXT_SIZE)], [(TEXT_BASE, TEXT_SIZE)]),
])
def test_engine_regions_are_the_ram_cut_at_the_window(backed, expected):
    regions = _engine_regions(backed)
    assert regions == expected
    assert sum(n for _, n in regions) == sum(n for _, n in backed)


def test_the_pc_chipset_takes_the_vga_window_out_of_ram():
    from hvsim.api import Run
    from hvsim.kernels import probe_path
    prepared = Run("bare_metal", probe_path(), MachineConfig(memory="512M"))
    mapped = sorted((start, end + 1 - start) for start, end, _ in prepared.machine.uc.mem_regions())
    assert (0, TEXT_BASE) in mapped and (TEXT_BASE + TEXT_SIZE, 0x2000_0000 - TEXT_BASE - TEXT_SIZE) in mapped
    assert not prepared.machine.memory.contains(TEXT_BASE, 1)
    result = prepared.execute()
    assert result.stop.kind == "poweroff", result.stop
