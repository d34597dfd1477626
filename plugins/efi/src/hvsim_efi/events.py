"""Events, timers, the watchdog and TPL (UEFI 2.10 §7.1), as edk2's DXE core keeps them.

Time is the machine's guest time (``machine.guest_ns``).  Timers are checked only at the firmware's
timer tick (``tick.py``, every 10 ms while boot services run), as edk2's CoreTimerTick does: a timer
event is signalled at the first tick at or after its trigger time, a periodic one is re-armed a
period later (if that is already past, at the next tick).

Notification functions (EVT_NOTIFY_SIGNAL) are queued when their event is signalled and run when
the TPL is below theirs: at the tick (asynchronously, in the interrupted code's context), at the
return of the service that signalled them, or when RestoreTPL drops the TPL below theirs; the
highest TPL first, in signal order within a TPL, each at its own TPL and once however often it was
signalled while queued.  TPL_HIGH_LEVEL means interrupts off: RaiseTPL to it clears RFLAGS.IF,
RestoreTPL below it sets it (§7.1.8).  ConIn's WaitForKey is an event that is signalled while
scripted keys remain.

Not modelled: EVT_NOTIFY_WAIT notification functions (a wait event's notify is never called).
"""

from __future__ import annotations

import attrs

from hvsim.abi import efi
from hvsim.core.events import Shutdown
from hvsim.core.result import StopReason

from .calls import EfiError, service

EVENT_GROUP_EXIT_BOOT_SERVICES = efi.guid_bytes("27abf055-b1b8-4c26-8048-748f37baa2df")
EVENT_GROUP_VIRTUAL_ADDRESS_CHANGE = efi.guid_bytes("13fa7698-c831-49c7-87ea-8f43fcc25196")
VALID_TPLS = (efi.TPL_APPLICATION, efi.TPL_CALLBACK, efi.TPL_NOTIFY, efi.TPL_HIGH_LEVEL)


@attrs.define
class Event:
    type: int
    tpl: int
    notify_function: int
    notify_context: int
    group: bytes | None = None
    signaled: bool = False
    trigger_ns: int | None = None
    period_ns: int = 0
    is_key_wait: bool = False


