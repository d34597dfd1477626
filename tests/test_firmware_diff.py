"""A differential test against real firmware: the same guest under QEMU (TCG) and under hvsim, what
it reported compared field by field.

- The probe's EFI build, booted by OVMF from a FAT ESP as \\EFI\\BOOT\\BOOTX64.EFI (QEMU's ``pc``
  machine, Debian's ``ovmf``), against hvsim's ``efi``.
- The probe's ELF, booted by QEMU's own PVH loader (``-kernel probe.elf``, SeaBIOS), against hvsim's
  ``xen_pvh``, ``kvm_pvh`` and ``bare_metal``.
- (marker ``linux``) Debian's vmlinux with hvsim's /init as its initramfs, booted by QEMU's PVH loader,
  against hvsim's ``bare_metal --init``: what /init reports from userspace.

Every field that differs must be listed below with its reason, and every listed field must still
differ (a difference that went away is taken off the list).  The QEMU runs need Debian's
``qemu-system-x86`` and ``ovmf``; without them the tests skip saying so, except when ``CI`` is set
(``.ci/run`` installs them), where that is a failure.  Each QEMU run of the probe takes seconds.

Memory maps are compared by what their ranges are for, not by address (where a firmware puts its
allocations is its own choice): the ranges below 1 MiB, the E820 kinds in RAM, how many ranges of
each kind, where RAM ends, what is described above it, and the kind of range the RSDP lies in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from hvsim import MachineConfig
from hvsim.api import Run
from hvsim.kernels import init_cpio_path, probe_path
from hvsim.probe_report import parse_probe_report
from hvsim.userspace_report import parse_userspace_report

MEMORY = 512 << 20
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")        # Debian's ovmf: 2 MiB flash, code + a copy of the vars
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
QEMU = "qemu-system-x86_64"
QEMU_TIMEOUT = 600          # wall clock; OVMF under TCG boots in seconds on an idle machine
E820_RAM, E820_RESERVED, E820_ACPI, E820_NVS = 1, 2, 3, 4
BIOS_AREA = (0xE0000, 0x100000)
KIND = {E820_RAM: "usable", E820_RESERVED: "reserved", E820_ACPI: "acpi-reclaim", E820_NVS: "acpi-nvs"}


def need_qemu(firmware: bool = False) -> str:
    """The QEMU binary, or skip (fail when CI is set) saying what is missing."""
    missing = [] if shutil.which(QEMU) else [f"{QEMU} (Debian's qemu-system-x86)"]
    if firmware:
        missing += [f"{p} (Debian's ovmf)" for p in (OVMF_CODE, OVMF_VARS) if not p.exists()]
    if missing:
        why = "not installed: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(why + " — CI installs them (.ci/run)", pytrace=False)
        pytest.skip(why)
    return shutil.which(QEMU)


def run_qemu(tmp: Path, *args: str) -> str:
    """Run QEMU's ``pc`` machine (TCG, 512 MiB, one CPU, no network or display) until the guest powers
    off; return what it wrote to COM1."""
    serial = tmp / "com1.txt"
    command = [need_qemu(), "-machine", "pc", "-accel", "tcg", "-m", "512M", "-smp", "1", "-display", "none",
               "-monitor", "none", "-net", "none", "-no-reboot", "-serial", f"file:{serial}",
               "-device", "isa-debug-exit,iobase=0x501", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=QEMU_TIMEOUT)
    text = serial.read_bytes().decode("utf-8", "surrogateescape") if serial.exists() else ""
    # isa-debug-exit makes QEMU exit (code << 1) | 1; an ACPI power-off exits 0
    assert done.returncode in (0, 1), (done.returncode, done.stderr[-2000:], text[-2000:])
    return text.replace("\r\n", "\n")


def run_hvsim(env: str, kernel: Path, **config) -> str:
    result = Run(env, kernel, MachineConfig(memory="512M", **config)).execute()
    assert result.stop.kind == "poweroff", (result.stop.describe(), result.console()[-2000:])
    return result.console()


# -- what a report says, field by field ------------------------------------------------------------
def memmap_fields(memmap, rsdp: int | None) -> dict:
    """What the map's ranges are for (see the module docstring)."""
    ram = [(s, n, t) for s, n, t in memmap if s < MEMORY]
    counts = {}
    for s, n, t in ram:
        if s >= 1 << 20:
            counts[KIND.get(t, t)] = counts.get(KIND.get(t, t), 0) + 1
    holding_rsdp = next((t for s, n, t in memmap if rsdp is not None and s <= rsdp < s + n), None)
    return {
        "memmap_below_1m": tuple((s, n, KIND.get(t, t)) for s, n, t in ram if s < 1 << 20),
        "memmap_kinds": tuple(sorted(set(counts))),
        "memmap_ranges_per_kind": tuple(sorted(counts.items())),
        "memmap_ram_end": max(s + n for s, n, t in ram if t in (E820_RAM, E820_ACPI, E820_NVS)),
        "memmap_above_ram": tuple((s, n, KIND.get(t, t)) for s, n, t in memmap if s >= MEMORY),
        "rsdp_in": ("the BIOS area" if rsdp is not None and BIOS_AREA[0] <= rsdp < BIOS_AREA[1]
                    else KIND.get(holding_rsdp, holding_rsdp)),
    }


