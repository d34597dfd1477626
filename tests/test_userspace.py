"""hvsim's own userspace: userspace/build.py builds /init and init.cpio reproducibly, the committed
archive holds what the sources build, /init run on this host prints a report that
hvsim.userspace_report reads back, the canonical record takes its fields (source: userspace), and
``--init`` hands init.cpio to the guest as its initrd."""

from __future__ import annotations

import io
import os
import platform
import shutil
import stat
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from elftools.elf.elffile import ELFFile

from hvsim.cli import main
from hvsim.kernels import init_cpio_path, probe_path
from hvsim.probe_report import parse_probe_report
from hvsim.semantics import COMPARED_FIELDS, USERSPACE, USERSPACE_FIELDS, semantics_of
from hvsim.userspace_report import BEGIN, END, parse_userspace_report

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "userspace" / "build.py"
MAX_INIT_BYTES = 16 * 1024


def _need_gcc() -> None:
    if shutil.which("gcc") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail("CI is set but /init cannot be built: gcc not found on PATH")
    pytest.skip("building /init needs gcc; not found on PATH")


def _build(out: Path) -> bytes:
    _need_gcc()
    result = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--out", str(out)], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return (out / "init.cpio").read_bytes()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> bytes:
    return _build(tmp_path_factory.mktemp("init"))


