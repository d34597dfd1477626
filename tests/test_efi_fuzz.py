"""Damaged EFI images through the whole API under efi: ``inspect`` and an ``efi`` run either work or
raise an ``HvsimError``; a run that starts ends with a known stop kind, never a host error.
Mutations land in the headers and section table (the first 1 KiB)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagegen import damaged_images

from hvsim import MachineConfig
from hvsim.api import inspect, run
from hvsim.core.errors import HvsimError, ImageError, UnsupportedImageError
from hvsim.core.result import EXIT_STATUS
from hvsim.kernels import probe_path

from efi_apps import efi_app

BASES = {
    "probe.efi": probe_path("efi").read_bytes(),
    "app-relocated": efi_app("lea t(%rip), %rax\ncmp p(%rip), %rax\nxor %eax, %eax\njmp done\n.balign 8\n"
                             "p: .quad t\nt: .quad 0", image_base=0x7000_0000_0000, relocate=("p",), bss=0x3000),
}
WINDOW = 1024
CONFIG = MachineConfig(timeout=2)


def _check(data: bytes) -> None:
    try:
        report = inspect(data)
    except ImageError as exc:
        assert "internal error" not in str(exc), str(exc)
        report = None
    else:
        json.dumps(report, default=str)
    try:
        result = run("efi", data, CONFIG)
    except HvsimError as exc:
        assert "internal error" not in str(exc), str(exc)
        if report is not None and report["environments"]["efi"]["accepted"]:
            assert not isinstance(exc, UnsupportedImageError), f"inspect said efi accepts, run: {exc}"
        return
    assert report is not None and report["environments"]["efi"]["accepted"]
    assert result.stop.kind in EXIT_STATUS
    assert result.stop.kind != "host-error", (result.stop.describe(), result.extra.get("host_traceback"))
    json.loads(result.to_json())


def test_unmodified_bases_run():
    for name, data in BASES.items():
        result = run("efi", data, CONFIG)
        assert result.stop.kind == "poweroff", (name, result.stop.describe())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_images(BASES, WINDOW, 6, [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x10]))
def test_damaged_efi_images_only_raise_hvsim_errors(case):
    _check(case[1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(BASES)), st.binary(min_size=1, max_size=32), st.integers(0, WINDOW))
def test_spliced_garbage_only_raises_hvsim_errors(name, garbage, position):
    data = BASES[name]
    _check(data[:position] + garbage + data[position + len(garbage):])
