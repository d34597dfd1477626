"""xen_pv: images Xen would refuse are refused with Xen's reason; bad hypercall arguments get the
errno Xen gives (recorded in the trace); page-table updates that would map memory the domain does
not own are refused; exceptions are bounced to the guest's trap table, or crash the domain.

Guests are a few lines of 64-bit assembly (tests/guestcode.py) linked at 0x100000 and wrapped in an
ELF with PV notes (VIRT_BASE 0, so virtual = pseudo-physical), entered as Xen enters a PV guest:
long mode on the builder's page tables, RSI = start_info, RSP = the boot stack.  Hypercalls are
``syscall`` with RAX = number and arguments in RDI, RSI, RDX, R10, R8.  Each guest keeps start_info
in R15 and stores results in its own ``results`` array; tests read them back by symbol.
"""

from __future__ import annotations

import struct

import pytest
from guestcode import CODE, assemble
from imagegen import Load, build_elf, xen_note

from hvsim import MachineConfig
from hvsim.abi import xen as x
from hvsim.abi import xen_pv as pv
from hvsim.api import Run, inspect
from hvsim.core.events import Call, Fault
from hvsim.image import load_image

EFAULT, EINVAL, ENOSYS, EPERM = -x.EFAULT, -x.EINVAL, -x.ENOSYS, -x.EPERM
WILD = 0x0000_7000_DEAD_0000        # mapped by nothing
PV_NOTES = {5: "xen-3.0", 8: "generic", 6: "hvsim-test", 3: 0, 4: 0}
PROLOGUE = "mov %rsi, %r15\n    "
DONE = "movq $0x600d, done(%rip)\n" + "    mov $29, %eax\n    mov $2, %edi\n    lea reason(%rip), %rsi\n    syscall\n    hlt\n"
DATA = """
    .balign 8
results: .skip 128
done: .quad 0
reason: .long 0
    .balign 16
"""


def pv_image(source: str, *, notes: dict | None = None, entry: str | int = "_start", bits: int = 64,
             legacy: str | None = None, sht_only: bool = False, base: int = CODE) -> tuple[bytes, dict[str, int]]:
    code, symbols = assemble(source + DATA, bits=bits, base=base)
    loads = [Load(s.paddr, s.data, memsz=s.memsz) for s in load_image(code).elf.segments]
    target = symbols[entry] if isinstance(entry, str) else entry
    note_values = {**PV_NOTES, 1: target, **(notes or {})}
    blob = b"".join(xen_note(n, v) for n, v in note_values.items() if v is not None)
    if legacy is not None:
        return build_elf(bits=bits, entry=symbols["_start"], loads=loads,
                         sections=[("__xen_guest", 1, legacy.encode() + b"\0")]), symbols
    return build_elf(bits=bits, entry=symbols["_start"], loads=loads, notes=[blob],
                     note_segments=not sht_only), symbols


def run_pv(source: str, *, dom0: bool = False, base: int = CODE, **config):
    image, symbols = pv_image(PROLOGUE + source, base=base)
    prepared = Run("xen_pv", image, MachineConfig(**{"memory": "64M", "timeout": 10, **config}),
                   options={"dom0": dom0})
    result = prepared.execute()
    assert result.stop.kind != "host-error", (result.stop, result.extra.get("host_traceback"))
    return result, prepared.machine, symbols


def hypercall(nr: int, *args, store: int | None = None) -> str:
    lines = [f"mov ${nr}, %rax"]
    for reg, value in zip(("rdi", "rsi", "rdx", "r10", "r8"), args):
        lines.append(f"mov ${value:#x}, %{reg}" if isinstance(value, int) else f"lea {value}(%rip), %{reg}")
    lines.append("syscall")
    if store is not None:
        lines.append(f"mov %rax, results+{8 * store}(%rip)")
    return "\n    ".join(lines) + "\n    "


def trap_table(**handlers: int) -> str:
    """A set_trap_table array at ``traps:`` (then 16-byte aligned code follows): one trap_info per
    ``handler_label=vector``, DPL 0, on FLAT_KERNEL_CS64, with the terminating null entry."""
    entries = "".join(f"    .byte {vector}, 0\n    .short 0xe033\n    .long 0\n    .quad {label}\n"
                      for label, vector in handlers.items())
    return f"    .balign 16\ntraps:\n{entries}    .quad 0, 0\n"


