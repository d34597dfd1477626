"""hvsim: run one kernel under many boot environments on the Unicorn CPU emulator, and compare
what it observed.

Public API: ``run``, ``inspect``, ``Run``, ``MachineConfig``, ``hookimpl`` (for plugins), and the
records plugins exchange with the core (``Environment``, ``Acceptance``, ``InherentDifference``, ``PortAccess``,
``MsrAccess``, ``Trap``, ``GuestException``).
"""

from .core.config import MachineConfig
from .core.errors import HvsimError
from .core.plugin_types import (
    Acceptance, Environment, GuestException, InherentDifference, MsrAccess, PortAccess, Trap,
)
from .core.plugins import get_plugin_manager, hookimpl

__version__ = "0.1.0"


def __getattr__(name):
    # The API pulls in the engine; import it lazily so `from hvsim import hookimpl` stays light.
    if name in ("run", "inspect", "Run"):
        from . import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = [
    "Acceptance", "Environment", "GuestException", "HvsimError", "InherentDifference", "MachineConfig", "MsrAccess",
    "PortAccess", "Run", "Trap",
    "get_plugin_manager", "hookimpl", "inspect", "run",
]
