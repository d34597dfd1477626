"""What a user sees when the input is wrong: one line on stderr, a non-zero status, never a traceback.

Statuses (hvsim.core.errors): 2 a bad option, 3 a bad or unbootable image, 4 an image that does not fit
the configured machine.  Guest misbehaviour is not an error: it ends the run with a recorded stop.
"""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest
from guests import (LOAD, NO_RAM_PHYSICAL, READ_NO_RAM, READ_UNMAPPED_VIRTUAL, UD2, UNMAPPED_VIRTUAL,
                    WRITE_NO_RAM, elf_guest, mov_rax)
from imagegen import Load, build_bzimage, build_elf

from hvsim import MachineConfig
from hvsim.api import inspect, run
from hvsim.core.errors import HvsimError, ImageError, LoadError, UnsupportedImageError, UsageError
from hvsim.core.events import Fault
from hvsim.kernels import probe_path

MiB = 1 << 20
PROBE_ELF = probe_path("elf").read_bytes()
PROBE_BZIMAGE = probe_path("bzImage").read_bytes()
PROBE_CMDLINE_SIZE = 2047                      # probe/bzimage.py CMDLINE_SIZE


@attrs.frozen
class Case:
    """``hvsim run --env bare_metal ARGS`` with ``files`` written first; ``KERNEL`` in args is the kernel."""

    args: tuple
    status: int
    says: str                                  # a piece of the one-line message (case-insensitive)
    kernel: bytes | None = None
    files: dict = attrs.field(factory=dict)


def _elf_at(paddr: int) -> bytes:
    return build_elf(bits=64, entry=paddr, loads=[Load(paddr, b"\xf4" * 16)])