def result_at(machine, symbols, index: int) -> int:
    return struct.unpack("<q", machine.vmem.read(symbols["results"] + 8 * index, 8))[0]


def calls(machine, name: str | None = None) -> list[Call]:
    return [e for e in machine.events if isinstance(e, Call) and e.interface == "xen-hypercall"
            and (name is None or e.name == name)]


def assert_finished(result, machine, symbols):
    assert result.stop.kind == "poweroff", result.stop
    assert machine.vmem.read(symbols["done"], 8) == struct.pack("<Q", 0x600D)


# -- images Xen refuses ----------------------------------------------------------------------------
REFUSALS = {
    "xen-version": ({5: "xen-4.0"}, "XEN_VERSION is 'xen-4.0'"),
    "loader-and-guest-os": ({8: "grub", 6: "plan9"}, "need LOADER 'generic' or GUEST_OS 'linux'"),
    "unknown-required-feature": ({10: "!hvsim_magic"}, "requires unknown feature 'hvsim_magic'"),
    "entry-outside": ({1: 0x9000_0000}, "lies outside the kernel"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_an_image_xen_refuses_is_refused_with_the_reason(case):
    notes, reason = REFUSALS[case]
    image, _ = pv_image(DONE, notes=notes)
    verdict = inspect(image)["environments"]["xen_pv"]
    assert not verdict["accepted"]
    assert reason in verdict["reason"]


def test_a_32_bit_pv_kernel_is_refused():
    image, _ = pv_image("hlt\n", bits=32)
    verdict = inspect(image)["environments"]["xen_pv"]
    assert not verdict["accepted"] and "64-bit PV guests only" in verdict["reason"]


def test_an_elf_without_xen_notes_is_refused():
    code, _ = assemble("hlt\n")
    verdict = inspect(code)["environments"]["xen_pv"]
    assert not verdict["accepted"] and "no Xen PV notes" in verdict["reason"]


@pytest.mark.parametrize("container", ["sht_note", "legacy"])
def test_notes_in_sections_and_the_legacy_string_are_accepted_and_boot(container):
    source = PROLOGUE + DONE
    if container == "legacy":
        code, symbols = assemble(source + DATA)
        legacy = f"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0x0,ELF_PADDR_OFFSET=0x0,VIRT_ENTRY={symbols['_start']:#x}"
        image, symbols = pv_image(source, legacy=legacy)
    else:
        image, symbols = pv_image(source, sht_only=True)
    prepared = Run("xen_pv", image, MachineConfig(memory="64M", timeout=10))
    result = prepared.execute()
    assert_finished(result, prepared.machine, symbols)


# -- bad hypercall arguments -------------------------------------------------------------------------
def test_wild_pointers_get_efault_recorded_and_the_guest_runs_on():
    source = (hypercall(18, x.CONSOLEIO_WRITE, 4, WILD, store=0)
              + hypercall(pv_hc("mmu_update"), WILD, 1, 0, x.DOMID_SELF, store=1)
              + hypercall(pv_hc("set_trap_table"), WILD, store=2)
              + hypercall(12, x.XENMEM_memory_map, WILD, store=3) + DONE)
    result, m, symbols = run_pv(source, dom0=True)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(4)] == [EFAULT] * 4
    faulted = [e for e in calls(m) if e.result == EFAULT]
    assert len(faulted) == 4 and all(f"{WILD:#x}" in e.args["fault"] for e in faulted)


def test_a_domu_is_not_the_console_domain():
    result, m, symbols = run_pv(hypercall(18, x.CONSOLEIO_WRITE, 5, "msg", store=0) + DONE + 'msg: .ascii "hello"\n')
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 0) == EPERM
    [event] = calls(m, "console_io.write")
    assert event.result == EPERM and "console domain" in event.args["why"]


def pv_hc(name: str) -> int:
    return x.HYPERCALL_NUMBERS[name]


