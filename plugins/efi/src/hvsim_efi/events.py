"""Events, timers, the watchdog and TPL bookkeeping (UEFI 2.10 §7.1).

Time is guest time (``machine.guest_ns``, deterministic) plus what Stall and WaitForEvent skipped
ahead.  Timers are checked at every firmware call; a timer or a SignalEvent whose event has a
notification function (EVT_NOTIFY_SIGNAL) makes the firmware call that function before the service
returns to its caller, so notifications reach the guest at firmware-call boundaries.
ConIn's WaitForKey is an event that is signalled while scripted keys remain.
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
        self.skipped_ns = 0
        self.watchdog_deadline: int | None = None
        self.notify_queue: list[tuple[int, tuple[int, ...]]] = []

    def now(self) -> int:
        return self.fw.m.guest_ns() + self.skipped_ns

    def advance(self, ns: int) -> None:
        self.skipped_ns += ns
        self.fire_due_timers()

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
            self.notify_queue.append((event.notify_function, (handle, event.notify_context)))
        else:
            event.signaled = True

    def take_notifications(self) -> list[tuple[int, tuple[int, ...]]]:
        queue, self.notify_queue = self.notify_queue, []
        return queue

    def fire_due_timers(self) -> None:
        now = self.now()
        if self.watchdog_deadline is not None and now >= self.watchdog_deadline and self.fw.boot_services_active:
            self.watchdog_deadline = None
            self.fw.m.shutdown(Shutdown(reason="watchdog", source="EFI watchdog timer (SetWatchdogTimer) expired"))
        for event in list(self.events.values()):
            if event.trigger_ns is not None and now >= event.trigger_ns:
                event.trigger_ns = now + event.period_ns if event.period_ns else None
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
    event.period_ns = ticks * 100 if kind == efi.TIMER_PERIODIC else 0
    return efi.SUCCESS


@service("BS", "WaitForEvent", "NumberOfEvents", "Event", "Index")
def wait_for_event(ctx):
    events = ctx.fw.events
    count = ctx.args["NumberOfEvents"]
    array, index_out = ctx.pointer("Event"), ctx.pointer("Index")
    if count == 0 or count > 1024:
        raise EfiError(efi.INVALID_PARAMETER, f"NumberOfEvents {count}")
    handles = [ctx.read_u64(array + 8 * i) for i in range(count)]
    waited = [events.get(h) for h in handles]
    if any(e.type & efi.EVT_NOTIFY_SIGNAL for e in waited):
        raise EfiError(efi.INVALID_PARAMETER, "an event of type EVT_NOTIFY_SIGNAL cannot be waited for")
    for _ in range(100_000):
        for i, event in enumerate(waited):
            if events.ready(event):
                ctx.write_u64(index_out, i)
                ctx.record["index"] = i
                return efi.SUCCESS
        pending = [e.trigger_ns for e in events.events.values() if e.trigger_ns is not None]
        if not pending or ctx.m.stop_reason is not None:
            why = "nothing can signal the events waited for (no timer armed"
            why += ", no scripted keys left)" if any(e.is_key_wait for e in waited) else ")"
            ctx.m.stop(StopReason("idle", detail=f"EFI WaitForEvent: {why}"))
            raise EfiError(efi.NOT_READY, why)
        events.advance(max(0, min(pending) - events.now()))
    ctx.m.stop(StopReason("idle", detail="EFI WaitForEvent: timers keep firing but none of the events waited for"))
    raise EfiError(efi.NOT_READY, "timers fired 100000 times without signalling the events waited for")


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
