"""xen_pvh --xen-debug: Xen's forced emulation prefix (``ud2; .ascii "xen"``, a debug build booted
with hvm_fep) makes the next instruction run as Xen's emulator runs it, as XTF's fep test and its
"emulated" variants rely on; without the debug flavour the prefix is the #UD it is on a release
build.  Through the CLI too: ``--xen-debug`` is an option of xen_pv and xen_pvh alike."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_xen_pvh_bad_input import DATA, DONE, STACK, pvh_image

from hvsim import MachineConfig
from hvsim.api import Run

FEP = ".byte 0x0f, 0x0b, 0x78, 0x65, 0x6e\n    "      # ud2; .ascii "xen"
SOURCE = STACK + FEP + f"mov $7, %eax\n    mov %eax, {DATA:#x}\n    " + DONE


def run(debug: bool):
    image, _ = pvh_image(SOURCE)
    prepared = Run("xen_pvh", image, MachineConfig(memory="64M", timeout=10), options={"xen_debug": debug})
    return prepared.execute(), prepared.machine


def test_the_forced_emulation_prefix_runs_the_next_instruction_on_a_debug_xen():
    result, m = run(True)
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u32(DATA) == 7


def test_without_the_debug_flavour_the_prefix_is_invalid_opcode():
    result, m = run(False)
    assert result.stop.kind == "triple-fault", result.stop          # #UD, and the guest has no IDT
    assert m.memory.read_u32(DATA) == 0


@pytest.mark.parametrize("env", ["xen_pv", "xen_pvh", "bare_metal"])
def test_xen_debug_is_an_option_of_both_xen_environments(env, tmp_path):
    done = subprocess.run([sys.executable, "-m", "hvsim", "run", "--env", env, "--xen-debug", "--timeout", "20",
                           "--quiet"], capture_output=True, text=True, timeout=120)
    if env == "bare_metal":
        assert done.returncode == 2 and "--xen-debug is an option of the xen_pv and xen_pvh environments" \
            in done.stderr, done.stderr
    else:
        assert done.returncode == 0, done.stderr
