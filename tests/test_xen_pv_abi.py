"""xen_pv: grant-table setup with frames outside the domain's RAM that the kernel then maps and
writes, callbacks at non-canonical addresses, and the debug-build flavour's console_io, driven by
small 64-bit PV kernels (as in test_xen_pv_bad_input.py)."""

from __future__ import annotations

import struct

from test_xen_pv_bad_input import DONE, assert_finished, calls, hypercall, result_at, run_pv

from hvsim.abi import xen as x
from hvsim.abi import xen_pv as pv
from hvsim.core.events import ConsoleOutput

EPERM, EINVAL = -x.EPERM, -x.EINVAL
NONCANONICAL = 0x0000_8000_0000_1000


def update_va_mapping(va: str, pte: str, store: int) -> str:
    return (f"lea {va}(%rip), %rdi\n    mov {pte}, %rsi\n    xor %edx, %edx\n    mov $14, %eax\n    syscall\n    "
            f"mov %rax, results+{8 * store}(%rip)\n    ")


def test_setup_table_gives_frames_outside_ram_that_the_kernel_maps_and_writes():
    source = (hypercall(20, x.GNTTABOP_setup_table, "setup", 1, store=0)
              + "mov frames(%rip), %r12\n    shl $12, %r12\n    or $0x67, %r12\n    "   # P RW A D U
              + update_va_mapping("window", "%r12", 1)
              + "movl $0x600dcafe, window+8(%rip)\n    "
              + hypercall(20, x.GNTTABOP_query_size, "query", 1, store=2)
              + hypercall(20, x.GNTTABOP_setup_table, "too_many", 1, store=3)
              + DONE
              + f".balign 8\nsetup: .short {x.DOMID_SELF}, 0\n    .long 4\n    .short 7, 0, 0, 0\n    .quad frames\n"
              + f"too_many: .short {x.DOMID_SELF}, 0\n    .long {x.MAX_GRANT_FRAMES + 1}\n    .short 7, 0, 0, 0\n"
              + "    .quad frames\n"
              + f"query: .short {x.DOMID_SELF}, 0\n    .long 0, 0\n    .short 7, 0\n"
              + "frames: .quad 0, 0, 0, 0\n.balign 4096\nwindow: .skip 4096\n")
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(4)] == [0, 0, 0, 0]
    frames = struct.unpack("<4Q", m.vmem.read(symbols["frames"], 32))
    domain = m.plugin_state["xen_pv"]
    assert len(set(frames)) == 4 and not any(domain.dom.owns(f) for f in frames)
    assert m.memory.read_u32(frames[0] * 0x1000 + 8) == 0x600DCAFE
    assert struct.unpack("<h", m.vmem.read(symbols["setup"] + x.GNTTAB_SETUP_TABLE_STATUS, 2)) == (0,)
    assert struct.unpack("<h", m.vmem.read(symbols["too_many"] + x.GNTTAB_SETUP_TABLE_STATUS, 2)) == (
        x.GNTST_general_error,)
    assert struct.unpack("<II", m.vmem.read(symbols["query"] + 4, 8)) == (4, x.MAX_GRANT_FRAMES)


def test_a_callback_address_that_is_not_canonical_is_refused():
    source = (f"movabs ${NONCANONICAL:#x}, %rax\n    mov %rax, cb+8(%rip)\n    "
              + hypercall(30, pv.CALLBACKOP_register, "cb", store=0)
              + f"movabs ${NONCANONICAL:#x}, %rsi\n    mov $4, %eax\n    xor %edi, %edi\n    xor %edx, %edx\n"
              + "    syscall\n    mov %rax, results+8(%rip)\n    "
              + DONE + ".balign 8\ncb: .short 0, 0, 0, 0\n    .quad 0\n")
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    # CALLBACKOP_register says -EINVAL; set_callbacks answers 0 (Xen ignores each registration's
    # result there) and leaves the non-canonical failsafe callback unregistered
    assert [result_at(m, symbols, i) for i in range(2)] == [EINVAL, 0]
    domain = m.plugin_state["xen_pv"]
    assert domain.cpu.callbacks.get("event") == (0, 0) and "failsafe" not in domain.cpu.callbacks
    assert "not canonical" in calls(m, "callback_op.register")[0].args["why"]
    assert calls(m, "set_callbacks")[0].args["refused"] == ["failsafe"]


def run_console_io(debug: bool):
    from hvsim import MachineConfig
    from hvsim.api import Run
    from test_xen_pv_bad_input import PROLOGUE, pv_image

    source = (hypercall(18, x.CONSOLEIO_WRITE, 6, "msg", store=0) + hypercall(18, x.CONSOLEIO_READ, 5, "buf", store=1)
              + DONE + 'msg: .ascii "hello\\n"\nbuf: .skip 8\n')
    image, symbols = pv_image(PROLOGUE + source)
    prepared = Run("xen_pv", image, MachineConfig(memory="64M", timeout=10), options={"xen_debug": debug})
    result = prepared.execute()
    return result, prepared.machine, symbols


