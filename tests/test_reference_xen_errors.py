"""hvsim.reference_xen's own failures, without QEMU: what is missing is named, a QEMU that fails or
hangs is a ``ReferenceFailed`` carrying the console's end, and arguments QEMU's multiboot loader
cannot carry are refused.  (The real boot: tests/test_xen_reference.py.)"""

from __future__ import annotations

import time

import pytest

from hvsim.reference_xen import ReferenceFailed, ReferenceUnavailable, boot_dom0, qemu_command


@pytest.fixture
def files(tmp_path):
    paths = []
    for name in ("xen.elf", "vmlinux", "init.cpio"):
        (tmp_path / name).write_bytes(b"\x7fELF")
        paths.append(tmp_path / name)
    return paths


def fake_qemu(tmp_path, body: str):
    script = tmp_path / "fake-qemu"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


def test_a_missing_file_is_named(files):
    xen, kernel, initrd = files
    xen.unlink()
    with pytest.raises(ReferenceUnavailable, match="xen.elf: not found .*scripts/fetch-xen"):
        boot_dom0(xen, kernel, initrd, "console=hvc0", qemu="/bin/true")


def test_a_missing_qemu_is_named(files, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ReferenceUnavailable, match="qemu-system-x86_64 not found"):
        boot_dom0(*files, "console=hvc0")


def test_qemu_failing_or_booting_to_no_report_is_a_failure_with_the_console(files, tmp_path):
    qemu = fake_qemu(tmp_path, "printf '(XEN) Xen version 4.17.5 (Debian 4.17.5-1) (pkg-xen)\\r\\npanic\\r\\n'; exit 3")
    with pytest.raises(ReferenceFailed, match="(?s)exited 3.*panic"):
        boot_dom0(*files, "console=hvc0", qemu=qemu)
    qemu = fake_qemu(tmp_path, "echo 'reboot: Power down'; exit 0")
    with pytest.raises(ReferenceFailed, match="no complete /init report"):
        boot_dom0(*files, "console=hvc0", qemu=qemu)


def test_a_report_is_parsed_and_timed_and_the_version_read(files, tmp_path):
    qemu = fake_qemu(tmp_path, "printf '(XEN) Xen version 4.17.5 (Debian 4.17.5-1) (pkg-xen-devel@x) gcc\\r\\n"
                               "hvsim-userspace: begin v1\\r\\npid: 1\\r\\ncmdline: console=hvc0\\r\\n"
                               "hvsim-userspace: end\\r\\n'")
    boot = boot_dom0(*files, "console=hvc0", qemu=qemu)
    assert boot.xen_version() == "4.17.5 (Debian 4.17.5-1)"
    assert boot.report()["pid"] == 1 and boot.report()["cmdline"] == "console=hvc0"
    assert "\r" not in boot.console() and boot.first("pid: 1") is not None and boot.first("nothing") is None


def test_a_hung_qemu_is_killed_at_the_wall_clock_limit(files, tmp_path):
    qemu = fake_qemu(tmp_path, "echo booting; exec sleep 60")
    start = time.perf_counter()
    with pytest.raises(ReferenceFailed, match="(?s)still running after 1 s.*booting"):
        boot_dom0(*files, "console=hvc0", qemu=qemu, timeout=1)
    assert time.perf_counter() - start < 30


def test_what_multiboot_cannot_carry_is_refused(files, tmp_path):
    xen, kernel, initrd = files
    assert qemu_command("q", xen, kernel, initrd, "console=hvc0")[-1] == f"{kernel} console=hvc0,{initrd}"
    with pytest.raises(ValueError, match="comma"):
        qemu_command("q", xen, kernel, initrd, "console=hvc0,x")
    odd = tmp_path / "a,b"
    with pytest.raises(ValueError, match="comma or a blank"):
        qemu_command("q", xen, odd, initrd, "console=hvc0")
