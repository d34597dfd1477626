"""MSR accesses as guests see them: hypervisor MSRs answered by plugins with no hot-path hook,
#GP for MSRs nobody owns, architectural MSRs left to the CPU, and CPUID that hides the SVM the
machine itself uses (core/svm.py)."""

from __future__ import annotations

import pytest

from hvsim import MsrAccess, hookimpl
from hvsim.core.events import Call

from guestcode import DATA, run_raw

GP_HANDLER_64 = """
gp_handler:                        /* count, record the error code, skip the 2-byte rdmsr/wrmsr */
    pop %r8
    mov %r8, 0x80100
    incq 0x80108
    addq $2, (%rsp)
    iretq
"""


class HypervisorMsrs:
    """Owns 0x40000000 (write: a code page to fill, like Xen's hypercall MSR) and 0x40000001 (a
    register), and intercepts APIC_BASE (0x1b), an MSR inside the architectural range."""

    def __init__(self):
        self.seen: list[MsrAccess] = []
        self.reg = 0x1122334455667788

    @hookimpl
    def hvsim_setup(self, machine, image, config, options):
        machine.intercept_msr(0x1B)

    @hookimpl
    def hvsim_msr(self, machine, access):
        self.seen.append(access)
        if access.index == 0x40000000 and access.write:
            machine.write_code(access.value, b"\xb8\x02\x00\x00\x00\xc3")   # mov $2,%eax; ret
            return True
        if access.index == 0x40000001:
            if access.write:
                self.reg = access.value
                return True
            return self.reg
        if access.index == 0x1B and not access.write:
            return 0xFEE00900
        return None


def msr_run(source, plugin=None, **kw):
    plugin = plugin or HypervisorMsrs()
    result, m, symbols = run_raw(source + GP_HANDLER_64, gates={13: "gp_handler"}, plugins=[plugin], **kw)
    return result, m, plugin


def test_owned_msrs_reach_the_plugin_and_the_guest_sees_its_answers():
    result, m, plugin = msr_run("""
    mov $0x40000001, %ecx
    rdmsr                              /* the plugin's register */
    mov %eax, 0x80000
    mov %edx, 0x80004
    mov $0xcafef00d, %eax
    mov $0x0badbeef, %edx
    wrmsr
    rdmsr
    mov %eax, 0x80008
    mov %edx, 0x8000c
    mov $0x1b, %ecx                    /* APIC_BASE: inside the architectural range, intercepted */
    rdmsr
    mov %eax, 0x80010
    hlt
    """)
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u64(DATA) == 0x1122334455667788
    assert m.memory.read_u64(DATA + 8) == 0x0BADBEEFCAFEF00D
    assert m.memory.read_u32(DATA + 0x10) == 0xFEE00900
    assert [(a.index, a.write) for a in plugin.seen] == [(0x40000001, False), (0x40000001, True),
                                                         (0x40000001, False), (0x1B, False)]
    calls = [e for e in m.events if isinstance(e, Call) and e.interface == "msr"]
    assert [c.name for c in calls] == ["rdmsr 0x40000001", "wrmsr 0x40000001", "rdmsr 0x40000001", "rdmsr 0x1b"]
    assert calls[1].args == {"index": 0x40000001, "value": 0x0BADBEEFCAFEF00D}
    assert calls[3].result == 0xFEE00900
    assert calls[0].rip == plugin.seen[0].rip


def test_an_msr_nobody_owns_raises_gp_through_the_guest_idt():
    result, m, plugin = msr_run("""
    mov $0x4b564d00, %ecx              /* a KVM MSR: nobody in this run owns it */
    rdmsr
    mov $0x4b564d00, %ecx
    wrmsr
    hlt
    """)
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u64(DATA + 0x108) == 2          # two #GPs, each skipped by the handler
    assert m.memory.read_u64(DATA + 0x100) == 0          # error code 0
    faults = [e for e in m.events if e.kind == "Fault"]
    assert [f.name for f in faults] == ["#GP", "#GP"]
    assert [e.result for e in m.events if isinstance(e, Call)] == ["#GP", "#GP"]