def test_a_debug_build_lets_a_domu_write_with_console_io_but_not_read():
    result, m, symbols = run_console_io(True)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(2)] == [0, EPERM]
    assert [e.text for e in m.events if isinstance(e, ConsoleOutput) and e.channel == "xen"] == ["hello\n"]


def test_a_release_build_refuses_a_domu_console_io_and_names_the_debug_flavour():
    result, m, symbols = run_console_io(False)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(2)] == [EPERM, EPERM]
    assert "--xen-debug" in calls(m, "console_io.write")[0].args["why"]


def test_dom0_reads_the_physical_cpus_with_get_cpuinfo_and_a_domu_is_refused():
    # platform_op(XENPF_get_cpuinfo) for CPU 1 of 2 (present, online, APIC ID = ACPI ID = 1), then
    # CPU 7 (not present: flagged invalid, its IDs left as the guest wrote them).
    def op(name: str, cpu: int) -> str:
        return (f"    .balign 8\n{name}: .long {pv.XENPF_get_cpuinfo}, {pv.XENPF_INTERFACE_VERSION}\n"
                f"    .long {cpu}, 0xaaaa, 0xbbbb, 0xcccc, 0xdddd\n    .skip 108\n")

    source = (hypercall(7, "present", store=0) + hypercall(7, "absent", store=1) + DONE
              + op("present", 1) + op("absent", 7))
    for dom0 in (True, False):
        result, m, symbols = run_pv(source, dom0=dom0, smp=2)
        assert_finished(result, m, symbols)
        fields = [struct.unpack(pv.PCPUINFO_FORMAT, m.vmem.read(symbols[s] + 8, 20)) for s in ("present", "absent")]
        if dom0:
            assert [result_at(m, symbols, i) for i in range(2)] == [0, 0]
            assert fields == [(1, 1, pv.XEN_PCPU_FLAGS_ONLINE, 1, 1), (7, 1, pv.XEN_PCPU_FLAGS_INVALID, 0xCCCC, 0xDDDD)]
            assert [c.name for c in calls(m, None) if c.name.startswith("platform_op")] == ["platform_op.get_cpuinfo"] * 2
        else:
            assert [result_at(m, symbols, i) for i in range(2)] == [EPERM, EPERM]
            assert fields[0] == (1, 0xAAAA, 0xBBBB, 0xCCCC, 0xDDDD)


def test_dom0_sets_the_wallclock_with_settime64_and_settime32():
    """XENPF_settime64 (and the older settime32): the wallclock was secs.nsecs at the given system
    time, so shared_info's wallclock (its value at system time 0) moves to secs.nsecs - system_time;
    a nonzero mbz is -EINVAL (platform_hypercall.c, common/time.c do_settime)."""
    v = pv.XENPF_INTERFACE_VERSION
    data = (f"    .balign 8\nset64: .long {pv.XENPF_settime64}, {v}\n    .quad 2000000000\n"
            f"    .long 250000000, 0\n    .quad 3500000000\n    .skip 104\n"
            f"bad64: .long {pv.XENPF_settime64}, {v}\n    .quad 1\n    .long 0, 1\n    .quad 0\n    .skip 104\n"
            f"set32: .long {pv.XENPF_settime32}, {v}\n    .long 1700000000, 7\n    .quad 0\n    .skip 112\n")

    def wallclock(m) -> tuple[int, ...]:            # wc_version, wc_sec, wc_nsec, wc_sec_hi
        return struct.unpack("<IIII", m.memory.read(m.plugin_state["xen_pv"].xen.shared_info + 3072, 16))

    result, m, symbols = run_pv(hypercall(7, "set64", store=0) + hypercall(7, "bad64", store=1) + DONE + data,
                                dom0=True)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(2)] == [0, -x.EINVAL]
    version, sec, nsec, sec_hi = wallclock(m)
    assert (sec, nsec, sec_hi) == (1999999996, 750000000, 0) and version % 2 == 0     # 3.5 s earlier
    result, m, symbols = run_pv(hypercall(7, "set32", store=0) + DONE + data, dom0=True)
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 0) == 0 and wallclock(m)[1:] == (1700000000, 7, 0)
    assert [c.name for c in calls(m, None) if c.name.startswith("platform_op")] == ["platform_op.settime32"]


def test_sysctl_and_domctl_check_the_interface_version_then_the_callers_privilege():
    """do_sysctl/do_domctl: another interface version is -EACCES (XTF probes the version that way),
    then the dummy XSM's XSM_PRIV refuses a domU (-EPERM); a domctl naming a domain that does not
    exist is -ESRCH first.  dom0 passes the checks and finds nothing implemented (-ENOSYS)."""
    version = x.XEN_SYSCTL_INTERFACE_VERSION
    data = (f"    .balign 8\nold: .long 1, {version - 1}\n    .skip 128\n"
            f"sys: .long 1, {version}\n    .skip 128\n"
            f"dom: .long 5, {x.XEN_DOMCTL_INTERFACE_VERSION}\n    .short 0x7ff0\n    .skip 128\n"
            f"nodom: .long 5, {x.XEN_DOMCTL_INTERFACE_VERSION}\n    .short 42\n    .skip 128\n")
    source = (hypercall(35, "old", store=0) + hypercall(35, "sys", store=1) + hypercall(36, "dom", store=2)
              + hypercall(36, "nodom", store=3) + DONE + data)
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(4)] == [-x.EACCES, -x.EPERM, -x.ESRCH, -x.ESRCH]
    result, m, symbols = run_pv(source.replace(".short 0x7ff0", ".short 0"), dom0=False)
    assert result_at(m, symbols, 2) == -x.EPERM                  # dom0 exists: XSM refuses the domU
    result, m, symbols = run_pv(source.replace(".short 0x7ff0", ".short 0"), dom0=True)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(4)] == [-x.EACCES, -x.ENOSYS, -x.ENOSYS, -x.ESRCH]
    assert calls(m, "sysctl.cmd_1")[0].args["why"].startswith("interface version")