def test_unknown_calls_and_bad_sub_operations_are_refused():
    source = (hypercall(99, store=0) + hypercall(pv_hc("vm_assist"), 0, 77, store=1)
              + hypercall(pv_hc("set_segment_base"), 9, 0, store=2)
              + hypercall(pv_hc("set_gdt"), "results", pv.FIRST_RESERVED_GDT_ENTRY + 1, store=3)
              + hypercall(pv_hc("hvm_op"), 1, "results", store=4) + DONE)
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert [result_at(m, symbols, i) for i in range(5)] == [ENOSYS, EINVAL, EINVAL, EINVAL, ENOSYS]
    assert {e.name for e in calls(m) if e.result in (EINVAL, ENOSYS)} >= {
        "hypercall_99", "vm_assist.enable", "set_segment_base", "set_gdt", "hvm_op.get_param"}


# -- page-table updates that would map memory the domain does not own ------------------------------
def l1_entry_for(va: str) -> str:
    """Assembly leaving in RDI the virtual address of the bootstrap L1 entry that maps ``va``: the
    tables are L4, L3, L2, then the L1s (the guest's image is below 2 MiB), at start_info.pt_base."""
    return (f"mov 88(%r15), %rdi\n    add $0x3000, %rdi\n    lea {va}(%rip), %rax\n    shr $12, %rax\n    "
            f"lea (%rdi,%rax,8), %rdi\n    ")


def update_va_mapping(va: str, pte: str, store: int) -> str:
    return (f"lea {va}(%rip), %rdi\n    mov {pte}, %rsi\n    xor %edx, %edx\n    mov $14, %eax\n    syscall\n    "
            f"mov %rax, results+{8 * store}(%rip)\n    ")


@pytest.mark.parametrize("dom0", [False, True])
def test_update_va_mapping_refuses_frames_the_domain_does_not_own(dom0):
    xen_frame = 0xFF_0000_0000 | 0x23            # Xen's private memory (its M2P and tables)
    outside = 0xFEE0_0000 | 0x23                 # the local APIC page: I/O memory, not RAM
    source = (f"movabs ${xen_frame:#x}, %r12\n    movabs ${outside:#x}, %r13\n    "
              + update_va_mapping("scratch", "%r12", 0) + update_va_mapping("scratch", "%r13", 1) + DONE
              + ".balign 4096\nscratch: .skip 4096\n")
    result, m, symbols = run_pv(source, dom0=dom0)
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 0) == EINVAL
    assert result_at(m, symbols, 1) == (0 if dom0 else EINVAL)     # dom0 may map I/O memory
    refused = [e for e in calls(m, "update_va_mapping") if e.result == EINVAL]
    assert "Xen's own memory" in refused[0].args["why"]


def test_a_writable_mapping_of_a_pinned_table_is_refused():
    # The bootstrap L4 is pinned; its L1 entry maps it read-only.  Asking for RW is refused.
    source = (l1_entry_for("_start") + "mov 88(%r15), %rdi\n    mov 88(%r15), %rax\n    shr $12, %rax\n    "
              "mov 0x3000(%rdi,%rax,8), %r12\n    or $2, %r12\n    mov 88(%r15), %rbx\n    "
              "mov %rbx, %rdi\n    mov %r12, %rsi\n    xor %edx, %edx\n    mov $14, %eax\n    syscall\n    "
              "mov %rax, results(%rip)\n    " + DONE)
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 0) == EINVAL
    [event] = calls(m, "update_va_mapping")
    assert "pinned L4" in event.args["why"]


def test_mmu_update_of_a_xen_l4_slot_is_refused():
    # mmu_update{ptr = machine address of L4 slot 256, val = anything}: Xen owns slots 256-271.
    # The L4's machine frame: p2m[pt_base >> 12] (start_info.mfn_list at offset 104).
    source = ("mov 88(%r15), %rax\n    shr $12, %rax\n    mov 104(%r15), %rbx\n    mov (%rbx,%rax,8), %rax\n    "
              "shl $12, %rax\n    add $2048, %rax\n    mov %rax, req(%rip)\n    movq $0x1067, req+8(%rip)\n    "
              + hypercall(pv_hc("mmu_update"), "req", 1, 0, x.DOMID_SELF, store=0) + DONE
              + ".balign 8\nreq: .quad 0, 0\n")
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 0) == EINVAL
    [event] = calls(m, "mmu_update")
    assert "slot 256 belongs to Xen" in event.args["why"] and event.args["done"] == 0


