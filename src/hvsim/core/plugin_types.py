"""Records that cross the plugin contract (hookspecs.py)."""

from __future__ import annotations

import attrs

from ..kernels import PROBE_BUILDS
from .errors import PluginError


def _probe_build(instance, attribute, value) -> None:
    if value not in PROBE_BUILDS:
        raise PluginError(f"environment {instance.name!r}: default_image {value!r} is not a build of the "
                          f"embedded probe (one of {', '.join(PROBE_BUILDS)})")


@attrs.frozen
class Environment:
    """An environment a plugin provides: ``name`` for ``--env``, ``summary`` for ``hvsim envs``, and
    ``default_image``, the build of the embedded probe it boots when no kernel is named (``hvsim run``,
    ``matrix``, ``coverage``, the pytest fixtures): ``"bzImage"`` (the default), ``"elf"`` or ``"efi"``
    (the PE32+ application, for a firmware that boots only EFI images)."""

    name: str
    summary: str
    default_image: str = attrs.field(default="bzImage", validator=_probe_build)


@attrs.frozen
class Acceptance:
    """An environment's answer to "can you boot this image?"."""

    accepted: bool
    entry: str = ""        # the boot entry it would use, e.g. "linux64 at +0x200"
    reason: str = ""       # why not, when not accepted

    @classmethod
    def yes(cls, entry: str) -> "Acceptance":
        return cls(True, entry=entry)

    @classmethod
    def no(cls, reason: str) -> "Acceptance":
        return cls(False, reason=reason)


@attrs.frozen
class PortAccess:
    port: int
    size: int                  # 1, 2 or 4 bytes
    write: bool
    value: int = 0             # the value written (writes only)


@attrs.frozen
class PortAnswered:
    """A port policy's answer that completes the access itself, no device reached: an ``in``
    reads ``value`` (masked to its size), an ``out`` is done (a hypervisor that emulates or
    withholds the port: Xen's reads of a port a PV domain may not reach are all ones)."""

    value: int = 0xFFFF_FFFF


@attrs.frozen
class MsrAccess:
    index: int                 # ECX
    write: bool
    value: int = 0             # EDX:EAX written (writes only)
    rip: int = 0               # address of the rdmsr/wrmsr


@attrs.frozen
class Trap:
    kind: str                  # "syscall", "invalid-opcode", "int", "hlt"
    rip: int
    length: int                # instruction length (0 when it could not be decoded)
    code: bytes = b""          # the instruction's bytes as read at rip (up to 15)
    vector: int | None = None  # for "int"


@attrs.frozen
class GuestException:
    vector: int
    rip: int                   # where the guest resumes after delivery (the faulting instruction for faults)
    error_code: int | None = None
    cr2: int | None = None     # the faulting linear address, for #PF


@attrs.frozen
class InherentDifference:
    """A field of the canonical record (``hvsim.semantics``) in which an environment differs from a
    bare-metal PC because of its ABI, with a one-line reason (``hvsim_inherent_differences``)."""

    field: str
    reason: str