CASES = {
    # -- the file is not a kernel --------------------------------------------------------------
    "missing-file": Case(("no-such-vmlinuz",), 3, "no-such-vmlinuz: no such file"),
    "empty-file": Case(("KERNEL",), 3, "empty", kernel=b""),
    "directory": Case((".",), 3, "directory"),
    "truncated-elf-header": Case(("KERNEL",), 3, "KERNEL", kernel=PROBE_ELF[:40]),
    "truncated-elf": Case(("KERNEL",), 3, "KERNEL", kernel=PROBE_ELF[:100]),
    "truncated-elf-segment": Case(("KERNEL",), 3, "KERNEL", kernel=PROBE_ELF[: len(PROBE_ELF) // 3]),
    "truncated-bzimage-setup": Case(("KERNEL",), 3, "KERNEL", kernel=PROBE_BZIMAGE[:0x300]),
    "truncated-bzimage": Case(("KERNEL",), 3, "truncated", kernel=PROBE_BZIMAGE[: len(PROBE_BZIMAGE) // 2]),
    "random-bytes": Case(("KERNEL",), 3, "not a kernel image",
                         kernel=bytes((i * 131 + 7) % 251 for i in range(4096))),
    "text-file": Case(("KERNEL",), 3, "not a kernel image", kernel=b"#!/bin/sh\necho hello\n"),
    # -- a kernel this environment cannot enter ------------------------------------------------
    "bzimage-protocol-2.10": Case(("KERNEL",), 3, "2.10", kernel=build_bzimage(version=0x020A)),
    "bzimage-2.12-without-xlf-kernel-64": Case(("KERNEL",), 3, "XLF_KERNEL_64",
                                               kernel=build_bzimage(version=0x020C, xloadflags=0)),
    "elf-for-i386": Case(("KERNEL",), 3, "EM_X86_64", kernel=build_elf(bits=32)),
    "elf-entry-outside-its-segments": Case(("KERNEL",), 3, "e_entry", kernel=build_elf(
        bits=64, entry=0x300000, loads=[Load(0x200000, b"\xf4")])),
    # -- a kernel that does not fit the machine ------------------------------------------------
    "elf-far-above-ram": Case(("KERNEL",), 4, "0x7000000000", kernel=_elf_at(0x70_0000_0000)),
    "elf-above-configured-ram": Case(("KERNEL", "--memory", "512M"), 4, "0x40000000", kernel=_elf_at(0x4000_0000)),
    "elf-in-the-pci-hole": Case(("KERNEL", "--memory", "6G"), 4, "0xc0000000", kernel=_elf_at(0xC000_0000)),
    "elf-over-the-zero-page": Case(("KERNEL",), 4, "zero page", kernel=_elf_at(0x7000)),
    "elf-over-the-command-line": Case(("KERNEL",), 4, "command line", kernel=_elf_at(0x20000)),
    "elf-over-the-page-tables": Case(("KERNEL",), 4, "page tables", kernel=_elf_at(0x40000)),
    "elf-over-the-acpi-tables": Case(("KERNEL",), 4, "0xe0000", kernel=_elf_at(0xE0000)),
    "elf-segment-at-64M-in-16M": Case(("KERNEL", "--memory", "16M"), 4, "0x4000000",
                                      kernel=_elf_at(64 * MiB)),
    "bzimage-init-size-beyond-16M": Case(("KERNEL", "--memory", "16M"), 4, "16 MiB",
                                         kernel=build_bzimage(init_size=0x3F98000)),
    "cmdline-longer-than-cmdline-size": Case(("KERNEL", "--cmdline", "x" * (PROBE_CMDLINE_SIZE + 1)), 4,
                                             str(PROBE_CMDLINE_SIZE), kernel=PROBE_BZIMAGE),
    "cmdline-size-counts-bytes": Case(("KERNEL", "--cmdline", "é" * 6), 4, "12 bytes",
                                      kernel=build_bzimage(init_size=0x100000, cmdline_size=10)),
    "initrd-larger-than-ram": Case(("--memory", "16M", "--initrd", "initrd.img"), 4, "initrd",
                                   files={"initrd.img": b"\0" * (20 * MiB)}),
    # -- bad options ---------------------------------------------------------------------------
    "memory-12x": Case(("--memory", "12x"), 2, "12x"),
    "memory-too-small": Case(("--memory", "8M"), 2, "16 MiB"),
    "memory-not-page-multiple": Case(("--memory", "16777217K"), 2, "4 KiB"),
    "smp-0": Case(("--smp", "0"), 2, "smp 0"),
    "missing-initrd": Case(("--initrd", "no-such-initrd"), 2, "no-such-initrd"),
    "initrd-is-a-directory": Case(("--initrd", "."), 2, "initrd"),
    "negative-max-instructions": Case(("--max-instructions", "-5"), 2, "max-instructions"),
    "negative-timeout": Case(("--timeout", "-1"), 2, "timeout"),
}


def hvsim_run(tmp_path, case: Case, env: str = "bare_metal") -> subprocess.CompletedProcess:
    args = list(case.args)
    if case.kernel is not None:
        (tmp_path / "KERNEL").write_bytes(case.kernel)
    for name, data in case.files.items():
        (tmp_path / name).write_bytes(data)
    return subprocess.run([sys.executable, "-m", "hvsim.cli", "run", "--env", env, *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess, status: int, says: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert "internal error" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hvsim: "), done.stderr
    assert says.lower() in lines[0].lower(), done.stderr
    assert done.returncode == status, done.stderr
    assert done.stdout == "", "no guest should have run"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_a_status(tmp_path, name):
    case = CASES[name]

    done = hvsim_run(tmp_path, case)

    assert_one_line_error(done, case.status, case.says)


def test_json_into_a_missing_directory(tmp_path):
    done = hvsim_run(tmp_path, Case(("--json", "no/such/dir/run.json"), 2, ""))

    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith("hvsim: --json no/such/dir/run.json"), done.stderr


def test_unknown_environment(tmp_path):
    done = hvsim_run(tmp_path, Case((), 2, ""), env="no_such_env")

    assert_one_line_error(done, 2, "no_such_env")
    assert "bare_metal" in done.stderr               # it says which environments exist


@pytest.mark.parametrize("name", ["missing-file", "empty-file", "directory", "truncated-bzimage", "random-bytes"])
def test_inspect_and_extract_of_a_bad_file(tmp_path, name):
    case = CASES[name]
    kernel = case.args[0]
    if case.kernel is not None:
        (tmp_path / "KERNEL").write_bytes(case.kernel)
    for command in (["inspect", kernel], ["inspect", kernel, "--json"], ["extract", kernel, "-o", "out"]):
        done = subprocess.run([sys.executable, "-m", "hvsim.cli", *command], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)
        assert_one_line_error(done, 3, case.says)
    assert not (tmp_path / "out").exists()


def test_a_command_line_of_raw_non_utf8_bytes_is_not_an_internal_error(tmp_path):
    """argv bytes that are not UTF-8 reach Python as surrogate escapes; hvsim must not crash on them."""
    done = subprocess.run([sys.executable, "-m", "hvsim.cli", "run", "--env", "bare_metal",
                           "--cmdline", b"root=/dev/sda \xff\xfe"], capture_output=True, cwd=tmp_path, timeout=60)

    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    if done.returncode == 0:   # passed through as the bytes given
        assert b"cmdline: root=/dev/sda \xff\xfe\r\n" in done.stdout
    else:                      # or refused as a usage error
        assert done.returncode == 2 and len(stderr.splitlines()) == 1, stderr


# -- the API: errors are HvsimError, guest faults are stops ----------------------------------------

@pytest.mark.parametrize("kernel, error", [
    (b"", ImageError),
    (b"\x7fELF", ImageError),
    (PROBE_BZIMAGE[:0x300], ImageError),
    (build_bzimage(version=0x020A), UnsupportedImageError),
    (elf_guest(b"\xf4", at=0x7000), LoadError),
])
def test_api_raises_hvsim_errors_for_bad_kernels(kernel, error):
    with pytest.raises(error) as caught:
        run("bare_metal", kernel, MachineConfig(timeout=2))
    assert "\n" not in str(caught.value)


def test_api_raises_usage_errors_for_bad_options():
    with pytest.raises(UsageError):
        MachineConfig(memory="12x")
    with pytest.raises(UsageError):
        MachineConfig(smp=0)
    with pytest.raises(UsageError):
        run("no_such_env", None, MachineConfig())


def test_api_refuses_a_negative_timeout():
    """A negative wall-clock budget is a mistake, not a run that times out before it starts."""
    with pytest.raises(UsageError):
        MachineConfig(timeout=-1)


def test_api_refuses_a_negative_instruction_budget():
    """The CLI refuses --max-instructions -5; the API must not quietly treat it as no budget at all."""
    with pytest.raises(UsageError):
        MachineConfig(max_instructions=-5)


def test_an_instruction_budget_too_large_for_64_bits_is_refused_or_honoured(tmp_path):
    """2**64 + 5 must not wrap around to a budget of 5 instructions."""
    huge = 2**64 + 5
    try:
        result = run("bare_metal", None, MachineConfig(max_instructions=huge))
    except UsageError:
        pass
    else:
        assert result.stop.kind == "poweroff", result.stop.describe()
    done = hvsim_run(tmp_path, Case(("--max-instructions", str(huge)), 2, ""))
    assert done.returncode in (0, 2), done.stderr


def test_api_with_a_command_line_python_cannot_encode_raises_an_hvsim_error_or_runs():
    try:
        result = run("bare_metal", None, MachineConfig(cmdline="a\udcffb", timeout=5))
    except HvsimError:
        return
    assert result.stop.kind == "poweroff"


def test_inspect_of_a_bad_file_raises_image_error():
    with pytest.raises(ImageError):
        inspect(b"not a kernel at all")


def _run_guest(code: bytes):
    return run("bare_metal", elf_guest(code), MachineConfig(timeout=5))


def test_invalid_opcode_without_an_idt_is_a_triple_fault_stop():
    result = _run_guest(UD2)

    assert result.stop.kind == "triple-fault" and result.exit_status == 40
    assert result.state.instruction == "ud2"
    assert result.state.registers["rip"] == LOAD
    faults = [e for e in result.events if isinstance(e, Fault)]
    assert [(f.vector, f.delivered) for f in faults] == [(6, False)]


def test_reading_unmapped_virtual_memory_without_an_idt_is_a_triple_fault_stop():
    result = _run_guest(READ_UNMAPPED_VIRTUAL)

    assert result.stop.kind == "triple-fault"
    assert result.state.instruction == "mov rax, qword ptr [rax]"
    faults = [e for e in result.events if isinstance(e, Fault)]
    assert [(f.vector, f.cr2, f.delivered) for f in faults] == [(14, UNMAPPED_VIRTUAL, False)]
    assert "#PF" in result.stop.detail


@pytest.mark.parametrize("code, access", [(READ_NO_RAM, "read"), (WRITE_NO_RAM, "write")])
def test_touching_physical_memory_with_no_ram_is_a_bad_access_stop(code, access):
    result = _run_guest(code)

    assert result.stop.kind == "bad-access" and result.exit_status == 42
    assert access in result.stop.detail and f"{NO_RAM_PHYSICAL:#x}" in result.stop.detail
    assert result.state.registers["rip"] == LOAD + 10      # the faulting mov, after the 10-byte mov rax
    assert result.state.instruction.startswith("mov")
    assert "[rax]" in result.state.instruction


def test_jumping_to_physical_memory_with_no_ram_is_a_bad_access_stop():
    result = _run_guest(mov_rax(NO_RAM_PHYSICAL) + b"\xff\xe0")      # jmp rax

    assert result.stop.kind == "bad-access"
    assert "instruction fetch" in result.stop.detail
    assert result.state.registers["rip"] == NO_RAM_PHYSICAL
    assert "unreadable" in result.state.instruction