# -- writable page tables, exceptions, forced emulation ----------------------------------------------
def test_a_store_into_a_read_only_page_table_is_emulated():
    # Remap `scratch` to the frame of `other` by writing its (read-only) L1 entry with a plain mov.
    source = (l1_entry_for("other") + "mov (%rdi), %r12\n    " + l1_entry_for("scratch")
              + "mov %r12, (%rdi)\n    movq $0x1234, scratch(%rip)\n    mov other(%rip), %rax\n    "
              "mov %rax, results(%rip)\n    " + DONE + ".balign 4096\nscratch: .skip 4096\nother: .skip 4096\n")
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 0) == 0x1234          # the write through scratch landed in other
    [fault] = [e for e in m.events if isinstance(e, Fault)]
    assert fault.vector == 14 and fault.detail.startswith("ptwr emulation (mov into L1")


def test_an_exception_is_bounced_to_the_trap_table_and_iret_returns():
    source = (hypercall(pv_hc("set_trap_table"), "traps", store=0) + "ud2\n    back:\n    " + DONE
              + "handler:\n    mov (%rsp), %rax\n    mov %rax, results+8(%rip)\n    mov 16(%rsp), %rax\n    "
              "mov %rax, results+16(%rip)\n    pop %rcx\n    pop %r11\n    lea back(%rip), %rax\n    "
              "mov %rax, (%rsp)\n    push $0\n    push %rcx\n    push %r11\n    push %rax\n    mov $23, %eax\n    syscall\n"
              ".balign 16\ntraps: .byte 6, 0\n .word 0xe033\n .long 0\n .quad handler\n .quad 0, 0\n")
    result, m, symbols = run_pv("mov $0x5151, %rcx\n    " + source)
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 1) == 0x5151                   # RCX saved first in the frame
    assert result_at(m, symbols, 2) == symbols["back"] - 2      # the RIP of the ud2
    [fault] = [e for e in m.events if isinstance(e, Fault)]
    assert fault.name == "#UD" and fault.detail.startswith("bounce frame to")


def test_an_exception_without_a_trap_handler_crashes_the_domain():
    result, m, _ = run_pv("ud2\n    " + DONE)
    assert result.stop.kind == "crash"
    assert "#UD" in result.stop.detail and "no handler in the trap table" in result.stop.detail


def test_forced_emulation_cpuid_answers_xen_leaves_and_hides_pse():
    source = ("mov $0x40000000, %eax\n    xor %ecx, %ecx\n    ud2\n    .ascii \"xen\"\n    cpuid\n    "
              "mov %ebx, results(%rip)\n    mov $1, %eax\n    cpuid\n    mov %edx, results+8(%rip)\n    " + DONE)
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert struct.pack("<I", result_at(m, symbols, 0)) == b"XenV"
    assert not result_at(m, symbols, 1) & (1 << 3)             # PSE hidden, as Xen's PV policy does


def test_iret_to_user_mode_without_a_user_page_table_crashes_the_domain():
    source = ("push $0x2b\n    push $0\n    push $0x202\n    push $0x33\n    push $0x1000\n    push $0\n"
              "    push %r11\n    push %rcx\n    push %rax\n    mov $23, %eax\n    syscall\n    " + DONE)
    result, _, _ = run_pv(source)
    assert result.stop.kind == "crash" and "no user page table" in result.stop.detail


