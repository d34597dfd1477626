"""The same probe kernel under every environment: what it observes agrees with bare_metal field by
field, except where an ABI makes a difference inevitable. Those differences are named here, in one
place, each with its reason; every other field of the report must be equal.  (The efi probe is
probe.efi, the same code as a PE32+ application.)"""

from __future__ import annotations

import random

import attrs
import pytest
from probe_boot import boot

from test_efi import config_view, firmware_ranges

from hvsim import MachineConfig
from hvsim.kernels import probe_path

MiB = 1 << 20

# bare_metal is the reference. Per environment (with its options), the report fields its ABI makes
# different from bare_metal's, and why.
HYPERVISOR = "Xen sets the hypervisor bit and answers CPUID 0x40000000 (XenVMMXenVMM); a bare PC does neither"
INITRD_ADDRESS = ("each loader chooses where the module goes (bare_metal: high, under initrd_addr_max; "
                  "Xen's builders: right after the kernel)")
ENVIRONMENTS = {
    "xen_pvh": ("xen_pvh", {}),
    "xen_pv domU": ("xen_pv", {}),
    "xen_pv dom0": ("xen_pv", {"dom0": True}),
    "efi": ("efi", {}),
}
INEVITABLE = {
    "xen_pvh": {
        "entry": "the boot entry itself: the 64-bit boot protocol vs PVH's PHYS32_ENTRY",
        "initrd_address": INITRD_ADDRESS,
        "hypervisor": HYPERVISOR,
    },
    "xen_pv domU": {
        "entry": "the boot entry itself: the 64-bit boot protocol vs PV's XEN_ELFNOTE_ENTRY",
        "initrd_address": INITRD_ADDRESS,
        "hypervisor": HYPERVISOR,
        "memmap": "a PV domU sees its pseudo-physical map: one RAM range [0, configured memory) from "
                  "XENMEM_memory_map (as libxl gives it), not the machine's E820 with its holes",
        "rsdp": "a PV domU has no firmware and no ACPI tables",
        "acpi_tables": "a PV domU has no firmware and no ACPI tables",
    },
    "xen_pv dom0": {
        "entry": "the boot entry itself: the 64-bit boot protocol vs PV's XEN_ELFNOTE_ENTRY",
        "initrd_address": INITRD_ADDRESS,
        "hypervisor": HYPERVISOR,
        "rsdp": "dom0's ACPI tables lie in machine memory outside the PV bootstrap region; the probe "
                "keeps Xen's page tables and does not map them (it counts vCPUs with VCPUOP_is_up)",
        "acpi_tables": "as rsdp: the tables are not mapped for a PV guest at entry",
        "memmap": "XENMEM_machine_memory_map is the machine's E820 with the I/O memory Xen keeps from "
                  "dom0 in its holes (the I/O APIC page, the MSI range) marked reserved",
    },
    "efi": {
        "entry": "the boot entry itself: the 64-bit boot protocol vs the PE entry point",
        "initrd_address": "each loader chooses where the initrd goes (the probe under efi: pages it "
                          "allocates before loading it through LoadFile2)",
        "memmap": "the firmware keeps its runtime services code and data reserved after ExitBootServices, "
                  "its ACPI tables in ACPI reclaim and its FACS in ACPI NVS pages it allocated from RAM, "
                  "and below 1 MiB the map is OVMF's (no EBDA, no BIOS area) "
                  "(undone by config_view below, the maps are equal)",
        "rsdp": "a UEFI firmware's RSDP is in ACPI reclaim memory it allocated, reached through the "
                "configuration table, not at the BIOS area's 0xE0000 (as OVMF; test_efi_acpi_memory.py)",
    },
}
ENTRY_NAMES = {"xen_pvh": "pvh", "xen_pv domU": "pv", "xen_pv dom0": "pv", "efi": "efi"}


def comparable(report) -> dict:
    fields = attrs.asdict(report)
    initrd = fields.pop("initrd")
    fields["initrd_address"] = initrd[0] if initrd else None
    fields["initrd"] = initrd[1:] if initrd else None
    return fields


def test_every_inevitable_difference_is_a_report_field():
    fields = set(comparable(boot(probe_path("elf"), MachineConfig(), "bare_metal")[1]))
    assert set(INEVITABLE) == set(ENVIRONMENTS)
    for name, differences in INEVITABLE.items():
        assert set(differences) <= fields, name


@pytest.mark.parametrize("variant", list(ENVIRONMENTS))
@pytest.mark.parametrize("kernel", ["elf", "bzImage"])
@pytest.mark.parametrize("memory,smp,with_initrd", [("512M", 1, False), ("6G", 4, True)])
def test_reports_agree_with_bare_metal_field_by_field(tmp_path, variant, kernel, memory, smp, with_initrd):
    initrd = None
    if with_initrd:
        initrd = tmp_path / "initrd"
        initrd.write_bytes(random.Random(3).randbytes(1 * MiB + 17))
    config = MachineConfig(memory=memory, smp=smp, initrd=initrd, cmdline="same world? ✓")
    env, options = ENVIRONMENTS[variant]
    if env == "efi" and kernel == "bzImage":
        pytest.skip("the efi probe is its own PE32+ image (probe.efi); the elf case runs it")
    _, bare = boot(probe_path(kernel), config, "bare_metal")
    result, other = boot(probe_path("efi" if env == "efi" else kernel), config, env, **options)
    a, b = comparable(bare), comparable(other)
    differing = {k for k in a if a[k] != b[k]}
    assert differing - set(INEVITABLE[variant]) == set(), {k: (a[k], b[k]) for k in differing}
    assert (a["entry"], b["entry"]) == ("linux64", ENTRY_NAMES[variant])
    # what must agree, spelled out: the command line, the initrd's bytes and the CPU count
    assert b["cmdline"] == config.cmdline and b["cpus"] == smp and b["initrd"] == a["initrd"]
    # what the probe read from CPUID: no hypervisor on a bare PC or under its firmware; Xen under Xen
    assert a["hypervisor"] is None and b["hypervisor"] == ("XenVMMXenVMM" if env.startswith("xen") else None)
    if env == "efi":      # the named memory-map difference is exactly the firmware's
        assert config_view(other.memmap, firmware_ranges(result)) == bare.memmap
        # the same tables, reached from an RSDP in the firmware's ACPI memory instead of the BIOS area
        assert b["acpi_tables"] == a["acpi_tables"] and a["rsdp"] == 0xE0000
        assert any(s <= b["rsdp"] < s + n and kind == 3 for s, n, kind in other.memmap)
