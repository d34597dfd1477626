"""Prebuilt guest kernels shipped with hvsim.

``probe.elf``, ``probe.bzImage`` and ``probe.efi`` (a PE32+ EFI application) are the hvsim probe kernel (sources and build script in the
repository's ``probe/`` folder; rebuild with ``python probe/build.py``). They are committed so that
running hvsim needs no compiler. The probe prints a canonical report that
:func:`hvsim.probe_report.parse_probe_report` reads back.

``init.cpio`` is an initramfs (newc cpio) holding hvsim's own ``/init`` (sources and build script in
the repository's ``userspace/`` folder; rebuild with ``python userspace/build.py``): booted as a
Linux kernel's initrd (``hvsim run --init``), it prints what userspace sees and powers off;
:func:`hvsim.userspace_report.parse_userspace_report` reads that report back.
"""

from __future__ import annotations

import pathlib
from importlib import resources

_PROBE_FILES = {"bzImage": "probe.bzImage", "elf": "probe.elf", "efi": "probe.efi"}

#: The probe's builds, by the names ``probe_path`` and ``Environment.default_image`` take.
PROBE_BUILDS = tuple(_PROBE_FILES)


def probe_path(kind: str = "bzImage") -> pathlib.Path:
    """The file system path of the prebuilt probe kernel: ``"bzImage"`` (default), ``"elf"`` or ``"efi"``."""
    try:
        name = _PROBE_FILES[kind]
    except KeyError:
        raise ValueError(f"unknown probe kind {kind!r}; choose one of {', '.join(_PROBE_FILES)}") from None
    return _packaged(name, "python probe/build.py")


def init_cpio_path() -> pathlib.Path:
    """The file system path of ``init.cpio``, the initramfs holding hvsim's ``/init``: pass it as
    ``MachineConfig(initrd=init_cpio_path())``."""
    return _packaged("init.cpio", "python userspace/build.py")


def _packaged(name: str, build: str) -> pathlib.Path:
    resource = resources.files(__name__).joinpath(name)
    if not isinstance(resource, pathlib.Path):
        raise FileNotFoundError(f"hvsim.kernels/{name} is not a plain file (is hvsim installed from a zip?)")
    if not resource.is_file():
        raise FileNotFoundError(f"{resource} is missing; build it with: {build}")
    return resource
