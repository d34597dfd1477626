"""How a run ended and what it recorded: ``StopReason``, ``GuestState`` and ``RunResult``.

Exit statuses (the ``hvsim run`` process status; also ``RunResult.exit_status``):

=====  ==============  ===========================================================
 0     poweroff        the guest powered off (ACPI S5, exit port code 0, EFI success)
 1     exit            the guest exited with a nonzero code (exit port, EFI error)
 10    reboot          the guest asked to reboot
 11    crash           the guest reported a crash (Xen SHUTDOWN_crash, panic)
 20    halt            hlt with interrupts off: the guest stopped for good
 21    idle            hlt with interrupts on and no interrupt source that could wake it
 30    timeout         the wall-clock budget ran out
 31    budget          the instruction budget ran out
 40    triple-fault    an exception could not be delivered, nor #DF after it
 41    unhandled-trap  a trap no environment answers (e.g. an unknown instruction)
 42    bad-access      the guest touched guest-physical memory that does not exist
 50    host-error      the engine or a plugin failed (the result keeps the trace)
 130   interrupted     the user interrupted the run (Ctrl-C)
=====  ==============  ===========================================================
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from .events import ConsoleOutput, Event

# The layout of ``RunResult.to_dict`` (``hvsim run --json``): raised when a key changes meaning or goes.
SCHEMA_VERSION = 1

EXIT_STATUS = {
    "poweroff": 0,
    "exit": 1,
    "reboot": 10,
    "crash": 11,
    "halt": 20,
    "idle": 21,
    "timeout": 30,
    "budget": 31,
    "triple-fault": 40,
    "unhandled-trap": 41,
    "bad-access": 42,
    "host-error": 50,
    "interrupted": 130,
}


@attrs.frozen
class StopReason:
    kind: str = attrs.field(validator=attrs.validators.in_(EXIT_STATUS))
    detail: str = ""
    code: int | None = None

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.kind]

    def describe(self) -> str:
        text = self.kind
        if self.code is not None:
            text += f" (code {self.code})"
        return f"{text}: {self.detail}" if self.detail else text


@attrs.frozen
class GuestState:
    """The CPU at the stop: registers, mode, and the instruction at RIP disassembled."""

    registers: dict[str, int]
    mode: str                      # "real", "protected32", "long64", "compat32"
    instruction: str               # capstone text, or why it could not be read
    instruction_bytes: str = ""

    def to_dict(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class RunStats:
    """What the run cost and how much guest time it made.  Guest time is not derived from
    instructions: ``guest_ns = blocks * ns_per_block + idle_ns`` (each executed translation block,
    however many instructions it holds, advances the clock by ``ns_per_block``; ``idle_ns`` is the
    time skipped while the guest waited in ``hlt``).  The TSC the guest reads is ``guest_ns``."""

    wall_seconds: float
    emu_starts: int
    blocks: int
    instructions: int | None
    faults_delivered: int
    guest_ns: int = 0
    idle_ns: int = 0
    ns_per_block: int = 10
    interrupts_delivered: int = 0
    interrupts: dict[str, int] = attrs.field(factory=dict)   # vector (hex) -> times delivered
    tsc_reads: int = 0


@attrs.frozen
class RunResult:
    environment: str
    image: str
    entry: str
    config: dict
    stop: StopReason
    state: GuestState | None
    events: tuple[Event, ...]
    stats: RunStats
    extra: dict[str, Any] = attrs.field(factory=dict)   # added by plugins in hvsim_finish

    @property
    def exit_status(self) -> int:
        return self.stop.exit_status

    def console(self, channel: str | None = None) -> str:
        """All console text, or one channel's, in the order the guest wrote it."""
        return "".join(
            e.text for e in self.events
            if isinstance(e, ConsoleOutput) and (channel is None or e.channel == channel)
        )

    def to_dict(self) -> dict:
        from .. import __version__

        return {
            "schema_version": SCHEMA_VERSION,
            "hvsim_version": __version__,
            "environment": self.environment,
            "image": self.image,
            "entry": self.entry,
            "config": self.config,
            "stop": {**attrs.asdict(self.stop), "exit_status": self.exit_status},
            "state": self.state.to_dict() if self.state else None,
            "console": self.console(),
            "events": [e.to_dict() for e in self.events],
            "stats": attrs.asdict(self.stats),
            "extra": self.extra,
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)
