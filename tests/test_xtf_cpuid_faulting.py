"""CPUID faulting as Xen offers it to HVM guests and XTF's cpuid-faulting test probes it:
PLATFORM_INFO (0xce) bit 31 says it exists, MISC_FEATURES_ENABLES (0x140) bit 0 turns it on, and
then ``cpuid`` at CPL 3 is #GP(0) while ring 0 keeps its answers.

The ring-0/ring-3 guest is test_privilege's kernel; the policy MSRs are answered by the policy
``xen_pvh`` uses (``hvsim.xen.msr_policy``), attached to the raw test environment by a small plugin.
A second test runs a PVH guest under ``xen_pvh`` itself for the MSR values."""

from __future__ import annotations

from test_privilege import kernel64
from test_xen_pvh_bad_input import STACK, run_pvh

from guestcode import DATA, run_raw
from hvsim import hookimpl
from hvsim.core.events import Call, Fault
from hvsim.xen.msr_policy import HvmMsrPolicy


class PolicyPlugin:
    @hookimpl
    def hvsim_setup(self, machine, image, config, options):
        machine.plugin_state["policy"] = HvmMsrPolicy(machine)

    @hookimpl
    def hvsim_msr(self, machine, access):
        policy = machine.plugin_state["policy"]
        return policy.access(access) if policy.owns(access.index) else None


GATES = """
    GATE 13, gp_handler, 0x8e, 0
    GATE 0x80, enable_faulting, 0xee, 0
    GATE 0x81, disable_faulting, 0xee, 0
"""
HANDLERS = """
gp_handler:                       /* count #GPs, record the error code, skip the 2-byte cpuid */
    incq 0x80100
    popq 0x80108
    addq $2, (%rsp)
    iretq
enable_faulting:
    mov $0x140, %ecx
    mov $1, %eax
    xor %edx, %edx
    wrmsr
    cpuid                          /* ring 0: never faults */
    mov %eax, 0x80110
    iretq
disable_faulting:
    mov $0x140, %ecx
    rdmsr
    mov %eax, 0x80118
    xor %eax, %eax
    wrmsr
    iretq
"""
USER = """
    xor %eax, %eax
    cpuid                          /* faulting off: an answer */
    mov %ebx, 0x80000
    int $0x80
    xor %eax, %eax
    mov $0x1234, %ebx
    cpuid                          /* faulting on: #GP(0), registers untouched */
    mov %ebx, 0x80008
    int $0x81
    xor %eax, %eax
    cpuid                          /* off again */
    mov %ebx, 0x80010
    int $0x83
"""


def test_cpuid_faults_in_ring_3_only_while_misc_features_enables_bit_0_is_set():
    gates = GATES + "    GATE 0x83, halt_handler, 0xee, 0\n"
    source = kernel64(USER, HANDLERS + "halt_handler:\n    hlt\n", gates=gates)
    result, m, _ = run_raw(source, plugins=[PolicyPlugin()])
    assert result.stop.kind == "halt", result.stop
    vendor_ebx = m.guest_cpuid(0)[1]
    assert m.memory.read_u32(DATA) == vendor_ebx                    # ring 3, faulting off
    assert m.memory.read_u64(DATA + 0x100) == 1                     # exactly one #GP ...
    assert m.memory.read_u64(DATA + 0x108) == 0                     # ... with error code 0
    assert m.memory.read_u32(DATA + 8) == 0x1234                    # cpuid did not run
    assert m.memory.read_u32(DATA + 0x110) != 0                     # ring 0 cpuid answered (max leaf)
    assert m.memory.read_u32(DATA + 0x118) == 1                     # the MSR read back bit 0
    assert m.memory.read_u32(DATA + 0x10) == vendor_ebx             # faulting off again
    gps = [e for e in m.events if isinstance(e, Fault) and e.vector == 13]
    assert len(gps) == 1 and gps[0].error_code == 0


def test_xen_pvh_offers_cpuid_faulting_and_refuses_other_bits():
    source = STACK + """
    mov $0xce, %ecx
    rdmsr
    mov %eax, 0x80000
    mov %edx, 0x80004
    mov $0x140, %ecx
    mov $2, %eax                  /* a reserved bit: #GP, and the guest has no IDT */
    xor %edx, %edx
    wrmsr
    hlt
"""
    result, m, _ = run_pvh(source)
    assert m.memory.read_u32(0x80000) == 1 << 31 and m.memory.read_u32(0x80004) == 0
    assert result.stop.kind == "triple-fault", result.stop
    calls = [e for e in m.events if isinstance(e, Call) and e.interface == "msr"]
    assert [(c.name, c.result) for c in calls] == [("rdmsr 0xce", 1 << 31), ("wrmsr 0x140", "#GP")]
