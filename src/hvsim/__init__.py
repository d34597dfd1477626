"""hvsim: run one kernel under many boot environments on the Unicorn CPU emulator, and compare
what it observed.

Public API: ``run``, ``inspect``, ``Run``, ``MachineConfig``, ``RunResult`` and ``StopReason`` (what a
run returns), ``hookimpl`` (for plugins), the records plugins exchange with the core
(``Environment``, ``Acceptance``, ``InherentDifference``, ``PortAccess``, ``PortAnswered``,
``MsrAccess``, ``Trap``, ``GuestException``) and the events a run records (``Event``, ``Call``, ``ConsoleOutput``, ``Fault``,
``Shutdown``, ``Note``; a plugin records a call into its ABI with ``machine.emit(Call(...))``).
"""

from .core.config import MachineConfig
from .core.errors import HvsimError
from .core.events import Call, ConsoleOutput, Event, Fault, Note, Shutdown
from .core.plugin_types import (
    Acceptance, Environment, GuestException, InherentDifference, MsrAccess, PortAccess, PortAnswered, Trap,
)
from .core.plugins import get_plugin_manager, hookimpl
from .core.result import RunResult, StopReason

__version__ = "0.1.0"       # the one place: pyproject.toml reads it (tool.setuptools.dynamic)


def __getattr__(name):
    # The API pulls in the engine; import it lazily so `from hvsim import hookimpl` stays light.
    if name in ("run", "inspect", "Run"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'hvsim' has no attribute {name!r}")


__all__ = [
    "Acceptance", "Call", "ConsoleOutput", "Environment", "Event", "Fault", "GuestException", "HvsimError",
    "InherentDifference", "MachineConfig", "MsrAccess", "Note", "PortAccess", "PortAnswered", "Run", "RunResult", "Shutdown",
    "StopReason", "Trap",
    "get_plugin_manager", "hookimpl", "inspect", "run",
]
