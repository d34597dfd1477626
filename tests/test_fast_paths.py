"""The native block hook's ``rep stos``/``rep movs`` fast path (_native.c, rep_string) changes no guest-visible
state: the same memory, registers, block count (guest time) and, where a store faults, the same #PF
with RCX/RDI at the faulting element, as the engine iterating one block per element; and timer events
that fall due inside a long ``rep`` see the same iteration.  Each case runs with the fast path on and
off (``NativeControl.rep_fast``) and compares; the "on" run must have used it."""

from __future__ import annotations

import zlib

import pytest

from hvsim import MachineConfig, get_plugin_manager, hookimpl
from hvsim.api import Run
from hvsim.core.result import StopReason
from hvsim.kernels import init_cpio_path

from guestcode import DATA, RawEnv, assemble
from linux_kernel import debian_vmlinuz
from test_linux_init import vmlinux  # noqa: F401  (the module-scoped fixture)

# The guest unmaps 16M..18M (PDE 8 of the identity map's first PD), then runs each rep string form
# across page boundaries, and finally a rep stosq whose element straddles into the unmapped page.
SOURCE = f"""
    mov %cr3, %rax
    mov (%rax), %rax
    and $~0xfff, %rax
    mov (%rax), %rax
    and $~0xfff, %rax
    movq $0, 64(%rax)
    invlpg 0x1000000
    cld
    mov $0x200008, %rdi
    mov $(3 * 512 + 3), %rcx
    mov $0x1122334455667788, %rax
    rep stosq
    mov %rdi, {DATA}
    mov %rcx, {DATA + 8}
    mov $0x300003, %rdi
    mov $10000, %rcx
    mov $0xa5, %al
    rep stosb
    mov $0x200008, %rsi
    mov $0x400005, %rdi
    mov $9000, %rcx
    rep movsb
    mov $0x300003, %rsi
    mov $0x500000, %rdi
    mov $1500, %rcx
    rep movsq
    mov $0x600002, %rdi
    mov $3000, %rcx
    mov $0xdeadbeef, %eax
    rep stosl
    mov $0x200000, %rsi
    mov $0x200100, %rdi
    mov $5000, %rcx
    rep movsb
    mov $(0x1000000 - 0x3000 - 4), %rdi
    mov $10000, %rcx
    rep stosq
    hlt
pf_handler:
    mov %rdi, {DATA + 16}
    mov %rcx, {DATA + 24}
    mov %cr2, %rax
    mov %rax, {DATA + 32}
    mov %rsi, {DATA + 40}
    hlt
"""


def run(fast: bool, ticks_ns: int | None = None):
    code, symbols = assemble(SOURCE)
    env = RawEnv(64, {14: symbols["pf_handler"]})
    pm = get_plugin_manager(load_entrypoints=False, plugins=[env])
    prepared = Run("raw", code, MachineConfig(memory="64M", timeout=30), pm=pm)
    m = prepared.machine
    m.native.control.rep_fast = int(fast)
    seen = []
    if ticks_ns:
        def tick():
            seen.append((m.clock.now(), m.reg("rcx"), m.reg("rdi"), m.reg("rip")))
            if len(seen) < 400:
                m.clock.schedule_in(ticks_ns, tick)
        m.clock.schedule_in(ticks_ns, tick)
    result = prepared.execute()
    memory = zlib.crc32(m.memory.read(0x200000, 0x500000))
    regs = {r: m.reg(r) for r in ("rcx", "rdi", "rsi", "rip", "cr2")}
    return result, m, memory, regs, seen


def test_rep_strings_fast_path_equals_the_engine_iteration_by_iteration():
    fast, slow = run(True), run(False)
    (r1, m1, mem1, regs1, _), (r0, m0, mem0, regs0, _) = fast, slow
    assert m1.native.control.rep_chunks > 10 and m0.native.control.rep_chunks == 0
    assert (r1.stop.kind, r0.stop.kind) == ("halt", "halt")
    assert mem1 == mem0 and regs1 == regs0
    assert r1.stats.blocks == r0.stats.blocks                     # the same guest time
    data = m1.memory.read(DATA, 48)
    ints = [int.from_bytes(data[i:i + 8], "little") for i in range(0, 48, 8)]
    assert ints[0] == 0x200008 + 8 * (3 * 512 + 3) and ints[1] == 0
    # the straddling element faults: RDI at it, RCX counting it, CR2 the first unmapped byte
    start = 0x1000000 - 0x3000 - 4
    assert ints[2] == start + 8 * 0x600 == 0x1000000 - 4 and ints[3] == 10000 - 0x600 and ints[4] == 0x1000000
    assert m1.memory.read(0x200008, 16) == bytes.fromhex("8877665544332211") * 2
    assert m1.memory.read(0x300003 + 9999, 2) == b"\xa5\x00"
    assert m1.memory.read(0x600002, 4) == (0xdeadbeef).to_bytes(4, "little")
    assert m1.memory.read(0xFFFFF4, 8) == bytes.fromhex("efbeadde00000000")   # RAX, the last whole element