def read_newc(archive: bytes) -> list[dict]:
    """The entries of a newc cpio, trailer included, each with its header fields by name."""
    names = ["ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
             "rdevmajor", "rdevminor", "namesize", "check"]
    entries, at = [], 0
    while True:
        assert archive[at:at + 6] == b"070701", f"bad magic at {at}"
        fields = {n: int(archive[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i, n in enumerate(names)}
        name_at = at + 110
        name = archive[name_at:name_at + fields["namesize"]]
        assert name.endswith(b"\0")
        data_at = name_at + fields["namesize"]
        data_at += -data_at % 4
        fields["name"] = name[:-1].decode()
        fields["data"] = archive[data_at:data_at + fields["filesize"]]
        entries.append(fields)
        at = data_at + fields["filesize"]
        at += -at % 4
        if fields["name"] == "TRAILER!!!":
            assert at == len(archive), "nothing after the trailer"
            return entries


def _init_elf(archive: bytes) -> bytes:
    return next(e["data"] for e in read_newc(archive) if e["name"] == "init")


# -- the build and the archive ----------------------------------------------------------------------

def test_rebuilding_gives_identical_bytes(built, tmp_path):
    assert _build(tmp_path) == built


def test_the_committed_archive_is_what_the_sources_build(built):
    committed = init_cpio_path().read_bytes()
    ours = ELFFile(io.BytesIO(_init_elf(built))).get_section_by_name(".comment").data()
    theirs = ELFFile(io.BytesIO(_init_elf(committed))).get_section_by_name(".comment").data()
    if ours != theirs:
        pytest.skip(f"the committed /init was built by {theirs!r}, this machine has {ours!r}: bytes may differ")
    assert committed == built, "rebuild and commit: python userspace/build.py"


def test_the_archive_holds_init_the_mount_points_and_the_console_with_fixed_metadata():
    entries = read_newc(init_cpio_path().read_bytes())
    assert [e["name"] for e in entries] == ["dev", "dev/console", "init", "proc", "sys", "TRAILER!!!"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["init"]["mode"] == stat.S_IFREG | 0o755
    assert by_name["dev/console"]["mode"] == stat.S_IFCHR | 0o600
    assert (by_name["dev/console"]["rdevmajor"], by_name["dev/console"]["rdevminor"]) == (5, 1)
    for name in ("dev", "proc", "sys"):
        assert stat.S_ISDIR(by_name[name]["mode"]) and by_name[name]["filesize"] == 0
    for e in entries[:-1]:
        assert e["mtime"] == 0 and e["uid"] == 0 and e["gid"] == 0 and e["check"] == 0
    assert [e["ino"] for e in entries[:-1]] == [1, 2, 3, 4, 5]


def test_init_is_a_small_static_x86_64_executable_without_an_interpreter():
    blob = _init_elf(init_cpio_path().read_bytes())
    elf = ELFFile(io.BytesIO(blob))
    assert elf.elfclass == 64 and elf["e_machine"] == "EM_X86_64" and elf["e_type"] == "ET_EXEC"
    kinds = [s["p_type"] for s in elf.iter_segments()]
    assert "PT_INTERP" not in kinds and "PT_DYNAMIC" not in kinds
    assert elf.get_section_by_name(".note.gnu.build-id") is None
    assert len(blob) <= MAX_INIT_BYTES


# -- /init itself, run as an ordinary process on this host ----------------------------------------

@pytest.fixture(scope="module")
def host_init(tmp_path_factory) -> Path:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("/init is an x86-64 Linux executable")
    path = tmp_path_factory.mktemp("host") / "init"
    path.write_bytes(_init_elf(init_cpio_path().read_bytes()))
    path.chmod(0o755)
    return path


def _first_line(path: str) -> str | None:
    try:
        return Path(path).read_text().split("\n")[0].rstrip()
    except OSError:
        return None


def test_init_not_pid_1_refuses_without_report_only(host_init):
    done = subprocess.run([str(host_init)], capture_output=True, timeout=10)
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"not PID 1" in done.stderr


def test_init_report_only_prints_what_this_host_shows(host_init):
    done = subprocess.run([str(host_init), "--report-only"], capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8", "surrogateescape")
    assert text.startswith(BEGIN + "\n") and text.endswith(END + "\n")
    report = parse_userspace_report(text)
    assert report is not None
    assert report["pid"] not in (None, 1)
    assert report["mount_proc"] == report["mount_sys"] == "skipped"
    assert report["kernel"] == platform.release()
    assert report["machine"] == "x86_64"
    assert report["cmdline"] == Path("/proc/cmdline").read_text().rstrip("\n")
    assert report["cpus_online"] == _first_line("/sys/devices/system/cpu/online")
    assert report["clocksource"] == _first_line(
        "/sys/devices/system/clocksource/clocksource0/current_clocksource")
    memmap_dir = Path("/sys/firmware/memmap")
    if memmap_dir.is_dir():
        expected = []
        for n in sorted((p for p in memmap_dir.iterdir()), key=lambda p: int(p.name)):
            start = int((n / "start").read_text(), 16)
            end = int((n / "end").read_text(), 16)
            expected.append([start, end + 1 - start, (n / "type").read_text().strip()])
        assert report["memmap"] == expected
    else:
        assert report["memmap"] == []
    assert report["efi"] == Path("/sys/firmware/efi").exists()
    assert report["hypervisor"] == (_first_line("/sys/hypervisor/type") or "")
    assert report["irqs"], "this host lists interrupts"
    assert not any(word.isdigit() and len(word) > 4 for line in report["irqs"] for word in line.split()[1:2]), \
        "no counts"
    assert report["truncated"] is False


def test_init_report_is_the_same_twice(host_init):
    """Nothing in it depends on time (but /proc/interrupts may grow a row meanwhile: not compared)."""
    runs = [subprocess.run([str(host_init), "--report-only"], capture_output=True, timeout=10).stdout
            for _ in range(2)]
    strip = [b"\n".join(line for line in run.split(b"\n") if not line.startswith((b"pid:", b"irq:",
                                                                                 b"memtotal_kb:")))
             for run in runs]
    assert strip[0] == strip[1]


# -- the parser -------------------------------------------------------------------------------------

REPORT = f"""{BEGIN}
pid: 1
mount_proc: ok
mount_sys: ok
kernel: 6.1.0-18-amd64
kernel_version: #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)
machine: x86_64
cmdline: console=ttyS0 quote=\\x22a\\\\b\\x22 caf\u00e9
iomem: 0x00000000 0x00000fff Reserved
iomem: 0x00001000 0x0009fbff System RAM
memmap: 0x0 0x9fbff System RAM
memmap: 0x100000 0x1fffffff System RAM
memmap: 0xe0000 0xfffff Reserved
memtotal_kb: 498124
cpus_online: 0-1
cpus_possible: 0-1
clocksource: tsc
clocksources: tsc acpi_pm
clockevent: lapic-deadline
hypervisor: xen
hypervisor_guest_type: PVH
efi: no
efi_runtime: none
efi_platform_size: none
acpi_tables: APIC DSDT FACP
dmi: no
boot_params_version: 0x020f
rtc: rtc_cmos
tainted: 0
console: ttyS0 -W- (EC p a) 4:64
cpu_model: QEMU TCG CPU version 2.5+
cpu_flags: fpu tsc x2apic hypervisor
irq: 0 IO-APIC 2-edge timer
irq: 4 IO-APIC 4-edge ttyS0
irq: ERR
{END}
"""


def test_parser_reads_every_key():
    report = parse_userspace_report("Run /init as init process\n" + REPORT)
    assert report["cmdline"] == 'console=ttyS0 quote="a\\b" caf\u00e9'
    assert report["iomem"] == [[0, 0x1000, "Reserved"], [0x1000, 0x9ec00, "System RAM"]]
    assert report["memmap"][1] == [0x100000, 0x1ff00000, "System RAM"]
    assert report["cpus_online"] == "0-1" and report["memtotal_kb"] == 498124
    assert report["clocksources"] == ["tsc", "acpi_pm"] and report["clockevent"] == "lapic-deadline"
    assert report["hypervisor"] == "xen" and report["hypervisor_guest_type"] == "PVH"
    assert report["efi"] is False and report["efi_runtime"] is None and report["dmi"] is False
    assert report["acpi_tables"] == ["APIC", "DSDT", "FACP"]
    assert report["consoles"] == ["ttyS0 -W- (EC p a) 4:64"]
    assert report["cpu_flags"] == ["fpu", "tsc", "x2apic", "hypervisor"]
    assert report["irqs"] == ["0 IO-APIC 2-edge timer", "4 IO-APIC 4-edge ttyS0", "ERR"]
    assert report["boot_params_version"] == "0x020f" and report["rtc"] == "rtc_cmos"


def test_parser_skips_kernel_lines_interleaved_with_a_console_report():
    lines = REPORT.split("\n")
    lines.insert(15, "[    2.345678] clocksource: Switched to clocksource acpi_pm")
    text = "[    1.000000] Run /init as init process\r\n" + "\r\n".join(lines)
    report = parse_userspace_report(text)
    assert report["clocksource"] == "tsc"
    assert report == parse_userspace_report(REPORT)


def test_parser_reads_a_report_that_came_through_kmsg_with_timestamps():
    stamped = "".join(f"[    3.{i:06d}] {line}\n" for i, line in enumerate(REPORT.rstrip("\n").split("\n")))
    with_noise = stamped.replace("[    3.000005]", "[    3.000004] random: crng init done\n[    3.000005]")
    assert parse_userspace_report(with_noise) == parse_userspace_report(REPORT)


def test_parser_says_none_without_a_complete_report():
    assert parse_userspace_report("") is None
    assert parse_userspace_report("Linux version 6.1\nKernel panic - not syncing: VFS") is None
    assert parse_userspace_report(REPORT.replace(END, "")) is None
    assert parse_userspace_report(REPORT.encode()) == parse_userspace_report(REPORT)


def test_absent_things_read_as_absent():
    text = REPORT.replace("hypervisor: xen", "hypervisor: none").replace("clockevent: lapic-deadline",
                                                                         "clockevent: none")
    report = parse_userspace_report(text)
    assert report["hypervisor"] == "" and report["clockevent"] is None


# -- the canonical record ---------------------------------------------------------------------------

def _result(console: str) -> SimpleNamespace:
    return SimpleNamespace(
        console=lambda channel=None: console, entry="linux64", environment="bare_metal",
        extra={"entry_mode": "long"}, events=[],
        stop=SimpleNamespace(kind="poweroff", code=None, detail="reboot"),
    )


LINUX_BOOT = ("[    0.000000] Linux version 6.1.0-18-amd64\n"
              "[    0.000000] Command line: console=ttyS0\n"
              "[    2.000000] Run /init as init process\n")


def test_the_record_takes_the_userspace_fields_without_printk_timestamps():
    console = LINUX_BOOT + REPORT.replace("irq: ERR", "[    2.500000] clocksource: Switched\nirq: ERR") + \
        "[    3.000000] reboot: Power down\n"
    record = semantics_of(_result(console))
    assert record.kernel == "linux"
    assert record.userspace_cmdline == 'console=ttyS0 quote="a\\b" caf\u00e9'
    assert record.userspace_memmap == [[0, 0x9fc00, 1], [0x100000, 0x1ff00000, 1], [0xe0000, 0x20000, 2]]
    assert record.userspace_cpus == "0-1" and record.clocksource == "tsc"
    assert record.userspace_hypervisor == "xen (PVH)" and record.userspace_efi == "no"
    assert record.userspace_irqs[0] == "0 IO-APIC 2-edge timer"
    assert all(record.sources[name] == USERSPACE for name in USERSPACE_FIELDS)
    assert BEGIN not in record.console and "cpu_flags:" not in record.console
    assert "clocksource: Switched" in record.console and "Power down" in record.console
    assert "[    " not in record.console
    assert set(USERSPACE_FIELDS) <= set(COMPARED_FIELDS)


def test_without_a_report_the_userspace_fields_are_not_printed():
    record = semantics_of(_result(LINUX_BOOT + "[    2.1] Kernel panic - not syncing: no init\n"))
    for name in USERSPACE_FIELDS:
        assert getattr(record, name) is None and record.sources[name] == "not printed"
    assert record.to_dict()["userspace_efi"] is None


# -- the command line -------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["run", "--env", "bare_metal"], ["matrix"], ["coverage"]])
def test_init_with_initrd_is_a_usage_error(command, tmp_path, capsys):
    (tmp_path / "rd").write_bytes(b"x")
    assert main([*command, "--init", "--initrd", str(tmp_path / "rd")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init and --initrd" in err


def test_run_init_hands_init_cpio_to_the_guest_as_its_initrd(capsys):
    """The probe reports the initrd it was given: its size and CRC-32 are init.cpio's."""
    status = main(["run", "--env", "bare_metal", str(probe_path("elf")), "--init"])
    out = capsys.readouterr().out
    assert status == 0
    report = parse_probe_report(out)
    data = init_cpio_path().read_bytes()
    assert report.initrd is not None and report.initrd[1:] == (len(data), zlib.crc32(data))


def test_matrix_init_gives_every_column_init_cpio(tmp_path, capsys):
    import json

    status = main(["matrix", str(probe_path("elf")), "--envs", "bare_metal", "--init", "--jobs", "1",
                   "--json", str(tmp_path / "m.json")])
    assert status == 0
    column = json.loads((tmp_path / "m.json").read_text())["environments"]["bare_metal"]
    data = init_cpio_path().read_bytes()
    assert column["semantics"]["modules"] == [{"size": len(data), "crc32": zlib.crc32(data)}]
