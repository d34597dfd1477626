"""Xen's answer to a PVH domU's access of device windows nothing emulates.

A PVH domU has only the local APIC emulated (Xen's ``emulation_flags`` for PVH: X86_EMU_LAPIC): no
HPET, no I/O APIC, no device model.  A guest-physical frame with no p2m entry looks up as
``p2m_mmio_dm`` (xen/arch/x86/mm/p2m-ept.c ept_get_entry), so the access is emulated as MMIO, and
with no ioreq server to send it to Xen's ``null_handler`` answers it (xen/arch/x86/hvm/emulate.c
null_read/null_write): reads return all ones, writes are dropped.  A guest probing for an HPET or
an I/O APIC (XTF's ``hpet_init``/``ioapic_init``: "Bare MMIO?") finds none that way.

Modelled for the PC's HPET and I/O APIC windows (``WINDOWS``); elsewhere an access to a hole of the
memory map still stops the run as ``bad-access`` (hvsim's diagnosis of a stray access) rather
than reading all ones.  Instruction fetches from these windows are not modelled (Xen cannot
execute emulated MMIO).  Each window's first access is recorded as a Note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hvsim.core.machine import Machine

PAGE = 0x1000
# (guest-physical base, what a PC has there): the windows pc_regions.py names, one page each
WINDOWS = ((0xFEC0_0000, "I/O APIC"), (0xFED0_0000, "HPET"))


def map_unclaimed_windows(machine: "Machine") -> list[int]:
    """Map each window of ``WINDOWS`` that nothing else occupies as Xen's null handler; returns
    the bases mapped."""
    mapped = []
    for base, what in WINDOWS:
        if any(begin <= base + PAGE - 1 and base <= end for begin, end, _ in machine.uc.mem_regions()):
            continue
        _NullWindow(machine, base, what)
        mapped.append(base)
    return mapped


class _NullWindow:
    def __init__(self, machine: "Machine", base: int, what: str):
        self.m, self.base, self.what, self.seen = machine, base, what, False
        machine.uc.mmio_map(base, PAGE, self._read, None, self._write, None)

    def _first(self, access: str, offset: int) -> None:
        if not self.seen:
            self.seen = True
            self.m.note(f"xen_pvh: {access} at {self.base + offset:#x}: no {self.what} is emulated for a PVH "
                        "domU (Xen's null handler: reads all ones, writes dropped)")

    def _read(self, _uc, offset: int, size: int, _ud) -> int:
        self._first("read", offset)
        return (1 << 8 * size) - 1

    def _write(self, _uc, offset: int, _size: int, _value: int, _ud) -> None:
        self._first("write", offset)
