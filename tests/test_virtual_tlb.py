"""The native TLB filler (``--tlb native``, the default; _native.c vtlb_fill) against the engine's own
walker (``--tlb engine``): the same faults with the same error codes and CR2, the same accessed and
dirty bits, self-modifying code through a second mapping, ``invlpg`` inside a large page, and the
hand-overs to the engine's walker (user mode, ``invlpg``).  Every guest builds its own page tables: a 2 MiB
identity page for the code at 0x100000, and 4 KiB pages for 0x200000-0x3FFFFF through one table."""

import pytest

from guestcode import run_raw

PAGE_TABLES = """
    .set PML4, 0x200000
    .set PDPT, 0x201000
    .set PD,   0x202000
    .set PT,   0x203000
    mov $PML4, %rdi
    xor %eax, %eax
    mov $(4 * 4096 / 8), %ecx
    rep stosq
    movq $(PDPT + 3), PML4
    movq $(PD + 3), PDPT
    movq $0x83, PD                    /* 0-2 MiB: one large page, RW */
    movq $(PT + 3), PD + 8            /* 2-4 MiB: 4 KiB pages */
    movq $(PML4 + 3), PT              /* the tables themselves, RW */
    movq $(PDPT + 3), PT + 8
    movq $(PD + 3), PT + 16
    movq $(PT + 3), PT + 24
    mov $0xC0000080, %ecx             /* EFER.NXE */
    rdmsr
    or $0x800, %eax
    wrmsr
    mov %cr0, %rax                    /* CR0.WP */
    or $0x10000, %eax
    mov %rax, %cr0
"""
LOAD_CR3 = """
    mov $PML4, %rax
    mov %rax, %cr3
"""
HANDLERS = """
fault:                                /* #PF and #GP: error code in RBX, CR2 in RCX, then stop */
    pop %rbx
    mov %cr2, %rcx
    hlt
"""
GATES = {13: "fault", 14: "fault"}


def run(body: str, tlb: str, mappings: str = "", **config):
    source = f".globl _start\n_start:\n{PAGE_TABLES}{mappings}{LOAD_CR3}{body}\n    hlt\n{HANDLERS}"
    result, machine, _ = run_raw(source, gates=GATES, tlb=tlb, **config)
    faults = [(e.name, e.error_code, e.cr2, e.rip) for e in result.events if e.kind == "Fault"]
    return result, machine, faults


def map_page(index: int, value: int) -> str:
    return f"    movabs ${value:#x}, %rax\n    mov %rax, PT + {index * 8}\n"


