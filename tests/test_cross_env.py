"""bare_metal and efi agree: the probe, booted through the 64-bit boot protocol and as an EFI
application with the same MachineConfig, reports the same machine field by field, except where
firmware makes a difference inevitable (each named below with its reason).  bare_metal against
xen_pvh is in test_xen_pvh.py."""

from __future__ import annotations

import random

import attrs
import pytest

from hvsim import MachineConfig
from hvsim.api import Run
from hvsim.kernels import probe_path
from hvsim.probe_report import parse_probe_report

from test_efi import config_view, runtime_ranges

MiB = 1 << 20

INEVITABLE = {
    "entry": "the boot entry itself: the 64-bit boot protocol vs the PE entry point",
    "initrd_address": "each loader chooses where the initrd goes (bare_metal: high, under initrd_addr_max; "
                      "the probe under efi: pages it allocates before loading it through LoadFile2)",
    "memmap": "compared after config_view (test_efi.py): the firmware keeps its runtime services code and "
              "data reserved after ExitBootServices, and EFI maps are page-granular, so the EBDA page "
              "0x9f000 is reserved whole; boot-services and loader memory are RAM to the OS, as on bare metal",
}


def boot(env: str, config: MachineConfig):
    kernel = probe_path("efi" if env == "efi" else "bzImage")
    result = Run(env, kernel, config).execute()
    assert result.stop.kind == "poweroff", (env, result.stop.describe(), result.console())
    return result, parse_probe_report(result.console())


def comparable(report) -> dict:
    fields = attrs.asdict(report)
    initrd = fields.pop("initrd")
    fields["initrd_address"] = initrd[0] if initrd else None
    fields["initrd"] = initrd[1:] if initrd else None
    return fields


@pytest.mark.parametrize("memory,smp,with_initrd", [("512M", 1, False), ("6G", 4, True)])
def test_bare_metal_and_efi_reports_agree_field_by_field(tmp_path, memory, smp, with_initrd):
    initrd = None
    if with_initrd:
        initrd = tmp_path / "initrd"
        initrd.write_bytes(random.Random(7).randbytes(1 * MiB + 17))
    config = MachineConfig(memory=memory, smp=smp, initrd=initrd, cmdline="same world? ✓ probe.spin=5")
    _, bare = boot("bare_metal", config)
    efi_result, efi = boot("efi", config)
    a, b = comparable(bare), comparable(efi)
    differing = {k for k in a if a[k] != b[k]}
    assert differing - set(INEVITABLE) == set(), {k: (a[k], b[k]) for k in differing}
    assert (a["entry"], b["entry"]) == ("linux64", "efi")
    # the named memory-map difference is exactly the firmware's: undo it and the maps are equal
    assert config_view(efi.memmap, runtime_ranges(efi_result)) == bare.memmap
