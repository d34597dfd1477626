"""The port I/O hooks as the engine calls them directly (``TrapDispatcher._in_entry`` and
``_out_entry``, no binding wrapper): what a guest reads from the 8254 through them is what the
Python device answers at the same guest time, a device's exception is a ``host-error`` stop with its
traceback kept, and Ctrl-C under the default SIGINT handler reaches the caller of ``execute``."""

from __future__ import annotations

import struct

import pytest
from guestcode import DATA, run_raw

from hvsim import hookimpl
from hvsim.core.devices.line import IrqLine
from hvsim.core.devices.pit import Pit8254

READS = 300
RECORD = 16                 # bytes the guest stores per iteration

# Counter 0 in mode 2 (rate generator, count 0x2e9c) and counter 2 in mode 0 with its gate on (Linux's TSC calibration), then per iteration, with the
# guest time taken by rdtsc in the same block: latch counter 0 and read it (two bytes), read counter
# 2 unlatched (LSB, MSB), a 16-bit read at 0x42 (two byte cycles: counter 2 and the write-only 0x43),
# a read-back of counter 0's status, and port 0x61 (the refresh toggle and counter 2's OUT); then a
# delay of 200 blocks (2 us of guest time).
PIT_READER = f"""
    cli
    mov ${DATA}, %rdi
    rdtsc
    mov %eax, (%rdi)
    mov $0x34, %al
    out %al, $0x43
    mov $0x9c, %al
    out %al, $0x40
    mov $0x2e, %al
    out %al, $0x40
    mov $0x01, %al
    out %al, $0x61
    mov $0xb0, %al
    out %al, $0x43
    mov $0x40, %al
    out %al, $0x42
    mov $0x01, %al
    out %al, $0x42
    add ${RECORD}, %rdi
    mov ${READS}, %ecx
1:  rdtsc
    mov %eax, (%rdi)
    xor %eax, %eax
    out %al, $0x43
    inb $0x40, %al
    mov %al, 4(%rdi)
    inb $0x40, %al
    mov %al, 5(%rdi)
    inb $0x42, %al
    mov %al, 6(%rdi)
    inb $0x42, %al
    mov %al, 7(%rdi)
    inw $0x42, %ax
    mov %ax, 8(%rdi)
    mov $0xe2, %al
    out %al, $0x43
    inb $0x40, %al
    mov %al, 10(%rdi)
    inb $0x61, %al
    mov %al, 11(%rdi)
    add ${RECORD}, %rdi
    mov $200, %edx
2:  dec %edx
    jnz 2b
    dec %ecx
    jnz 1b
    hlt
"""


class FixedClock:
    """The reference device's clock: set by the test to each recorded guest time."""

    def __init__(self):
        self.t = 0

    def now(self) -> int:
        return self.t

    def schedule(self, at, callback):
        return None          # counter 0's output edges are not what is compared here


def test_pit_reads_through_the_direct_hook_are_the_devices_answers():
    result, m, _ = run_raw(PIT_READER)
    assert result.stop.kind == "halt", result.stop
    data = m.memory.read(DATA, RECORD * (READS + 1))
    reference = Pit8254(FixedClock(), irq0=IrqLine())
    # the programming, at the guest time recorded before it
    reference.clock.t = struct.unpack_from("<I", data)[0]
    for port, value in ((0x43, 0x34), (0x40, 0x9C), (0x40, 0x2E), (0x61, 0x01),
                        (0x43, 0xB0), (0x42, 0x40), (0x42, 0x01)):
        reference.write(port, 1, value)
    seen, expected, times = [], [], []
    for i in range(1, READS + 1):
        record = data[i * RECORD:(i + 1) * RECORD]
        reference.clock.t = struct.unpack_from("<I", record)[0]
        times.append(reference.clock.t)
        reference.write(0x43, 1, 0x00)
        expected.append((reference.read(0x40, 1), reference.read(0x40, 1), reference.read(0x42, 1),
                         reference.read(0x42, 1), reference.read(0x42, 2), None, None))
        reference.write(0x43, 1, 0xE2)
        expected[-1] = expected[-1][:5] + (reference.read(0x40, 1), reference.read(0x61, 1))
        seen.append(tuple(record[4:8]) + (struct.unpack_from("<H", record, 8)[0], record[10], record[11]))
    assert seen == expected
    # the comparison means something: the counters moved, counter 2 reached its terminal count
    # (OUT, port 0x61 bit 5, went high) and the refresh toggle flipped
    assert times[-1] - times[0] > 2 * 0x140 * 1_000_000_000 // 1_193_182
    assert len({r[2] for r in seen}) > READS // 2
    assert {r[6] & 0x20 for r in seen} == {0, 0x20}
    assert {r[6] & 0x10 for r in seen} == {0, 0x10}
    assert {r[5] & 0x7F for r in seen} == {0x34}        # status: LSB-then-MSB, mode 2, binary