def probe_fields(console: str) -> dict:
    report = parse_probe_report(console)
    initrd = None if report.initrd is None else report.initrd[1:]      # size and CRC-32; where is the loader's
    return {"entry": report.entry, "cmdline": report.cmdline, "initrd": initrd,
            "acpi_tables": report.acpi_tables, "cpus": report.cpus, "hypervisor": report.hypervisor,
            **memmap_fields(report.memmap, report.rsdp)}


def differences(real: dict, ours: dict) -> dict:
    return {k: (real[k], ours.get(k)) for k in real if real[k] != ours.get(k)}


def assert_only_declared(real: dict, ours: dict, declared: dict[str, str]) -> None:
    found = differences(real, ours)
    undeclared = {k: v for k, v in found.items() if k not in declared}
    gone = sorted(set(declared) - set(found))
    assert not undeclared, "differences from real firmware not listed (real, hvsim): " + "".join(
        f"\n  {k}: {v[0]!r} / {v[1]!r}" for k, v in undeclared.items())
    assert not gone, f"listed differences that no longer differ (take them off the list): {gone}"


# -- the probe's EFI build: OVMF against hvsim efi ----------------------------------------------------
OVMF_DIFFERENCES = {
    "hypervisor": "QEMU's TCG CPU sets the hypervisor bit and answers 'TCGTCGTCGTCG' at 0x40000000; "
                  "hvsim's CPU is a bare PC's (no hypervisor bit)",
    "acpi_tables": "the tables are QEMU's (OVMF installs what fw_cfg gives it): hvsim models no HPET, so it "
                   "describes none; BGRT is OVMF's boot logo, which hvsim does not draw; WAET is QEMU's "
                   "note to Windows about its emulated RTC and PM timer",
    "memmap_ranges_per_kind": "both have edk2's memory type bins (runtime data and code, reserved, ACPI "
                              "reclaim, ACPI NVS: OVMF's sizes, tests/test_efi_acpi_memory.py), but OVMF also "
                              "keeps S3-resume memory as ACPI NVS (its SEC/PEI work areas at 0x800000-0x8FFFFF "
                              "and PEI's reserved top of RAM), PEI runtime data, and runtime pool beyond its "
                              "bin; hvsim has no S3 resume and no PEI phase",
    "memmap_above_ram": "OVMF describes its flash (code and variables, 0xFFE00000) as runtime MMIO; hvsim "
                        "models no flash: its variables live in the firmware's store, not in guest memory",
}


