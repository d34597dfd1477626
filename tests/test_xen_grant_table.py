"""Grant-table control, add_to_physmap into holes of the memory map, and sub-operation names, under
``xen_pvh``, driven by small 32-bit PVH guests the way a kernel's grant-table driver drives them:
query_size, add_to_physmap XENMAPSPACE_grant_table at a gpfn the guest picks, set_version /
get_version, get_status_frames, setup_table; the guest then writes through the placed frames and
the test reads what it wrote back from guest memory."""

from __future__ import annotations

import struct

from guestcode import DATA
from test_xen_pvh_bad_input import DONE, STACK, hypercall, run_pvh, s32, xen_calls

from hvsim.abi import xen as x

ARG = DATA + 0x100                      # argument structures, 0x20 apart
LIST = DATA + 0x400                     # frame lists
RES = DATA                              # results, 4 bytes each
HOLE = 0xD000_0                         # gpfn 0xd0000 (3.25 GiB): a hole of a 64 MiB guest's map
NR_MEMOP, NR_GNTTAB = 12, 20
INVALID32 = 0xFFFF_FFFF


def put(address: int, fmt: str, *values) -> str:
    """Assembly storing ``values`` packed with ``fmt`` at ``address``, a dword at a time."""
    data = struct.pack(fmt, *values)
    data += bytes(-len(data) % 4)
    return "".join(f"movl ${v:#x}, {address + 4 * i:#x}\n    "
                   for i, (v,) in enumerate(struct.iter_unpack("<I", data)))


def physmap(space: int, idx: int, gpfn: int, result: int, at: int = ARG) -> str:
    return (put(at, x.ADD_TO_PHYSMAP_COMPAT_FORMAT, x.DOMID_SELF, 0, space, idx, gpfn)
            + hypercall(NR_MEMOP, x.XENMEM_add_to_physmap, at, store=result))


def gnttab(cmd: int, arg: int, result: int, count: int = 1) -> str:
    return hypercall(NR_GNTTAB, cmd, arg, count, store=result)


def test_grant_frames_and_shared_info_are_placed_in_a_hole_and_hold_what_the_guest_writes():
    q, sv, gv, sf, st = ARG + 0x100, ARG + 0x20, ARG + 0x40, ARG + 0x60, ARG + 0x80
    result, m, _ = run_pvh(
        STACK
        + put(q, "<H2xIIh", x.DOMID_SELF, 0, 0, 0) + gnttab(x.GNTTABOP_query_size, q, RES)
        + physmap(x.XENMAPSPACE_grant_table, 1, HOLE + 1, RES + 4)      # grows the table to 2 frames
        + physmap(x.XENMAPSPACE_grant_table, 0, HOLE, RES + 8, at=ARG + 0xA0)
        + put(sv, "<I", 2) + gnttab(x.GNTTABOP_set_version, sv, RES + 12)
        + put(gv, "<HHI", x.DOMID_SELF, 0, 0) + gnttab(x.GNTTABOP_get_version, gv, RES + 16)
        + physmap(x.XENMAPSPACE_grant_table, x.XENMAPIDX_grant_table_status, HOLE + 2, RES + 20, at=ARG + 0xC0)
        + put(sf, x.GNTTAB_GET_STATUS_FRAMES_COMPAT_FORMAT, 1, x.DOMID_SELF, 7, LIST)
        + gnttab(x.GNTTABOP_get_status_frames, sf, RES + 24)
        + put(st, x.GNTTAB_SETUP_TABLE_COMPAT_FORMAT, x.DOMID_SELF, 3, 7, LIST + 0x10)
        + gnttab(x.GNTTABOP_setup_table, st, RES + 28)
        + physmap(x.XENMAPSPACE_shared_info, 0, HOLE + 3, RES + 32, at=ARG + 0xE0)
        + f"movl $0xfeedf00d, {(HOLE + 1) * 0x1000 + 8:#x}\n    "        # the guest writes grant entry 1
        + f"movl {(HOLE + 1) * 0x1000 + 8:#x}, %eax\n    mov %eax, {RES + 36:#x}\n    "
        + DONE)

    assert result.stop.kind != "host-error"
    assert [s32(m, RES + 4 * i) for i in range(9)] == [0] * 9
    assert struct.unpack("<H2xIIh", m.memory.read(q, 14)) == (x.DOMID_SELF, 1, x.MAX_GRANT_FRAMES, 0)
    assert m.memory.read_u32(gv + 4) == 2
    # status frame 0 is where the guest put it; setup_table lists placed frames and INVALID for frame 2
    assert struct.unpack("<Hh", m.memory.read(sf + 4, 4)) == (x.DOMID_SELF, 0)
    assert m.memory.read_u64(LIST) == HOLE + 2
    assert m.memory.read_u16(st + x.GNTTAB_SETUP_TABLE_STATUS) == 0
    assert struct.unpack("<3I", m.memory.read(LIST + 0x10, 12)) == (HOLE, HOLE + 1, INVALID32)
    assert m.memory.read_u32(RES + 36) == 0xFEEDF00D
    names = [c.name for c in xen_calls(m)]
    assert names == ["grant_table_op.query_size", "memory_op.add_to_physmap", "memory_op.add_to_physmap",
                     "grant_table_op.set_version", "grant_table_op.get_version", "memory_op.add_to_physmap",
                     "grant_table_op.get_status_frames", "grant_table_op.setup_table",
                     "memory_op.add_to_physmap"]
    shared = [c for c in xen_calls(m) if c.name == "memory_op.add_to_physmap"][-1]
    assert shared.args["gpfn"] == HOLE + 3 and shared.result == 0