class FaultyDevice:
    """A device on port 0x510 whose second access raises ``exc``."""

    ports = (0x510,)

    def __init__(self, exc):
        self.exc, self.accesses = exc, 0

    def _access(self):
        self.accesses += 1
        if self.accesses == 2:
            raise self.exc

    def read(self, port, size):
        self._access()
        return 0

    def write(self, port, size, value):
        self._access()

    @hookimpl
    def hvsim_setup(self, machine, image, config, options):
        machine.ports.attach(self)


IN_LOOP = "    mov $3, %ecx\n1:  mov $0x510, %dx\n    in %dx, %al\n    dec %ecx\n    jnz 1b\n    hlt\n"
OUT_LOOP = "    mov $3, %ecx\n1:  mov $0x510, %dx\n    out %al, %dx\n    dec %ecx\n    jnz 1b\n    hlt\n"


@pytest.mark.parametrize("loop, where", [(IN_LOOP, "on_in"), (OUT_LOOP, "on_out")])
def test_a_device_exception_is_a_host_error_stop_with_its_traceback(loop, where):
    device = FaultyDevice(ValueError("device bug"))
    result, _, _ = run_raw(loop, plugins=[device])
    assert device.accesses == 2
    assert result.stop.kind == "host-error", result.stop
    assert f"ValueError in {where}: device bug" in result.stop.detail
    assert "device bug" in result.extra["host_traceback"]


@pytest.mark.parametrize("loop", [IN_LOOP, OUT_LOOP])
def test_ctrl_c_in_a_device_reaches_the_caller(loop):
    device = FaultyDevice(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_raw(loop, plugins=[device])
    assert device.accesses == 2


def test_an_unclaimed_port_reads_all_ones_and_is_counted():
    source = ("    mov $0x1234, %dx\n    in %dx, %al\n    mov %al, DATA_AT\n    in %dx, %ax\n"
              "    mov %ax, DATA_AT+2\n    in %dx, %eax\n    mov %eax, DATA_AT+4\n    hlt\n").replace("DATA_AT", str(DATA))
    result, m, _ = run_raw(source)
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read(DATA, 8) == b"\xff\x00\xff\xff\xff\xff\xff\xff"
    assert result.extra["unclaimed_ports"] == {"0x1234": 3}


def test_a_port_that_stops_the_run_freezes_the_rip_after_its_instruction_after_a_delivered_exception():
    """Delivering the int3 writes RIP from a hook outside any block, which leaves the engine's "PC was
    set" flag standing (engine.py sync_pc_flag); without the block hook clearing it, the exit port's
    hook saw the RIP of the handler's first instruction and froze the stop state there."""
    source = """
.globl _start
_start:
    int3
    hlt
handler:
    nop
    mov $0x501, %dx
    xor %eax, %eax
    nop
    out %al, %dx
after_out:
    nop
    hlt
"""
    result, _, symbols = run_raw(source, gates={3: "handler"})
    assert result.stop.kind == "poweroff", result.stop
    assert result.state.registers["rip"] == symbols["after_out"]
