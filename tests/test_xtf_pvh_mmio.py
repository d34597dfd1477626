"""xen_pvh: the HPET and I/O APIC windows of a PVH domU, where Xen emulates nothing, answer as Xen's
null MMIO handler does (reads all ones, writes dropped), so a guest probing them (XTF's selftest:
hpet_init, ioapic_init) learns there is no such device instead of stopping the run.  Another hole
of the memory map still stops it as bad-access."""

from __future__ import annotations

from test_xen_pvh_bad_input import DATA, DONE, STACK, WILD, run_pvh

from hvsim.core.events import Note

PROBE = f"""
    movl $0x12345678, 0xfed00010      /* HPET general configuration: dropped */
    mov 0xfed00000, %eax              /* HPET capabilities and ID */
    mov %eax, {DATA:#x}
    mov 0xfed00004, %eax              /* its counter period */
    mov %eax, {DATA + 4:#x}
    mov 0xfed00010, %eax
    mov %eax, {DATA + 8:#x}
    movl $1, 0xfec00000               /* I/O APIC index: version register */
    mov 0xfec00010, %eax
    mov %eax, {DATA + 12:#x}
"""


def test_hpet_and_ioapic_windows_read_all_ones_and_drop_writes():
    result, m, _ = run_pvh(STACK + PROBE + DONE)
    assert result.stop.kind == "halt", result.stop
    assert [m.memory.read_u32(DATA + 4 * i) for i in range(4)] == [0xFFFF_FFFF] * 4
    notes = [e.text for e in m.events if isinstance(e, Note) and "null handler" in e.text]
    assert len(notes) == 2 and "HPET" in notes[0] and "I/O APIC" in notes[1], notes


def test_another_hole_is_still_a_bad_access():
    result, _, _ = run_pvh(STACK + f"mov {WILD:#x}, %eax\n    " + DONE)
    assert result.stop.kind == "bad-access", result.stop