def _exchange_args(name: str, nr_in: int, in_order: int, nr_out: int, out_order: int, bits: int = 0) -> str:
    """A struct xen_memory_exchange whose lists are ``NAME_in`` and ``NAME_out``."""
    return (f"    .balign 8\n{name}: .quad {name}_in, {nr_in}\n    .long {in_order}, 0\n    .short 0x7ff0, 0, 0, 0\n"
            f"    .quad {name}_out, {nr_out}\n    .long {out_order}, {bits}\n    .short 0x7ff0, 0, 0, 0\n"
            f"    .quad 0\n{name}_in: .skip 64\n{name}_out: .skip 64\n")


def test_memory_exchange_gives_contiguous_frames_back_or_enomem():
    """XENMEM_exchange as xen_create_contiguous_region uses it: four order-0 frames of consecutive
    pfns (machine-contiguous here) for one order-2 extent below 4 GiB: the MFN comes back over the
    pfn listed, the M2P names the pfns, nr_exchanged counts the inputs.  Frames 2 apart are no block
    (-ENOMEM, nothing exchanged); mismatched sizes are -EINVAL."""
    lookups = "".join(
        f"    mov {8 * pfn}(%rcx), %rax\n    mov %rax, {name}_in+{8 * i}(%rip)\n"
        for name, pfns in (("good", (16, 17, 18, 19)), ("gap", (16, 18))) for i, pfn in enumerate(pfns))
    source = ("    mov 104(%r15), %rcx                /* start_info.mfn_list: the p2m */\n" + lookups
              + "    movq $16, good_out(%rip)\n    movq $16, gap_out(%rip)\n    "
              + hypercall(12, pv.XENMEM_exchange, "good", store=0) + hypercall(12, pv.XENMEM_exchange, "gap", store=1)
              + hypercall(12, pv.XENMEM_exchange, "sizes", store=2) + DONE
              + _exchange_args("good", 4, 0, 1, 2, 32) + _exchange_args("gap", 2, 0, 1, 1, 32)
              + _exchange_args("sizes", 4, 0, 1, 1))
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(3)] == [0, -x.ENOMEM, -x.EINVAL]
    d = m.plugin_state["xen_pv"]

    def field(name: str, offset: int) -> int:
        return struct.unpack("<Q", m.vmem.read(symbols[name] + offset, 8))[0]

    first = d.dom.mfn(16)
    assert field("good_out", 0) == first and field("good", 64) == 4          # the MFN, nr_exchanged
    assert [m.memory.read_u64(d.dom.m2p_base + 8 * (first + k)) for k in range(4)] == [16, 17, 18, 19]
    assert field("gap_out", 0) == 16 and field("gap", 64) == 0
    assert "contiguous" in calls(m, "memory_op.exchange")[1].args["why"]


def test_a_long_memory_exchange_is_continued():
    """1500 order-0 extents for 1500 order-0 extents: Xen checks for preemption between batches, so
    the call is re-entered with nr_exchanged saying where it stopped, and ends with all 1500 done."""
    source = ("    mov 104(%r15), %rcx\n    lea 16*8(%rcx), %rsi\n    lea big_in(%rip), %rdi\n"
              "    mov $1500, %ecx\n    rep movsq\n"              # the MFNs of pfns 16..1515
              "    lea big_out(%rip), %rdi\n    mov $16, %eax\n    mov $1500, %ecx\n"
              "1:  stosq\n    inc %rax\n    loop 1b\n    "       # and the pfns they go back to
              + hypercall(12, pv.XENMEM_exchange, "big", store=0) + DONE
              + "    .balign 8\nbig: .quad big_in, 1500\n    .long 0, 0\n    .short 0x7ff0, 0, 0, 0\n"
              "    .quad big_out, 1500\n    .long 0, 0\n    .short 0x7ff0, 0, 0, 0\n    .quad 0\n"
              "big_in: .skip 1500 * 8\nbig_out: .skip 1500 * 8\n")
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 0) == 0
    assert struct.unpack("<Q", m.vmem.read(symbols["big"] + 64, 8))[0] == 1500
    parts = calls(m, "memory_op.exchange")
    assert [p.args.get("continued", False) for p in parts] == [True, False]
    assert [p.args["nr_exchanged"] for p in parts] == [1024, 1500]