def test_architectural_msrs_not_intercepted_run_natively():
    result, m, plugin = msr_run("""
    mov $0x1a0, %ecx                   /* MISC_ENABLE: the engine stores it */
    mov $0x800, %eax
    xor %edx, %edx
    wrmsr
    xor %eax, %eax
    rdmsr
    mov %eax, 0x80000
    mov $0xc0000100, %ecx              /* FS_BASE */
    mov $0x1234, %eax
    wrmsr
    xor %eax, %eax
    rdmsr
    mov %eax, 0x80008
    hlt
    """)
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u32(DATA) == 0x800
    assert m.memory.read_u32(DATA + 8) == 0x1234
    assert m.reg("fs_base") == 0x1234
    assert plugin.seen == []


def test_code_written_by_an_msr_handler_replaces_code_the_guest_already_ran():
    # The page first holds "mov $1,%eax; ret" and is called once, so its translation is cached;
    # the MSR write makes the plugin write "mov $2,%eax; ret" there (a hypercall page fill).
    result, m, plugin = msr_run("""
    movl $0x00000001, %eax
    movb $0xb8, 0x300000
    movl $1, 0x300001
    movb $0xc3, 0x300005
    mov $0x300000, %rbx
    call *%rbx
    mov %eax, 0x80000
    mov $0x40000000, %ecx
    mov $0x300000, %eax
    xor %edx, %edx
    wrmsr
    call *%rbx
    mov %eax, 0x80004
    hlt
    """)
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u32(DATA) == 1
    assert m.memory.read_u32(DATA + 4) == 2


def test_an_msr_exit_after_int3_reports_the_rdmsr_address():
    # Regression for the engine's stale exception_is_int (msr-trapping.md, pitfall 1).
    result, m, plugin = run_raw("""
    int3
    mov $0x40000001, %ecx
    msr_site:
    rdmsr
    mov %eax, 0x80000
    hlt
    bp_handler:
    iretq
    """, gates={3: "bp_handler"}, plugins=[p := HypervisorMsrs()])
    assert result.stop.kind == "halt", result.stop
    assert [a.rip for a in p.seen] == [plugin["msr_site"]]
    assert m.memory.read_u32(DATA) == 0x55667788


def test_msr_exits_work_in_32_bit_protected_mode():
    result, m, plugin = run_raw("""
    mov $0x40000001, %ecx
    rdmsr
    mov %edx, 0x80000
    hlt
    """, bits=32, plugins=[p := HypervisorMsrs()])
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u32(DATA) == 0x11223344
    assert result.state.mode == "protected32"


def test_host_msrs_cannot_be_intercepted_and_intercepted_ones_are_not_read_by_the_host():
    class Greedy(HypervisorMsrs):
        @hookimpl
        def hvsim_setup(self, machine, image, config, options):
            with pytest.raises(ValueError, match="host itself"):
                machine.intercept_msr(0xC0000080)
            machine.intercept_msr(0x1B)
            with pytest.raises(ValueError, match="intercepted"):
                machine.msr_read(0x1B)
            with pytest.raises(ValueError, match="intercepted"):
                machine.msr_read(0x40000000)
            assert machine.msr_read(0xC0000080) == machine.reg("efer")

    result, m, _ = run_raw("hlt", plugins=[Greedy()])
    assert result.stop.kind == "halt", result.stop


def test_cpuid_hides_svm_and_mirrors_osxsave_from_cr4():
    result, m, _ = run_raw("""
    mov $0x80000001, %eax
    cpuid
    mov %ecx, 0x80000
    mov $1, %eax
    cpuid
    mov %ecx, 0x80004                  /* CR4.OSXSAVE clear at entry */
    mov %cr4, %rax
    or $0x40000, %rax
    mov %rax, %cr4
    mov $1, %eax
    cpuid
    mov %ecx, 0x80008
    mov $0x8000000a, %eax
    cpuid
    mov %eax, 0x8000c
    hlt
    """)
    assert result.stop.kind == "halt", result.stop
    assert m.memory.read_u32(DATA) & (1 << 2) == 0
    assert m.memory.read_u32(DATA + 4) & (1 << 27) == 0
    assert m.memory.read_u32(DATA + 8) & (1 << 27)
    assert m.memory.read_u32(DATA + 12) == 0
