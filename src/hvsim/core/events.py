"""What a run records: attrs records for every event, JSON-able through ``to_dict``.

Events are appended to ``Machine.events`` and shown to observers through the ``hvsim_event`` hook.
"""

from __future__ import annotations

from typing import Any

import attrs


def _as_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _as_json(v) for k, v in value.items()}
    return value


@attrs.frozen
class Event:
    """Base class. ``seq`` orders events of one run; ``kind`` names the record type in JSON."""

    seq: int = attrs.field(kw_only=True, default=0)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        out = {"kind": self.kind}
        out.update({k: _as_json(v) for k, v in attrs.asdict(self, recurse=False).items()})
        return out


@attrs.frozen
class ConsoleOutput(Event):
    """Text the guest wrote to a console (``channel``: "serial0", "debugcon", "hvc0", "efi-conout"...)."""

    channel: str
    text: str


@attrs.frozen
class Call(Event):
    """A call into the environment: hypercall, firmware service, or a trapped instruction answered."""

    interface: str            # "xen-hypercall", "efi-boot-services", "cpuid", "msr", ...
    name: str
    args: dict = attrs.field(factory=dict)
    result: Any = None
    rip: int | None = None


@attrs.frozen
class Fault(Event):
    """A CPU exception: delivered through the guest IDT, or not deliverable."""

    vector: int
    name: str
    rip: int
    error_code: int | None = None
    cr2: int | None = None
    delivered: bool = True
    detail: str = ""


@attrs.frozen
class Shutdown(Event):
    """The guest asked to power off, reboot, crash or exit (``reason``), with an optional code."""

    reason: str
    source: str
    code: int | None = None
    detail: str = ""


@attrs.frozen
class Note(Event):
    """Something worth telling the user that is neither an error nor a guest action."""

    text: str