def test_the_probe_efi_sees_under_ovmf_what_it_sees_under_hvsim_efi(tmp_path):
    need_qemu(firmware=True)
    esp = tmp_path / "esp"
    (esp / "EFI" / "BOOT").mkdir(parents=True)
    shutil.copy(probe_path("efi"), esp / "EFI" / "BOOT" / "BOOTX64.EFI")
    variables = tmp_path / "OVMF_VARS.fd"
    shutil.copy(OVMF_VARS, variables)
    real = run_qemu(tmp_path, "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,file={variables}",
                    "-drive", f"file=fat:rw:{esp},format=raw")
    real_fields = probe_fields(real)
    ours = probe_fields(run_hvsim("efi", probe_path("efi")))
    # the shape both share, asserted as such so that a change on either side is seen here
    assert real_fields["entry"] == ours["entry"] == "efi"
    assert real_fields["rsdp_in"] == ours["rsdp_in"] == "acpi-reclaim"
    assert set(real_fields["memmap_kinds"]) == {"usable", "reserved", "acpi-reclaim", "acpi-nvs"}
    assert_only_declared(real_fields, ours, OVMF_DIFFERENCES)


# -- the probe's ELF: QEMU's PVH loader against hvsim xen_pvh and bare_metal --------------------------------
CMDLINE = "hello world"
QEMU_PVH_DIFFERENCES = {
    "acpi_tables": "QEMU's pc machine has an HPET (hvsim models none) and a WAET for Windows",
    "memmap_below_1m": "SeaBIOS reserves only 0xF0000-0xFFFFF of the BIOS area; hvsim reserves "
                       "0xE0000-0xFFFFF, where its ACPI tables are",
    **{field: "SeaBIOS reserves the top 128 KiB of RAM for its own tables"
       for field in ("memmap_kinds", "memmap_ranges_per_kind", "memmap_ram_end")},
    "memmap_above_ram": "QEMU's E820 lists the BIOS flash (0xFFFC0000) and AMD's HyperTransport hole "
                        "(0xFD00000000) as reserved; hvsim models neither",
}
ENV_DIFFERENCES = {
    "xen_pvh": {**QEMU_PVH_DIFFERENCES, "hypervisor": "a Xen PVH guest finds Xen at CPUID 0x40000000"},
    "kvm_pvh": {**QEMU_PVH_DIFFERENCES, "hypervisor": "kvm_pvh is a KVM guest: 'KVMKVMKVM' at CPUID 0x40000000, "
                                                      "where QEMU's TCG CPU answers 'TCGTCGTCGTCG'"},
    "bare_metal": {
        **QEMU_PVH_DIFFERENCES,
        "hypervisor": "QEMU's TCG CPU sets the hypervisor bit; hvsim's bare PC has none",
        "entry": "bare_metal enters the ELF at e_entry in 64-bit mode (Linux's boot protocol), not the PVH note",
    },
}


@pytest.fixture(scope="module")
def qemu_pvh_probe(tmp_path_factory):
    need_qemu()
    tmp = tmp_path_factory.mktemp("qemu-pvh")
    initrd = tmp / "initrd.bin"
    initrd.write_bytes(bytes(range(256)) * 300 + b"end")
    console = run_qemu(tmp, "-kernel", str(probe_path("elf")), "-append", CMDLINE, "-initrd", str(initrd))
    return initrd, probe_fields(console)


@pytest.mark.parametrize("env", ["xen_pvh", "kvm_pvh", "bare_metal"])
def test_the_probe_elf_sees_under_qemus_pvh_loader_what_it_sees_under_hvsim(qemu_pvh_probe, env):
    initrd, real = qemu_pvh_probe
    ours = probe_fields(run_hvsim(env, probe_path("elf"), cmdline=CMDLINE, initrd=initrd))
    data = initrd.read_bytes()
    assert real["initrd"] == ours["initrd"] == (len(data), zlib.crc32(data))
    assert real["cmdline"] == ours["cmdline"] == CMDLINE and real["entry"] == "pvh"
    assert real["rsdp_in"] == ours["rsdp_in"] == "the BIOS area"
    assert_only_declared(real, ours, ENV_DIFFERENCES[env])