# -- the privilege model: what the guest observes ----------------------------------------------------
def test_the_pv_kernel_runs_in_ring_1_and_xen_emulates_its_privileged_instructions():
    # Xen would show CS 0xe033 (ring 3); hvsim runs the kernel in ring 1 on the same descriptors
    # with RPL 1 and a NULL SS of RPL 1 (Xen's 0xe02b is user space's SS).  An iretq to itself
    # (Linux's sync_core) keeps it there.  What ring 1 may not execute raises #GP, which Xen's
    # emulator completes (rdmsr, mov from CR4) or leaves to the guest (cli at vIOPL 0: no trap
    # handler here, so the domain crashes as on Xen).
    source = ("mov %cs, %ax\n    mov %ax, results(%rip)\n    mov %ss, %ax\n    mov %ax, results+8(%rip)\n    "
              "mov %ss, %eax\n    push %rax\n    push %rsp\n    addq $8, (%rsp)\n    pushf\n    mov %cs, %eax\n    "
              "push %rax\n    lea 1f(%rip), %rax\n    push %rax\n    iretq\n1:\n    mov %cs, %ax\n    "
              "mov %ax, results+16(%rip)\n    mov $0xc0000080, %ecx\n    rdmsr\n    mov %eax, results+24(%rip)\n    "
              "mov %cr4, %rax\n    mov %rax, results+32(%rip)\nkernel_cli:\n    cli\n    " + DONE)
    result, m, symbols = run_pv(source)
    assert [result_at(m, symbols, i) & 0xFFFF for i in range(3)] == [0xE031, 1, 0xE031]
    assert result_at(m, symbols, 3) == 0xD01                  # EFER: SCE LME LMA NXE
    assert result_at(m, symbols, 4) == 0x620                  # CR4 as Xen's builder leaves it
    faults = [e for e in m.events if isinstance(e, Fault)]
    assert [f.name for f in faults] == ["#GP", "#GP", "#GP"]
    assert faults[0].detail.startswith("emulated as Xen does: rdmsr") and "0xc0000080" in faults[0].detail
    assert faults[1].detail.startswith("emulated as Xen does: mov rax, cr4")
    assert faults[2].rip == symbols["kernel_cli"] and not faults[2].delivered
    assert result.stop.kind == "crash" and "#GP" in result.stop.detail, result.stop


# -- long calls are continued, as Xen continues them ------------------------------------------------
LONG = ("    .balign 8\nreqs:\n    .rept 5000\n    .quad 0x100001, 0x100\n    .endr\n")   # M2P[0x100] = 0x100


def test_a_long_mmu_update_is_continued_and_counts_every_request():
    source = hypercall(pv_hc("mmu_update"), "reqs", 5000, "results+8", x.DOMID_SELF, store=0) + DONE + LONG
    result, m, symbols = run_pv(source)
    assert_finished(result, m, symbols)
    assert result_at(m, symbols, 0) == 0 and result_at(m, symbols, 1) == 5000     # rc, done
    parts = calls(m, "mmu_update")
    assert len(parts) == 5 and all(p.args.get("continued") for p in parts[:4]) and parts[4].result == 0
    assert [p.args["count"] for p in parts] == [5000, 3976, 2952, 1928, 904]


def test_a_runaway_hypercall_still_ends_at_the_wall_clock_limit():
    # 1 Mi zero requests (each an MMU_NORMAL_PT_UPDATE writing 0 at machine address 0): far more work
    # than the timeout allows; each continuation hands control back to the run loop, which stops it.
    source = (hypercall(pv_hc("mmu_update"), "zeros", 1 << 20, 0, x.DOMID_SELF, store=0) + DONE
              + "    .balign 4096\nzeros: .skip 16 << 20\n")
    result, m, _ = run_pv(source, timeout=0.5)
    assert result.stop.kind == "timeout", result.stop
    parts = calls(m, "mmu_update")
    assert parts and all(p.args.get("continued") for p in parts)


# -- a kernel linked at virtual address 0 ---------------------------------------------------------------
def test_a_kernel_linked_and_entered_at_virtual_address_0_runs_its_first_instruction():
    # VIRT_BASE 0 and the entry at 0: the page below the entry (the top of the address space) is
    # mapped by nothing.  The guest must start at 0 as any other, not take a #PF there.
    result, m, symbols = run_pv(DONE, base=0)
    assert symbols["_start"] == 0
    assert [e for e in m.events if isinstance(e, Fault)] == []
    assert_finished(result, m, symbols)
