"""Debian's GRUB for EFI boots Debian's Linux from an ESP to hvsim's /init (issue 13).

The ESP is what a user puts on a stick: ``EFI/BOOT/BOOTX64.EFI`` (Debian's grub-efi-amd64-bin made
standalone by grub-mkstandalone, ``scripts/fetch-grub``), ``EFI/BOOT/grub.cfg`` with one menu entry,
the vmlinuz and the /init initramfs.  ``hvsim run --env efi --esp DIR`` boots the removable-media
path; GRUB finds its disk through BLOCK_IO, reads the GPT and the FAT itself, loads the kernel and
the initrd, and Linux reaches /init and powers off.

Cost on a loaded 2-core machine: ~2.5 min (GRUB's own part is a few seconds).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hvsim.kernels import init_cpio_path
from hvsim.userspace_report import parse_userspace_report

from linux_kernel import debian_vmlinuz, fetched

pytestmark = pytest.mark.linux

# A long name (several long-name entries, an 8.3 alias) in a subdirectory, as Debian's ESP has them.
KERNEL, INITRD = "debian/vmlinuz-6.1-amd64", "debian/initrd.img-hvsim-init"
GRUB_CFG = f"""set timeout=0
menuentry 'Debian GNU/Linux (hvsim)' {{
  linux /{KERNEL} console=ttyS0
  initrd /{INITRD}
}}
"""


def debian_grub() -> Path:
    return fetched("fetch-grub", "Debian's GRUB")


def test_grub_boots_linux_from_the_esp_to_init(tmp_path):
    esp = tmp_path / "esp"
    (esp / "EFI" / "BOOT").mkdir(parents=True)
    (esp / "debian").mkdir()
    shutil.copy(debian_grub(), esp / "EFI" / "BOOT" / "BOOTX64.EFI")
    (esp / "EFI" / "BOOT" / "grub.cfg").write_text(GRUB_CFG)
    shutil.copy(debian_vmlinuz(), esp / KERNEL)
    shutil.copy(init_cpio_path(), esp / INITRD)
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "hvsim", "run", "--env", "efi", "--esp", str(esp),
                           "--timeout", "600", "--json", str(out)], capture_output=True, timeout=900)
    console = done.stdout.decode("utf-8", "surrogateescape")
    assert done.returncode == 0, done.stderr.decode()[-2000:] + console[-3000:]
    assert "Booting `Debian GNU/Linux (hvsim)'" in console           # GRUB ran the ESP's grub.cfg
    report = parse_userspace_report(console)
    assert report is not None, console[-3000:]
    # GRUB's linux command puts BOOT_IMAGE first; the rest is the menu entry's.
    assert report["cmdline"] == f"BOOT_IMAGE=/{KERNEL} console=ttyS0"
    assert report["pid"] == 1 and report["efi"] is True
    result = json.loads(out.read_text())
    assert result["stop"]["kind"] == "poweroff"
    reads = [e for e in result["events"] if e.get("name") == "BlockIo.ReadBlocks"]
    assert reads and all(e["result"] == "EFI_SUCCESS" for e in reads)
    # the kernel and the initrd came through the disk: at least their size in blocks was read
    read_bytes = sum(e["args"]["BufferSize"] for e in reads)
    assert read_bytes >= (esp / KERNEL).stat().st_size + (esp / INITRD).stat().st_size