class EventTable:
    def __init__(self, fw):
        self.fw = fw
        self.events: dict[int, Event] = {}
        self.tpl = efi.TPL_APPLICATION
        self.watchdog_deadline: int | None = None
        self.pending: list[int] = []       # handles of events whose notification waits, in signal order
        self.wait_rounds = 0               # ticks a WaitForEvent has waited without an event being ready

    def now(self) -> int:
        return self.fw.m.guest_ns()

    def create(self, event: Event) -> int:
        handle = self.fw.alloc(efi.BOOT_SERVICES_DATA, 16, 16)
        self.events[handle] = event
        return handle

    def get(self, handle: int) -> Event:
        event = self.events.get(handle)
        if event is None:
            raise EfiError(efi.INVALID_PARAMETER, f"{handle:#x} is not an event")
        return event

    def signal(self, event: Event) -> None:
        """SignalEvent: the event, or every event of its group."""
        members = [event] if event.group is None else [e for e in self.events.values() if e.group == event.group]
        for e in members:
            self._signal_one(e)

    def _signal_one(self, event: Event) -> None:
        if event.type & efi.EVT_NOTIFY_SIGNAL and event.notify_function:
            handle = next(h for h, v in self.events.items() if v is event)
            if handle not in self.pending:
                self.pending.append(handle)
        else:
            event.signaled = True

    def notification_above(self, tpl: int) -> bool:
        """Is a notification queued whose TPL is above ``tpl`` (so it must run before the TPL
        drops to ``tpl``)?"""
        return any(self.events[h].tpl > tpl for h in self.pending if h in self.events)

    def take_notification(self, tpl: int) -> tuple[int, tuple[int, int], int] | None:
        """The next notification to run above ``tpl``: ``(function, (event, context), its TPL)``,
        the highest TPL first and the earliest signalled within it; ``None`` when none is queued."""
        self.pending = [h for h in self.pending if h in self.events]      # closed events drop out
        queued = [h for h in self.pending if self.events[h].tpl > tpl]
        if not queued:
            return None
        handle = max(queued, key=lambda h: self.events[h].tpl)          # max keeps the first of equals
        self.pending.remove(handle)
        event = self.events[handle]
        return event.notify_function, (handle, event.notify_context), event.tpl

    def tick(self) -> None:
        """The firmware's timer tick: expire the watchdog, signal the timer events that are due."""
        now = self.now()
        if self.watchdog_deadline is not None and now >= self.watchdog_deadline and self.fw.boot_services_active:
            self.watchdog_deadline = None
            self.fw.m.shutdown(Shutdown(reason="watchdog", source="EFI watchdog timer (SetWatchdogTimer) expired"))
        for event in list(self.events.values()):
            if event.trigger_ns is not None and now >= event.trigger_ns:
                if event.period_ns:
                    event.trigger_ns = max(event.trigger_ns + event.period_ns, now)
                else:
                    event.trigger_ns = None
                self.signal(event)

    def watchdog(self, seconds: int) -> None:
        self.watchdog_deadline = self.now() + seconds * 1_000_000_000 if seconds else None

    def exit_boot_services(self) -> None:
        for event in list(self.events.values()):
            event.trigger_ns = None
            if event.group == EVENT_GROUP_EXIT_BOOT_SERVICES:
                self._signal_one(event)
        self.watchdog_deadline = None

    def virtual_address_change(self) -> None:
        for event in list(self.events.values()):
            if event.type == efi.EVT_SIGNAL_VIRTUAL_ADDRESS_CHANGE or event.group == EVENT_GROUP_VIRTUAL_ADDRESS_CHANGE:
                self._signal_one(event)

    def ready(self, event: Event) -> bool:
        """Is the event signalled now?  Consumes the signal, except a key wait's (the key stays
        until ReadKeyStroke takes it)."""
        if event.is_key_wait:
            return bool(self.fw.keys)
        if event.signaled:
            event.signaled = False
            return True
        return False


def _create(ctx, group: bytes | None, out_name: str) -> int:
    a = ctx.args
    out = ctx.pointer(out_name)
    kind = a["Type"]
    notify = kind & (efi.EVT_NOTIFY_WAIT | efi.EVT_NOTIFY_SIGNAL)
    if notify == (efi.EVT_NOTIFY_WAIT | efi.EVT_NOTIFY_SIGNAL):
        raise EfiError(efi.INVALID_PARAMETER, "both EVT_NOTIFY_WAIT and EVT_NOTIFY_SIGNAL")
    if notify and (a["NotifyFunction"] == 0 or a["NotifyTpl"] not in VALID_TPLS):
        raise EfiError(efi.INVALID_PARAMETER, "a notify event needs a NotifyFunction and a valid NotifyTpl")
    if kind == efi.EVT_SIGNAL_EXIT_BOOT_SERVICES:
        group = EVENT_GROUP_EXIT_BOOT_SERVICES
    elif kind == efi.EVT_SIGNAL_VIRTUAL_ADDRESS_CHANGE:
        group = EVENT_GROUP_VIRTUAL_ADDRESS_CHANGE
    handle = ctx.fw.events.create(Event(kind, a["NotifyTpl"], a["NotifyFunction"], a["NotifyContext"], group))
    ctx.write_u64(out, handle)
    ctx.record["event"] = handle
    return efi.SUCCESS


@service("BS", "CreateEvent", "Type", "NotifyTpl", "NotifyFunction", "NotifyContext", "Event")
def create_event(ctx):
    return _create(ctx, None, "Event")


@service("BS", "CreateEventEx", "Type", "NotifyTpl", "NotifyFunction", "NotifyContext", "EventGroup", "Event")
def create_event_ex(ctx):
    group = ctx.guid("EventGroup") if ctx.args["EventGroup"] else None
    return _create(ctx, group, "Event")