CASES = {
    # name: (mappings, body, expected (vector name, error code, cr2))
    "not present": ("", "mov 0x210000, %rax", ("#PF", 0x0, 0x210000)),
    "write to read-only": (map_page(0x11, 0x211001), "movl $1, 0x211000", ("#PF", 0x3, 0x211000)),
    "fetch from NX": (map_page(0x12, 0x212003 | 1 << 63) + "    movb $0xc3, 0x212000\n",
                      "mov $0x212000, %eax\n    call *%rax", ("#PF", 0x11, 0x212000)),
    "reserved bit": (map_page(0x13, 0x213003 | 1 << 45), "mov 0x213000, %rax", ("#PF", 0x9, 0x213000)),
    "not present write": ("", "movl $1, 0x214008", ("#PF", 0x2, 0x214008)),
    "non-canonical": ("", "movabs $0x0000800000000000, %rax\n    mov (%rax), %rax", ("#GP", 0, None)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_faults_are_the_engines(name):
    mappings, body, (vector, error, cr2) = CASES[name]
    seen = {}
    for tlb in ("native", "engine"):
        result, machine, faults = run(body, tlb, mappings)
        assert result.stop.kind == "halt", (tlb, result.stop)
        assert len(faults) == 1, (tlb, faults)
        seen[tlb] = faults[0]
        assert faults[0][:2] == (vector, error), (tlb, faults)
        if cr2 is not None:
            assert faults[0][2] == cr2, (tlb, faults)
            assert machine.reg("rcx") == cr2
        assert machine.reg("rbx") == error
    assert seen["native"] == seen["engine"]
    # the native walker answered this run (it did not hand over)
    result, machine, _ = run(body, "native", mappings)
    assert machine.native.control.vtlb_fills > 0 and machine.native.virtual_tlb


def test_accessed_and_dirty_bits_are_set_as_the_engine_sets_them():
    mappings = map_page(0x20, 0x220003) + map_page(0x21, 0x221003) + map_page(0x22, 0x222003)
    body = "mov 0x220000, %rax\n    movl $7, 0x221000\n    mov $0x222000, %eax\n    mov (%rax), %rax"
    entries = {}
    for tlb in ("native", "engine"):
        result, machine, faults = run(body, tlb, mappings)
        assert result.stop.kind == "halt" and not faults, (tlb, result.stop, faults)
        table = machine.memory.read(0x203000 + 0x20 * 8, 24)
        entries[tlb] = [int.from_bytes(table[i:i + 8], "little") for i in (0, 8, 16)]
        pd = int.from_bytes(machine.memory.read(0x202008, 8), "little")
        assert pd & 0x20, f"{tlb}: the PDE's accessed bit"
    assert entries["native"] == entries["engine"]
    assert entries["native"] == [0x220023, 0x221063, 0x222023]     # A; A+D; A


def test_code_written_through_another_mapping_runs_as_written():
    """0x230000 maps the physical page 0x300000 executable, 0x231000 maps it again as data.  The guest
    stores a `mov $1, %eax; ret` through the data mapping before the page is ever fetched (so the
    filler grants that store without exec), runs it, rewrites it through the data mapping, runs it
    again: the second call must see the new code."""
    mappings = map_page(0x30, 0x300003) + map_page(0x31, 0x300003)
    body = """
    movl $0x000001b8, 0x231000        /* b8 01 00 00 00 c3: mov $1, %eax; ret */
    movw $0xc300, 0x231004
    mov $0x230000, %edx
    call *%rdx
    mov %eax, %esi
    movb $2, 0x231001                 /* now mov $2, %eax */
    call *%rdx
    mov %eax, %edi
"""
    for tlb in ("native", "engine"):
        result, machine, faults = run(body, tlb, mappings)
        assert result.stop.kind == "halt" and not faults, (tlb, result.stop, faults)
        assert (machine.reg("rsi"), machine.reg("rdi")) == (1, 2), tlb


def test_invlpg_inside_a_large_page_drops_all_of_it():
    """The engine's TLB holds 4 KiB pieces of a 2 MiB page; the guest remaps the large page and
    invalidates one address inside it: an access to another piece must use the new mapping."""
    body = """
    movq $0x600083, PD + 24           /* PD[3]: 6-8 MiB -> physical 6 MiB */
    movq $0x800083, PD + 32           /* PD[4]: 8-10 MiB, identity */
    movl $0x11, 0x600000
    movl $0x22, 0x801000              /* physical 8 MiB + 4 KiB: the second piece after the remap */
    mov %cr3, %rax
    mov %rax, %cr3
    mov 0x601000, %eax                /* fills the piece at 6 MiB + 4 KiB */
    movq $0x800083, PD + 24           /* remap the large page to physical 8 MiB */
    invlpg 0x600000                   /* an address in another piece */
    mov 0x601000, %esi                /* must read physical 0x801000 now */
"""
    for tlb in ("native", "engine"):
        result, machine, faults = run(body, tlb, map_bytes=1 << 30)
        assert result.stop.kind == "halt" and not faults, (tlb, result.stop, faults)
        assert machine.reg("rsi") == 0x22, tlb
    # a guest that invalidates single entries manages its TLB itself: the native filler hands over
    # at its first invlpg, and later ones run in the engine without an exit
    assert machine.native.handover_reason() is None                  # the engine run: never on
    result, machine, _ = run(body + "    invlpg 0x601000\n    invlpg 0x602000\n", "native", map_bytes=1 << 30)
    assert result.stop.kind == "halt"
    assert not machine.native.virtual_tlb and machine.native.handover_reason().startswith("invlpg")
    assert not machine.guest_mode.intercept_invlpg


def test_it_hands_over_to_the_engine_in_user_mode():
    """At CPL 3 the filler cannot tell the CPU's implicit supervisor accesses from the program's: the
    ring-3 guest of test_privilege (int, syscall/sysret, IST, a user #PF) runs the same, and the
    filler hands over to the engine's walker at its first fill in user mode."""
    from test_privilege import ring3_guest

    seen = {}
    for tlb in ("native", "engine"):
        source, check = ring3_guest()
        result, m, sym = run_raw(source, tlb=tlb)
        check(result, m, sym)
        seen[tlb] = [(e.name, e.error_code, e.cr2, e.rip) for e in result.events if e.kind == "Fault"]
        if tlb == "native":
            assert not m.native.virtual_tlb
            assert m.native.handover_reason() == "code at CPL 3"
    assert seen["native"] == seen["engine"]


def test_page_tables_in_the_hypervisors_own_memory_are_walked_natively():
    """Xen's M2P is mapped into every PV guest through page tables in Xen's frames, outside the
    domain's RAM (Machine.add_private_memory): the filler walks them too, and a PV kernel reading
    the M2P (as Linux does at boot) keeps it on."""
    from test_xen_pv_bad_input import DONE, run_pv

    from hvsim.abi import xen_pv as pv

    source = f"""
    mov (%r15), %rax               /* start_info's first word, through the kernel's own mapping */
    movabs ${pv.MACH2PHYS_VIRT_START:#x}, %rbx
    mov (%rbx), %rcx               /* the M2P entry of machine frame 0 */
    mov %rcx, results(%rip)
    {DONE}"""
    result, machine, symbols = run_pv(source)
    assert result.stop.kind == "poweroff", result.stop
    assert machine.native.virtual_tlb, machine.native.handover_reason()
    assert machine.native.control.vtlb_fills > 0


def _random_case(rng):
    """Page-table entries with random flags (present, RW, US, A, D, PS, NX, reserved bits) in the
    4 KiB table and the page directory, CR0.WP/EFER.NXE/CR4.SMEP/SMAP chosen at random, and one
    read, write or fetch somewhere in the 2 MiB the entries map (or just past it)."""
    flags = [0x1, 0x2, 0x4, 0x20, 0x40, 0x80, 1 << 63, 1 << 45, 1 << 52, 1 << 8]
    setup = ""
    mapped = rng.sample(range(0x20, 0x40), 6)
    for index in mapped:
        value = (0x300000 + rng.randrange(16) * 0x1000) | sum(f for f in flags if rng.random() < 0.45) | 1
        if rng.random() < 0.1:
            value &= ~1
        setup += map_page(index, value)
    if rng.random() < 0.3:                      # the directory entry above the table: flags too
        pd = 0x203000 | 0x3 | sum(f for f in (0x4, 1 << 63, 0x20) if rng.random() < 0.5)
        setup += f"    movabs ${pd:#x}, %rax\n    mov %rax, PD + 8\n"
    cr4 = rng.choice([0, 1 << 20, 1 << 21, 3 << 20])
    wp = rng.random() < 0.7
    setup += "    mov %cr4, %rax\n" + f"    or ${cr4:#x}, %rax\n" + "    mov %rax, %cr4\n"
    if not wp:
        setup += "    mov %cr0, %rax\n    and $~0x10000, %rax\n    mov %rax, %cr0\n"
    if rng.random() < 0.3:
        setup += "    mov $0xC0000080, %ecx\n    rdmsr\n    and $~0x800, %eax\n    wrmsr\n"
    page = rng.choice(mapped) if rng.random() < 0.85 else rng.randrange(0x20, 0x40)
    address = 0x200000 + page * 0x1000 + rng.choice([0, 8, 0xFF8, 0x123])
    kind = rng.choice(["read", "write", "fetch"])
    body = {"read": f"mov {address:#x}, %rax",
            "write": f"movq $5, {address:#x}",
            "fetch": f"mov ${address:#x}, %eax\n    call *%rax"}[kind]
    return setup, body


@pytest.mark.parametrize("seed", range(60))
def test_random_page_tables_fault_and_age_as_under_the_engines_walker(seed):
    """A differential test of the walk: random entries and paging controls, one access; the fault
    (vector, error code, CR2, RIP) and every entry's accessed/dirty bits afterwards must be the
    engine's.  (The CPU's SMEP/SMAP are only offered where the guest's CPUID has them: cr4.py may
    refuse the write with #GP, which both runs then see alike.)"""
    import random

    rng = random.Random(seed)
    mappings, body = _random_case(rng)
    seen = {}
    for tlb in ("native", "engine"):
        result, machine, faults = run(body, tlb, mappings)
        tables = machine.memory.read(0x202000, 0x2000)
        seen[tlb] = (result.stop.kind, faults, tables, machine.reg("rbx"), machine.reg("rcx"))
    assert seen["native"] == seen["engine"], (mappings, body)