def test_frames_beyond_the_maximum_and_foreign_grant_operations_are_refused():
    st, cp = ARG + 0x100, ARG + 0x140
    result, m, _ = run_pvh(
        STACK
        + physmap(x.XENMAPSPACE_grant_table, x.MAX_GRANT_FRAMES, HOLE, RES)
        + put(st, x.GNTTAB_SETUP_TABLE_COMPAT_FORMAT, x.DOMID_SELF, x.MAX_GRANT_FRAMES + 1, 0, LIST)
        + gnttab(x.GNTTABOP_setup_table, st, RES + 4)
        + gnttab(x.GNTTABOP_setup_table, st, RES + 8, count=2)
        + gnttab(x.GNTTABOP_copy, cp, RES + 12)
        + physmap(x.XENMAPSPACE_grant_table, x.XENMAPIDX_grant_table_status, HOLE, RES + 16, at=ARG + 0x80)
        + physmap(x.XENMAPSPACE_shared_info, 0, 0xFEE00, RES + 20, at=ARG + 0xA0)    # the local APIC
        + DONE)

    assert result.stop.kind != "host-error"
    assert [s32(m, RES + 4 * i) for i in range(6)] == [-x.EINVAL, 0, -x.EINVAL, -x.ENOSYS, -x.EINVAL, -x.EINVAL]
    assert struct.unpack("<h", m.memory.read(st + x.GNTTAB_SETUP_TABLE_STATUS, 2)) == (x.GNTST_general_error,)
    copy = [c for c in xen_calls(m) if c.name == "grant_table_op.copy"]
    assert copy and "not modelled" in copy[0].args["why"]
    assert not m.memory.contains(HOLE * 0x1000)       # a refused placement backs nothing


def test_sub_operations_hvsim_does_not_answer_are_named_from_the_headers():
    result, m, _ = run_pvh(
        STACK
        + hypercall(24, x.VCPUOP_is_up, 5, 0, store=RES)                 # vcpu 5 of 1: -ENOENT
        + hypercall(32, 13, ARG, store=RES + 4)                         # EVTCHNOP_set_priority
        + hypercall(33, 28, ARG, store=RES + 8)                         # PHYSDEVOP_pirq_eoi_gmfn_v2
        + hypercall(12, 0x40 | 15, ARG, store=RES + 12)                 # remove_from_physmap, extent bits set
        + DONE)

    assert result.stop.kind != "host-error"
    assert [c.name for c in xen_calls(m)][:4] == ["vcpu_op.is_up", "event_channel_op.set_priority",
                                                  "physdev_op.pirq_eoi_gmfn_v2", "memory_op.remove_from_physmap"]
    assert s32(m, RES + 4) == -x.ENOSYS and s32(m, RES + 8) == -x.ENOSYS