@service("BS", "SetTimer", "Event", "Type", "TriggerTime")
def set_timer(ctx):
    events = ctx.fw.events
    event = events.get(ctx.args["Event"])
    kind, ticks = ctx.args["Type"], ctx.args["TriggerTime"]
    if not event.type & efi.EVT_TIMER or kind not in (efi.TIMER_CANCEL, efi.TIMER_PERIODIC, efi.TIMER_RELATIVE):
        raise EfiError(efi.INVALID_PARAMETER, "not a timer event, or an unknown timer type")
    if kind == efi.TIMER_CANCEL:
        event.trigger_ns = None
        return efi.SUCCESS
    event.trigger_ns = events.now() + ticks * 100
    event.period_ns = 0
    if kind == efi.TIMER_PERIODIC:       # a periodic TriggerTime of 0 means every tick (edk2 CoreSetTimer)
        event.period_ns = ticks * 100 or ctx.fw.timer.period_100ns * 100
    return efi.SUCCESS


MAX_WAIT_ROUNDS = 100_000      # ticks (1000 s of guest time) a WaitForEvent may wait with nothing ready


@service("BS", "WaitForEvent", "NumberOfEvents", "Event", "Index")
def wait_for_event(ctx):
    """Ready: the index.  Not ready: the call blocks (``ctx.block``): the caller goes on in the
    firmware's idle code, ``sti; hlt`` until an interrupt (the tick, which may signal an event),
    then calls again; it is recorded once, when it returns.  Nothing can ever signal the events
    (no timer armed, no keys left): the run stops as idle."""
    events = ctx.fw.events
    count = ctx.args["NumberOfEvents"]
    array, index_out = ctx.pointer("Event"), ctx.pointer("Index")
    if count == 0 or count > 1024:
        raise EfiError(efi.INVALID_PARAMETER, f"NumberOfEvents {count}")
    if events.tpl != efi.TPL_APPLICATION:
        raise EfiError(efi.UNSUPPORTED, f"WaitForEvent at TPL {events.tpl} (only TPL_APPLICATION may wait)")
    handles = [ctx.read_u64(array + 8 * i) for i in range(count)]
    waited = [events.get(h) for h in handles]
    if any(e.type & efi.EVT_NOTIFY_SIGNAL for e in waited):
        raise EfiError(efi.INVALID_PARAMETER, "an event of type EVT_NOTIFY_SIGNAL cannot be waited for")
    for i, event in enumerate(waited):
        if events.ready(event):
            events.wait_rounds = 0
            ctx.write_u64(index_out, i)
            ctx.record["index"] = i
            return efi.SUCCESS
    armed = any(e.trigger_ns is not None for e in events.events.values())
    if not armed or ctx.m.stop_reason is not None:
        events.wait_rounds = 0
        why = "nothing can signal the events waited for (no timer armed"
        why += ", no scripted keys left)" if any(e.is_key_wait for e in waited) else ")"
        ctx.m.stop(StopReason("idle", detail=f"EFI WaitForEvent: {why}"))
        raise EfiError(efi.NOT_READY, why)
    events.wait_rounds += 1
    if events.wait_rounds > MAX_WAIT_ROUNDS:
        events.wait_rounds = 0
        ctx.m.stop(StopReason("idle", detail="EFI WaitForEvent: timers keep firing but none of the events waited for"))
        raise EfiError(efi.NOT_READY, f"{MAX_WAIT_ROUNDS} ticks passed without signalling the events waited for")
    ctx.block()
    return None


@service("BS", "SignalEvent", "Event")
def signal_event(ctx):
    events = ctx.fw.events
    events.signal(events.get(ctx.args["Event"]))
    return efi.SUCCESS


@service("BS", "CloseEvent", "Event")
def close_event(ctx):
    events = ctx.fw.events
    events.get(ctx.args["Event"])
    del events.events[ctx.args["Event"]]
    return efi.SUCCESS


@service("BS", "CheckEvent", "Event")
def check_event(ctx):
    events = ctx.fw.events
    event = events.get(ctx.args["Event"])
    if event.type & efi.EVT_NOTIFY_SIGNAL:
        raise EfiError(efi.INVALID_PARAMETER, "CheckEvent on an EVT_NOTIFY_SIGNAL event")
    return efi.SUCCESS if events.ready(event) else efi.NOT_READY