# -- Linux to /init: QEMU's PVH loader against hvsim ------------------------------------------------------
LINUX_CMDLINE = "console=ttyS0"


@pytest.fixture(scope="module")
def qemu_linux_init(tmp_path_factory):
    from linux_kernel import debian_vmlinuz

    need_qemu()
    vmlinux = debian_vmlinuz().with_name("vmlinux")     # scripts/fetch-linux keeps the ELF beside the bzImage
    if not vmlinux.is_file():
        pytest.fail(f"{vmlinux}: scripts/fetch-linux keeps Debian's vmlinux there", pytrace=False)
    console = run_qemu(tmp_path_factory.mktemp("qemu-linux"), "-kernel", str(vmlinux),
                       "-initrd", str(init_cpio_path()), "-append", LINUX_CMDLINE)
    report = parse_userspace_report(console)
    assert report is not None, console[-3000:]
    return vmlinux, report


LINUX_DIFFERENCES = {
    "iomem": "QEMU's pc machine has PCI buses, an HPET and flash that hvsim does not model, and SeaBIOS "
             "reserves the top 128 KiB of RAM",
    "memmap": "SeaBIOS reserves the top 128 KiB of RAM; QEMU's E820 lists the BIOS flash and AMD's "
              "HyperTransport hole",
    "memtotal_kb": "the RAM SeaBIOS and hvsim's PC leave usable differs (see memmap)",
    "clocksources": "QEMU's pc machine has an HPET, which hvsim does not model",
    "acpi_tables": "QEMU's pc machine has an HPET (hvsim models none) and a WAET for Windows",
    "dmi": "SeaBIOS publishes SMBIOS tables; hvsim's bare PC has none",
    "rtc": "QEMU's RTC is an ACPI/PnP device (00:05) in its DSDT; hvsim's DSDT describes none, so Linux "
           "finds the RTC at its legacy ports",
    "cpu_model": "QEMU's default TCG CPU is 'QEMU Virtual CPU'; hvsim's is Unicorn's EPYC model",
    "cpu_flags": "QEMU's default TCG CPU has the hypervisor bit and lacks pdpe1gb, rdtscp, xsave, arat, smep "
                 "and smap, which hvsim's EPYC model has",
}
LINUX_ENV_DIFFERENCES = {
    "bare_metal": {"boot_params_version": "under PVH Linux builds its boot_params itself (version 2.12); "
                                          "bare_metal's boot loader hands over the bzImage's (2.15)"},
    "kvm_pvh": {"clocksource": "kvm_pvh offers kvmclock, which Linux prefers to the TSC"},
}


@pytest.mark.linux
@pytest.mark.parametrize("env", ["bare_metal", "kvm_pvh"])
def test_linux_init_sees_under_qemu_what_it_sees_under_hvsim(qemu_linux_init, env):
    import sys

    vmlinux, real = qemu_linux_init
    done = subprocess.run([sys.executable, "-m", "hvsim", "run", "--env", env, str(vmlinux), "--init",
                           "--cmdline", LINUX_CMDLINE, "--timeout", "300"], capture_output=True, timeout=900)
    ours = parse_userspace_report(done.stdout.decode("utf-8", "surrogateescape"))
    assert done.returncode == 0 and ours is not None, done.stderr[-2000:]
    assert real["cmdline"] == ours["cmdline"] == LINUX_CMDLINE and real["kernel"] == ours["kernel"]
    assert_only_declared(real, ours, {**LINUX_DIFFERENCES, **LINUX_ENV_DIFFERENCES[env]})
