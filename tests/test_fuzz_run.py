"""Damaged kernels through the whole API: ``inspect`` and a ``bare_metal`` run either work or raise an
``HvsimError``; a run that starts always ends with a known stop kind, never a host error.

Mutations land in the first KB (ELF and program headers, the bzImage setup header); a mutated kernel
may spin, so every run has a 2 s wall-clock budget.
"""

from __future__ import annotations

import json

from guests import HALT, elf_guest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagegen import damaged_images, Load, build_bzimage, build_elf, compress_payload

from hvsim import MachineConfig
from hvsim.api import inspect, run
from hvsim.core.errors import HvsimError, ImageError, UnsupportedImageError
from hvsim.core.result import EXIT_STATUS
from hvsim.kernels import probe_path

_VMLINUX = build_elf(bits=64, entry=0x1000000, loads=[Load(0x1000000, b"\xfa\xf4" * 64)])
BASES = {
    "probe.bzImage": probe_path("bzImage").read_bytes(),
    "probe.elf": probe_path("elf").read_bytes(),
    "elf-halt": elf_guest(HALT),
    "elf-two-segments": build_elf(bits=64, entry=0x200000, loads=[Load(0x200000, HALT), Load(0x400000, HALT * 8)]),
    "bzimage-gzip": build_bzimage(init_size=0x200000, pm_prefix=b"\xfa\xf4" * 0x180,
                                  payload=compress_payload("gzip", _VMLINUX)),
}
WINDOW = 1024
CONFIG = MachineConfig(timeout=2)




def _inspect(data: bytes) -> dict | None:
    """The inspect report, or None when the image is refused with an ImageError."""
    try:
        report = inspect(data)
    except ImageError as exc:
        assert "internal error" not in str(exc), str(exc)
        return None
    json.dumps(report, default=str)
    assert "bare_metal" in report["environments"]
    return report


def _run(data: bytes, report: dict | None) -> None:
    try:
        result = run("bare_metal", data, CONFIG)
    except HvsimError as exc:
        assert "internal error" not in str(exc), str(exc)
        if report is None:
            assert isinstance(exc, ImageError), f"inspect could not read the image, run raised {exc!r}"
        elif not report["environments"]["bare_metal"]["accepted"]:
            assert isinstance(exc, UnsupportedImageError), exc
        else:
            assert not isinstance(exc, UnsupportedImageError), f"inspect said bare_metal accepts, run: {exc}"
        return
    assert report is not None and report["environments"]["bare_metal"]["accepted"], \
        "run booted an image that inspect refused"
    assert result.stop.kind in EXIT_STATUS
    assert result.stop.kind != "host-error", (result.stop.describe(), result.extra.get("host_traceback"))
    assert result.exit_status == EXIT_STATUS[result.stop.kind]
    assert result.state is not None and result.state.instruction
    json.loads(result.to_json())


def test_unmodified_bases_run():
    for name, data in BASES.items():
        result = run("bare_metal", data, CONFIG)
        assert result.stop.kind in ("poweroff", "halt"), (name, result.stop.describe())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_images(BASES, WINDOW, 6, [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x10]))
def test_damaged_kernels_only_raise_hvsim_errors(case):
    _, data = case
    _run(data, _inspect(data))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(BASES)), st.binary(min_size=1, max_size=32), st.integers(0, WINDOW))
def test_spliced_garbage_only_raises_hvsim_errors(name, garbage, position):
    data = BASES[name]
    data = data[:position] + garbage + data[position + len(garbage):]
    _run(data, _inspect(data))
