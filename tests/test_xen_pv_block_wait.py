"""xen_pv: a vCPU blocked in SCHEDOP_block still ends with the run: Ctrl-C (SIGINT) and the
wall-clock budget (--timeout) stop it while it waits, as they stop a guest that spins.

The guest arms a 1 ms periodic timer whose VIRQ_TIMER it never binds, so its events never wake the
vCPU: the wait skips guest time from tick to tick (an hour of guest time before hvsim would call it
idle) and only the run's end can cut it short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from test_xen_pv_bad_input import DONE, PROLOGUE, calls, hypercall, pv_image, run_pv

from hvsim.abi import xen as x

VCPU_OP, VCPUOP_set_periodic_timer = 24, 6
BLOCK_WITH_A_TICK_THAT_NEVER_WAKES = (
    hypercall(VCPU_OP, VCPUOP_set_periodic_timer, 0, "period", store=0)
    + hypercall(x.HYPERCALL_NUMBERS["console_io"], x.CONSOLEIO_WRITE, 3, "go", store=1)
    + hypercall(x.HYPERCALL_NUMBERS["sched_op"], x.SCHEDOP_BLOCK, 0, store=2)
    + DONE
    + "period: .quad 1000000\ngo: .ascii \"go\\n\"\n"
)


def test_the_wall_clock_budget_ends_a_block_wait():
    started = time.monotonic()
    result, m, _ = run_pv(BLOCK_WITH_A_TICK_THAT_NEVER_WAKES, dom0=True, timeout=1)
    assert result.stop.kind == "timeout", result.stop
    assert time.monotonic() - started < 30
    (block,) = calls(m, "sched_op.block")
    assert block.args.get("cut_short") and block.args["blocked_ns"] > 0
    assert calls(m, "vcpu_op.set_periodic_timer")[0].result == 0


def test_ctrl_c_ends_a_block_wait(tmp_path):
    image, _ = pv_image(PROLOGUE + BLOCK_WITH_A_TICK_THAT_NEVER_WAKES)
    (tmp_path / "block.elf").write_bytes(image)
    env = {k: v for k, v in os.environ.items() if k != "HVSIM_DEBUG"}
    process = subprocess.Popen([sys.executable, "-m", "hvsim", "run", "--env", "xen_pv", "--dom0", "block.elf",
                                "--timeout", "120", "--json", "run.json"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert process.stdout.readline() == b"go\n"     # written just before SCHEDOP_block
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("Ctrl-C did not end the run while the vCPU was blocked")
    assert process.returncode == 130, stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["stop"]["kind"] == "interrupted"
