"""The backend of a Xen PV console ring (io/console.h, ``struct xencons_interface``).

The guest writes bytes into ``out`` and advances ``out_prod``, then notifies the console event
channel; the backend copies ``out[out_cons..out_prod)`` to the console and advances ``out_cons``.
hvsim drains on every notification, on ``sched_op`` yield/block, and when the run ends, so a guest
never waits on a full ring.  Input (``in``) stays empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..abi import xen as x
from ..core.devices import ConsoleSink

if TYPE_CHECKING:
    from ..core.machine import Machine

RING_INDEX_MASK = 0xFFFF_FFFF


class ConsoleRing:
    def __init__(self, machine: "Machine", page: int, channel: str = "hvc0"):
        self.m = machine
        self.page = page
        self.sink = ConsoleSink(machine, channel)
        self.bytes_drained = 0
        machine.add_sink(self)
        machine.memory.fill(page, 0x1000)

    def drain(self) -> int:
        """Copy what the guest produced to the console; returns the byte count."""
        mem = self.m.memory
        cons = mem.read_u32(self.page + x.CONS_OUT_CONS)
        prod = mem.read_u32(self.page + x.CONS_OUT_PROD)
        count = (prod - cons) & RING_INDEX_MASK
        if count == 0:
            return 0
        if count > x.CONS_OUT_SIZE:       # a guest bug; Xen's backend takes the ring size too
            self.m.note(f"xen console ring: out_prod - out_cons = {count} exceeds the ring; reading {x.CONS_OUT_SIZE}")
            count = x.CONS_OUT_SIZE
            cons = (prod - count) & RING_INDEX_MASK
        ring = mem.read(self.page + x.CONS_OUT, x.CONS_OUT_SIZE)
        start = cons % x.CONS_OUT_SIZE
        data = (ring[start:] + ring[:start])[:count]
        self.sink.put(data)
        mem.write_u32(self.page + x.CONS_OUT_CONS, prod)
        self.bytes_drained += count
        return count

    def flush(self) -> None:
        self.drain()
        self.sink.flush()
