"""Which events ``hvsim run --trace``/``--trace-file`` records: ``--trace-filter KIND[,INTERFACE...]``.

Each comma-separated term is an event kind (``Call``, ``Fault``, ``ConsoleOutput``, ``Shutdown``,
``Note``; any case) or a call interface (``xen-hypercall``, ``efi-boot-services``, ``cpuid``, ``msr``,
...: whatever a ``Call`` event's ``interface`` says).  An event is kept when its kind is named,
except that naming interfaces narrows calls to those interfaces: ``Fault,cpuid`` keeps faults and
CPUID calls, ``xen-hypercall`` only hypercalls, ``Call`` every call.  No filter keeps everything.
"""

from __future__ import annotations

import attrs

from .core.errors import UsageError
from .core.events import Call, Event


def event_kinds() -> dict[str, str]:
    """Lower-case name -> name of every event record type (the subclasses of ``Event``)."""
    found, todo = {}, [Event]
    while todo:
        for sub in todo.pop().__subclasses__():
            found[sub.__name__.lower()] = sub.__name__
            todo.append(sub)
    return found


@attrs.frozen
class TraceFilter:
    kinds: frozenset[str] = frozenset()         # event kinds named
    interfaces: frozenset[str] = frozenset()    # call interfaces named

    @classmethod
    def parse(cls, spec: str | None) -> "TraceFilter":
        """The filter ``--trace-filter spec`` describes (None: keep everything)."""
        if spec is None:
            return cls()
        terms = [term.strip() for term in spec.split(",")]
        if not all(terms):
            raise UsageError(f"--trace-filter {spec!r}: an empty term (expected KIND[,INTERFACE...], "
                             f"kinds: {', '.join(sorted(event_kinds().values()))})")
        known = event_kinds()
        kinds = frozenset(known[t.lower()] for t in terms if t.lower() in known)
        interfaces = frozenset(t for t in terms if t.lower() not in known)
        return cls(kinds, interfaces)

    @property
    def empty(self) -> bool:
        return not self.kinds and not self.interfaces

    def accepts(self, event: Event) -> bool:
        if self.empty:
            return True
        if isinstance(event, Call) and self.interfaces:
            return event.interface in self.interfaces
        return event.kind in self.kinds

    def names(self, kind: str) -> bool:
        """Whether ``kind`` is named explicitly."""
        return kind in self.kinds
