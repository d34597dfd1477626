"""The example third-party environment (examples/kvm_pvh), installed through its entry point: the probe
boots under it and sees the MachineConfig, the guest finds KVM (CPUID signature, kvmclock, KVM
hypercalls), and the matrix shows it beside the in-tree environments."""

from __future__ import annotations

import json
import struct
import zlib
from importlib.metadata import entry_points

from elftools.elf.elffile import ELFFile

from guestcode import assemble
from hvsim.core.clock import WALLCLOCK_EPOCH_S
from hvsim import MachineConfig
from hvsim.abi.xen_elfnote import XEN_ELFNOTE_PHYS32_ENTRY
from hvsim.api import Run
from hvsim.cli import main
from hvsim.core.layout import PhysicalLayout
from hvsim.probe_report import parse_probe_report
from imagegen import Load, build_elf, xen_note

CODE, DATA = 0x100000, 0x80000
TIME_INFO, WALL_CLOCK, SIGNATURE, RESULTS = DATA, DATA + 0x40, DATA + 0x60, DATA + 0x80


def test_the_example_is_installed_through_its_entry_point(capsys):
    (entry,) = [e for e in entry_points(group="hvsim") if e.name == "kvm_pvh"]
    assert entry.value == "hvsim_kvm_pvh" and entry.dist.name == "hvsim-kvm-pvh"
    assert main(["envs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kvm_pvh"]["plugin"] == "kvm_pvh"


def test_the_probe_boots_under_kvm_pvh_and_sees_the_config(tmp_path, capsys):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(bytes(range(256)) * 999)
    out = tmp_path / "run.json"
    status = main(["run", "--env", "kvm_pvh", "--memory", "6G", "--smp", "2", "--initrd", str(initrd),
                   "--cmdline", "console=ttyS0 kvm ✓", "--json", str(out)])
    assert status == 0
    result = json.loads(out.read_text())
    report = parse_probe_report(result["console"])
    config = MachineConfig(memory="6G", smp=2, cmdline="console=ttyS0 kvm ✓")
    assert report.entry == "pvh" and report.cmdline == "console=ttyS0 kvm ✓"
    assert report.memmap == tuple(r.to_tuple() for r in PhysicalLayout.for_config(config).memory_map)
    assert report.initrd[1:] == (256 * 999, zlib.crc32(initrd.read_bytes())) and report.cpus == 2
    # no Xen to be found: the probe used COM1 and ACPI, as on a PC
    assert {e["channel"] for e in result["events"] if e["kind"] == "ConsoleOutput"} == {"serial0"}
    assert result["stop"]["detail"] == "poweroff via acpi-pm1a-s5"


KVM_GUEST = f"""
    mov $0x4b564d01, %ecx          # MSR_KVM_SYSTEM_TIME_NEW = time info | enabled
    mov ${TIME_INFO | 1}, %eax
    xor %edx, %edx
    wrmsr
    mov $0x4b564d00, %ecx          # MSR_KVM_WALL_CLOCK_NEW
    mov ${WALL_CLOCK}, %eax
    wrmsr
    mov $0x4b564d01, %ecx          # read it back
    rdmsr
    mov %eax, {RESULTS + 8}
    mov $0x40000000, %eax
    cpuid
    mov %eax, {SIGNATURE + 12}
    mov %ebx, {SIGNATURE}
    mov %ecx, {SIGNATURE + 4}
    mov %edx, {SIGNATURE + 8}
    mov $0x40000001, %eax
    cpuid
    mov %eax, {RESULTS + 12}
    mov $1, %eax                   # KVM_HC_VAPIC_POLL_IRQ
    vmcall
    mov %eax, {RESULTS}
    mov $99, %eax                  # no such hypercall
    vmmcall
    mov %eax, {RESULTS + 4}
    cli
    hlt
"""


def pvh_guest(source: str) -> bytes:
    """A PVH ELF32: ``source`` (32-bit code) at 1 MiB, entered there through a PHYS32_ENTRY note."""
    linked, _ = assemble(source, bits=32, base=CODE)
    elf = ELFFile(__import__("io").BytesIO(linked))
    code = elf.get_section_by_name(".text").data()
    return build_elf(bits=32, entry=CODE, loads=[Load(CODE, code)],
                     notes=[xen_note(XEN_ELFNOTE_PHYS32_ENTRY, CODE, size=4)])


def test_a_guest_finds_kvm_kvmclock_and_kvm_hypercalls():
    prepared = Run("kvm_pvh", pvh_guest(KVM_GUEST), MachineConfig(memory="64M"))
    result = prepared.execute()
    memory = prepared.machine.memory

    assert result.stop.kind == "halt", result.stop
    signature = memory.read(SIGNATURE, 12)
    assert signature == b"KVMKVMKVM\0\0\0" and memory.read_u32(SIGNATURE + 12) == 0x40000001
    assert memory.read_u32(RESULTS + 12) == (1 << 0 | 1 << 3 | 1 << 24)   # CLOCKSOURCE, CLOCKSOURCE2, STABLE
    # kvmclock: pvclock_vcpu_time_info written where the guest asked, readable back through the MSR
    version, _, tsc, system_time, mul, shift, flags = struct.unpack("<IIQQIbB2x", memory.read(TIME_INFO, 32))
    assert version % 2 == 0 and version > 0
    assert 0 < system_time <= prepared.machine.guest_ns()
    assert (mul, shift, flags) == (1 << 31, 1, 1)
    assert memory.read_u32(RESULTS + 8) == TIME_INFO | 1
    wall_version, sec, nsec = struct.unpack("<III", memory.read(WALL_CLOCK, 12))
    # the wallclock is the machine's fixed epoch (guest time 0), never the host's clock
    assert wall_version % 2 == 0 and (sec, nsec) == (WALLCLOCK_EPOCH_S, 0)
    # hypercalls: poll_irq answers 0, an unknown number -KVM_ENOSYS; both recorded
    assert memory.read_u32(RESULTS) == 0 and memory.read_u32(RESULTS + 4) == (-1000) & 0xFFFF_FFFF
    calls = [(e.interface, e.name, e.result) for e in result.events if e.kind == "Call"]
    assert calls == [("msr", "wrmsr 0x4b564d01", None), ("msr", "wrmsr 0x4b564d00", None),
                     ("msr", "rdmsr 0x4b564d01", TIME_INFO | 1),
                     ("kvm-hypercall", "vapic_poll_irq", 0), ("kvm-hypercall", "hypercall_99", -1000)]


def test_the_matrix_shows_kvm_pvh_beside_the_others(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["matrix", "--envs", "bare_metal,xen_pvh,kvm_pvh", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    kvm = data["environments"]["kvm_pvh"]["semantics"]
    assert kvm["hypervisor"] == "KVMKVMKVM" and kvm["entry"] == "pvh"
    assert {d["field"] for d in data["differences"] if d["environment"] == "kvm_pvh"} == {
        "entry", "entry_mode", "hypervisor"}
    table = capsys.readouterr().out.splitlines()
    assert any("bare_metal" in line and "kvm_pvh" in line for line in table)    # the columns' header
