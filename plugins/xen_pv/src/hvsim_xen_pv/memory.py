"""The PV domain's memory: which machine frames it owns, its pseudo-physical to machine map (p2m)
and Xen's read-only machine-to-phys table (M2P), and the hypervisor's private frames.

Machine memory is the engine's physical memory.  The domain owns a set of machine frames (a domU:
every frame the configured machine backs, so its pseudo-physical RAM is the configured size; dom0:
the RAM frames of the configured map, the rest being the machine's firmware and I/O memory); its
pseudo-physical frames ``[0, nr_pages)`` are those machine frames in ascending order, so the p2m is
the identity up to the first frame it skips and shifted past each gap, as any non-identity p2m
Xen hands out would be.  Xen's own frames (the M2P, its page tables, the GDT area,
shared_info) live in private memory above every guest address and are not the domain's.
"""

from __future__ import annotations

import array
import bisect
from typing import TYPE_CHECKING

import attrs

from hvsim.abi import xen_pv as pv

if TYPE_CHECKING:
    from hvsim.core.machine import Machine

PAGE = 0x1000
TWO_MIB = 2 << 20
PRIVATE_BASE = 0xFF_0000_0000       # Xen's frames: below the 40-bit physical limit and the SVM area
PRIVATE_SMALL = TWO_MIB             # page tables, GDT pages, shared_info before the M2P


@attrs.frozen
class Run:
    pfn: int
    mfn: int
    count: int


class DomainMemory:
    def __init__(self, machine: "Machine", owned: "list[tuple[int, int]]"):
        """``owned``: the (start, size) machine ranges the domain's frames come from."""
        self.m = machine
        runs, pfn = [], 0
        for start, size in sorted(owned):
            first, last = (start + PAGE - 1) // PAGE, (start + size) // PAGE
            if last > first:
                runs.append(Run(pfn, first, last - first))
                pfn += last - first
        self.runs = tuple(runs)
        self.nr_pages = pfn
        self._pfn_starts = [r.pfn for r in runs]
        self._mfn_starts = [r.mfn for r in runs]
        self.max_mfn = max(start + size for start, size in machine.layout.backed) // PAGE - 1
        m2p_bytes = (self.max_mfn + 1) * 8
        self.m2p_size = (m2p_bytes + TWO_MIB - 1) // TWO_MIB * TWO_MIB
        self.m2p_base = PRIVATE_BASE + PRIVATE_SMALL
        machine.add_private_memory(PRIVATE_BASE, PRIVATE_SMALL + self.m2p_size)
        self._next_private = PRIVATE_BASE
        self._fill_m2p()

    # -- pseudo-physical <-> machine --------------------------------------------------------------
    def mfn(self, pfn: int) -> int:
        i = bisect.bisect_right(self._pfn_starts, pfn) - 1
        if i < 0 or pfn >= self.runs[i].pfn + self.runs[i].count:
            raise ValueError(f"pfn {pfn:#x} is not populated (nr_pages {self.nr_pages:#x})")
        return self.runs[i].mfn + pfn - self.runs[i].pfn

    def owns(self, mfn: int) -> bool:
        """True when machine frame ``mfn`` is one of the domain's RAM frames."""
        i = bisect.bisect_right(self._mfn_starts, mfn) - 1
        return i >= 0 and mfn < self.runs[i].mfn + self.runs[i].count

    def is_private(self, mfn: int) -> bool:
        return PRIVATE_BASE // PAGE <= mfn < (PRIVATE_BASE + PRIVATE_SMALL + self.m2p_size) // PAGE

    def p2m_bytes(self) -> bytes:
        table = array.array("Q")
        for run in self.runs:
            table.extend(range(run.mfn, run.mfn + run.count))
        return table.tobytes()

    def write_pseudo(self, paddr: int, data: bytes) -> None:
        """Write ``data`` at pseudo-physical ``paddr``, page by machine page."""
        done = 0
        while done < len(data):
            addr = paddr + done
            n = min(len(data) - done, PAGE - addr % PAGE)
            self.m.memory.write(self.mfn(addr // PAGE) * PAGE + addr % PAGE, data[done:done + n])
            done += n

    def fill_pseudo(self, paddr: int, size: int) -> None:
        self.write_pseudo(paddr, bytes(size))

    # -- Xen's private frames ----------------------------------------------------------------------
    def private_page(self) -> int:
        """A zeroed page of Xen's own memory (machine address)."""
        if self._next_private + PAGE > PRIVATE_BASE + PRIVATE_SMALL:
            raise MemoryError("Xen's private page pool is exhausted")
        page = self._next_private
        self._next_private += PAGE
        self.m.memory.fill(page, PAGE)
        return page

    def _fill_m2p(self) -> None:
        self.m.memory.fill(self.m2p_base, self.m2p_size, 0xFF)        # INVALID_M2P_ENTRY everywhere
        for run in self.runs:
            self.m.memory.write(self.m2p_base + run.mfn * 8,
                                array.array("Q", range(run.pfn, run.pfn + run.count)).tobytes())

    def set_m2p(self, mfn: int, pfn: int) -> None:
        self.m.memory.write_u64(self.m2p_base + mfn * 8, pfn & 0xFFFF_FFFF_FFFF_FFFF)

    def m2p_virt_end(self) -> int:
        return pv.MACH2PHYS_VIRT_START + self.m2p_size
