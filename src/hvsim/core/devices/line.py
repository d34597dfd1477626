"""Interrupt lines: how a device's interrupt output reaches whatever it is wired to.

A device is handed an ``IrqLine`` and drives it; it never knows what is on the other end (an 8259
input, an I/O APIC pin, both, or nothing).  Level-triggered devices ``set`` the level; an edge is a
``pulse`` (raise then lower).  The receiver is a callable taking the new level, called only when
the level changes (a pulse always calls it twice).
"""

from __future__ import annotations

from typing import Callable


class IrqLine:
    __slots__ = ("level", "_receivers", "name")

    def __init__(self, *receivers: Callable[[bool], None], name: str = ""):
        self.level = False
        self._receivers = list(receivers)
        self.name = name

    def connect(self, receiver: Callable[[bool], None]) -> None:
        self._receivers.append(receiver)

    def set(self, level: bool) -> None:
        level = bool(level)
        if level == self.level:
            return
        self.level = level
        for receiver in self._receivers:
            receiver(level)

    def raise_(self) -> None:
        self.set(True)

    def lower(self) -> None:
        self.set(False)

    def pulse(self) -> None:
        self.set(False)
        self.set(True)
        self.set(False)