@pytest.mark.parametrize("tick_ns", [1_000, 3_330])
def test_events_inside_a_rep_see_the_same_iteration(tick_ns):
    fast, slow = run(True, tick_ns), run(False, tick_ns)
    assert fast[1].native.control.rep_chunks > 0
    assert fast[4] == slow[4] and len(fast[4]) > 20
    assert fast[0].stats.blocks == slow[0].stats.blocks and fast[2] == slow[2]


# -- Debian's Linux, fast path on and off ---------------------------------------------------------
class StopAtBanner:
    @hookimpl
    def hvsim_event(self, machine, event):
        if event.kind == "ConsoleOutput" and "Linux version" in event.text:
            machine.stop(StopReason("poweroff", detail="banner (test)"))


def linux_run(kernel, fast: bool, *, initrd=None, observers=(), cmdline="console=ttyS0", tlb="native"):
    prepared = Run("bare_metal", kernel, MachineConfig(memory="512M", cmdline=cmdline, initrd=initrd, timeout=600,
                                                       tlb=tlb),
                   observers=list(observers))
    prepared.machine.native.control.rep_fast = int(fast)
    return prepared.execute(), prepared.machine


@pytest.mark.linux
def test_linux_to_init_is_the_same_boot_with_and_without_the_fast_path(vmlinux):  # noqa: F811
    # clear_bss, clear_page_rep, memcpy/memset: ~15% of the boot's blocks are rep string elements
    (fast, m1), (slow, m0) = (linux_run(vmlinux, on, initrd=init_cpio_path()) for on in (True, False))
    assert fast.stop.kind == slow.stop.kind == "poweroff"
    assert "hvsim-userspace: end" in fast.console()
    assert fast.console() == slow.console()                      # printk timestamps included
    assert fast.stats.blocks == slow.stats.blocks and fast.stats.interrupts == slow.stats.interrupts
    assert m1.native.control.rep_elements > 10_000_000 and m0.native.control.rep_elements == 0


@pytest.mark.linux
def test_bzimage_decompresses_the_same_kernel_with_and_without_the_fast_path():
    runs = [linux_run(debian_vmlinuz(), on, observers=[StopAtBanner()],
                      cmdline="earlyprintk=serial,ttyS0 console=ttyS0 nokaslr") for on in (True, False)]
    (fast, m1), (slow, m0) = runs
    assert "Linux version" in fast.console() and fast.console() == slow.console()
    assert fast.stats.blocks == slow.stats.blocks
    # the decompressed kernel at LOAD_PHYSICAL_ADDR (16 MiB), 48 MiB of it, as each run left it
    assert zlib.crc32(m1.memory.read(0x1000000, 48 << 20)) == zlib.crc32(m0.memory.read(0x1000000, 48 << 20))
    assert m1.native.control.rep_elements > 0


# -- Debian's Linux, the native TLB filler against the engine's walker ------------------------------
@pytest.mark.linux
def test_bzimage_decompresses_the_same_kernel_with_either_tlb_filler():
    """The in-guest decompressor is what the native filler is for (test_virtual_tlb.py has the
    small cases): the same console, blocks (guest time) and decompressed kernel as under the
    engine's walker, and the filler answered the whole way (it hands over at Linux's first invlpg,
    after the banner)."""
    runs = [linux_run(debian_vmlinuz(), True, observers=[StopAtBanner()], tlb=tlb,
                      cmdline="earlyprintk=serial,ttyS0 console=ttyS0 nokaslr") for tlb in ("native", "engine")]
    (native, m1), (engine, m0) = runs
    assert "Linux version" in native.console() and native.console() == engine.console()
    assert native.stats.blocks == engine.stats.blocks and native.stats.faults_delivered == engine.stats.faults_delivered
    assert zlib.crc32(m1.memory.read(0x1000000, 48 << 20)) == zlib.crc32(m0.memory.read(0x1000000, 48 << 20))
    assert m1.native.virtual_tlb and m1.native.control.vtlb_fills > 10_000 and m1.native.control.vtlb_faults > 0
    assert m0.native.control.vtlb_fills == 0


@pytest.mark.linux
def test_linux_to_init_is_the_same_boot_with_either_tlb_filler(vmlinux):  # noqa: F811
    (native, m1), (engine, m0) = (linux_run(vmlinux, True, initrd=init_cpio_path(), tlb=tlb)
                                  for tlb in ("native", "engine"))
    assert native.stop.kind == engine.stop.kind == "poweroff"
    assert native.console() == engine.console()                    # printk timestamps included
    assert native.stats.blocks == engine.stats.blocks and native.stats.interrupts == engine.stats.interrupts
    assert m1.native.handover_reason().startswith("invlpg")
