"""Debian's Linux 6.1 finds hvsim's 8042 as it finds QEMU's: through the PNP devices of the DSDT
(PNP0303 keyboard, PNP0F13 aux port), then probes both ports, and the AT keyboard driver's reset
and identify get the keyboard's answers.  The aux port has no mouse on it (hvsim's 8042 answers a
byte sent to it with a timeout, as a controller with nothing plugged in does), so no mouse appears.

Cost on a 2-core machine: one boot to /init, ~30 s.
"""

from __future__ import annotations

import pytest

from test_linux_init import hvsim_run, vmlinux  # noqa: F401  (the fixture)

pytestmark = pytest.mark.linux


@pytest.mark.parametrize("env", ["bare_metal", "kvm_pvh"])
def test_linux_probes_the_8042_the_dsdt_declares_and_finds_the_keyboard(vmlinux, env):  # noqa: F811
    done, console = hvsim_run("--env", env, str(vmlinux))
    console = console.replace("\r\n", "\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "i8042: PNP: PS/2 Controller [PNP0303:KBD,PNP0f13:MOU] at 0x60,0x64 irq 1,12" in console
    assert "No PS/2 controller found" not in console
    assert "serio: i8042 KBD port at 0x60,0x64 irq 1\n" in console
    assert "serio: i8042 AUX port at 0x60,0x64 irq 12\n" in console
    assert "input: AT Translated Set 2 keyboard as /devices/platform/i8042/serio0/input/input0" in console
    assert "Mouse" not in console and "atkbd serio0" not in console     # no mouse; no keyboard complaint
    irqs = [line.split() for line in console.splitlines() if line.startswith("irq: ")]
    assert [i[1] for i in irqs if i[-1] == "i8042"] == ["1", "12"]
