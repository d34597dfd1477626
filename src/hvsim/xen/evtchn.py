"""Event channels, the 2-level ABI, as Xen keeps them for one domain (xen/common/event_channel.c,
event_2l.c).

The state the guest sees lives in guest memory: the pending and mask bitmaps in shared_info and,
per vCPU, ``evtchn_pending_sel`` and ``evtchn_upcall_pending`` in its vcpu_info; they are read and
written there on every operation, so the guest may flip mask bits directly (as Linux does).  What
only the hypervisor knows (what each port is bound to) is a ``Channel`` record per port.

Raising a port does what ``evtchn_2l_set_pending`` does: set its pending bit; unless it was already
pending or is masked, set the selector bit of its word in the bound vCPU's ``evtchn_pending_sel``;
unless that was already set, set ``evtchn_upcall_pending``; unless that was already set, call
``notify(vcpu)`` (the environment's upcall: a vector at the local APIC, a PV bounce frame).

Channels bound to the toolstack (hvsim's console and xenstore backends) are interdomain channels
whose remote end is a Python callable: the guest's ``send`` calls it, and the backend raises the
guest's port with ``notify_guest``.

Not modelled: the FIFO ABI (init_control is -ENOSYS, as a Xen without it answers), PIRQs
(bind_pirq is -ENOSYS), other domains (bind_interdomain reaches only the toolstack's ports and the
domain's own), the 32-bit shared_info layout (the bitmaps and vcpu_info are the x86-64 ones).
Until the guest places shared_info, raised ports are remembered and applied when it is placed (Xen's
page exists, unmapped, from domain creation).
"""

from __future__ import annotations

import struct
from typing import Callable, Protocol

import attrs

from ..abi.xen import EVTCHNOP_NAMES  # noqa: F401  (re-exported: the names live with the other sub-ops)

# --- xen/include/public/event_channel.h: sub-operations --------------------------------------
EVTCHNOP_bind_interdomain = 0
EVTCHNOP_bind_virq = 1
EVTCHNOP_bind_pirq = 2
EVTCHNOP_close = 3
EVTCHNOP_send = 4
EVTCHNOP_status = 5
EVTCHNOP_alloc_unbound = 6
EVTCHNOP_bind_ipi = 7
EVTCHNOP_bind_vcpu = 8
EVTCHNOP_unmask = 9
EVTCHNOP_reset = 10
EVTCHNOP_init_control = 11
EVTCHNOP_expand_array = 12
EVTCHNOP_set_priority = 13
# struct evtchn_status: status values
EVTCHNSTAT_closed, EVTCHNSTAT_unbound, EVTCHNSTAT_interdomain = 0, 1, 2
EVTCHNSTAT_pirq, EVTCHNSTAT_virq, EVTCHNSTAT_ipi = 3, 4, 5
# Argument layouts (all fields 16/32-bit: identical for 32- and 64-bit callers)
ALLOC_UNBOUND_FORMAT = "<HHI"          # {domid_t dom, remote_dom; evtchn_port_t port (out)}
BIND_INTERDOMAIN_FORMAT = "<H2xII"     # {domid_t remote_dom; port remote_port; port local_port (out)}
BIND_VIRQ_FORMAT = "<III"              # {u32 virq; u32 vcpu; port (out)}
BIND_IPI_FORMAT = "<II"                # {u32 vcpu; port (out)}
BIND_VCPU_FORMAT = "<II"               # {port; u32 vcpu}
STATUS_FORMAT = "<H2xIII"              # {domid_t dom; port; u32 status (out); u32 vcpu (out); union u @16}
STATUS_UNION = 16

# --- xen/include/public/xen.h: VIRQs and the 2-level shared_info (x86-64) ---------------------
VIRQ_TIMER, VIRQ_DEBUG, VIRQ_CONSOLE, VIRQ_DOM_EXC = 0, 1, 2, 3
VIRQ_XENOPROF, VIRQ_XENPMU = 7, 13
NR_VIRQS = 24
PER_VCPU_VIRQS = frozenset({VIRQ_TIMER, VIRQ_DEBUG, VIRQ_XENOPROF, VIRQ_XENPMU})   # virq_is_global()
BITS_PER_WORD = 64                     # xen_ulong_t on x86-64
NR_EVENT_CHANNELS = BITS_PER_WORD * BITS_PER_WORD
VCPU_INFO_SIZE = 64
VCPU_INFO_UPCALL_PENDING = 0           # u8
VCPU_INFO_UPCALL_MASK = 1              # u8
VCPU_INFO_PENDING_SEL = 8              # xen_ulong_t
SHARED_INFO_VCPUS = 32                 # XEN_LEGACY_MAX_VCPUS
SHARED_INFO_EVTCHN_PENDING = SHARED_INFO_VCPUS * VCPU_INFO_SIZE          # 2048
SHARED_INFO_EVTCHN_MASK = SHARED_INFO_EVTCHN_PENDING + NR_EVENT_CHANNELS // 8   # 2560
DOMID_SELF = 0x7FF0
DOMID_TOOLSTACK = 0                    # the remote end of the console and xenstore channels (dom0)

# --- xen/include/public/errno.h (returned negated) -----------------------------------------------
ENOENT, ESRCH, EINVAL, EEXIST, ENOSPC, ENOSYS = 2, 3, 22, 17, 28, 38


class EventError(Exception):
    """An operation refused with Xen error ``errno`` (positive)."""

    def __init__(self, errno: int, why: str):
        super().__init__(why)
        self.errno = errno


class GuestMemory(Protocol):
    def read(self, address: int, size: int) -> bytes: ...
    def write(self, address: int, data: bytes) -> None: ...


@attrs.define
class Channel:
    """One port: what it is bound to and which vCPU it notifies."""

    state: str                          # "unbound", "interdomain", "virq", "ipi" (free ports have no record)
    vcpu: int = 0
    virq: int | None = None
    remote_dom: int | None = None
    remote_port: int | None = None      # interdomain: the other end (a port of this domain, or the backend's)
    backend: str | None = None          # interdomain to the toolstack: the backend's name


class EventChannels:
    """The domain's event channels; ``memory`` is guest-physical memory, ``vcpus`` the vCPU count,
    ``notify(vcpu)`` is called when a vCPU's ``evtchn_upcall_pending`` goes from 0 to 1."""

    def __init__(self, memory: GuestMemory, vcpus: int, *, domid: int,
                 notify: Callable[[int], None] = lambda vcpu: None):
        self.memory = memory
        self.vcpus = vcpus
        self.domid = domid
        self.notify = notify
        self.ports: dict[int, Channel] = {}
        self.virqs: dict[tuple[int, int], int] = {}         # (virq, vcpu) -> port
        self.backends: dict[str, Callable[[], object]] = {}  # backend name -> called on the guest's send
        self.shared_info: int | None = None
        self.vcpu_info: dict[int, int] = {}                  # registered vcpu_info placements
        self._early: list[int] = []                          # raised before shared_info was placed
        self.raised = 0

    # -- where the state lives ---------------------------------------------------------------------
    def place_shared_info(self, address: int) -> None:
        self.shared_info = address
        early, self._early = self._early, []
        for port in early:
            if port in self.ports:
                self.set_pending(port)

    def vcpu_info_address(self, vcpu: int) -> int | None:
        if vcpu in self.vcpu_info:
            return self.vcpu_info[vcpu]
        if self.shared_info is not None and vcpu < SHARED_INFO_VCPUS:
            return self.shared_info + vcpu * VCPU_INFO_SIZE
        return None

    def _bit(self, base: int, port: int) -> int:
        byte = self.memory.read(self.shared_info + base + port // 8, 1)[0]
        return byte >> (port % 8) & 1

    def _set_bit(self, base: int, port: int, value: int) -> int:
        """Set or clear a bitmap bit; returns its old value."""
        address = self.shared_info + base + port // 8
        byte = self.memory.read(address, 1)[0]
        bit = 1 << (port % 8)
        self.memory.write(address, bytes([byte | bit if value else byte & ~bit]))
        return 1 if byte & bit else 0

    def is_pending(self, port: int) -> bool:
        return self.shared_info is not None and bool(self._bit(SHARED_INFO_EVTCHN_PENDING, port))

    def is_masked(self, port: int) -> bool:
        return self.shared_info is not None and bool(self._bit(SHARED_INFO_EVTCHN_MASK, port))

    def upcall_pending(self, vcpu: int = 0) -> bool:
        address = self.vcpu_info_address(vcpu)
        return address is not None and bool(self.memory.read(address + VCPU_INFO_UPCALL_PENDING, 1)[0])

    def upcall_masked(self, vcpu: int = 0) -> bool:
        address = self.vcpu_info_address(vcpu)
        return address is None or bool(self.memory.read(address + VCPU_INFO_UPCALL_MASK, 1)[0])

    def set_upcall_mask(self, vcpu: int, masked: bool) -> None:
        address = self.vcpu_info_address(vcpu)
        if address is not None:
            self.memory.write(address + VCPU_INFO_UPCALL_MASK, bytes([1 if masked else 0]))

    # -- raising -----------------------------------------------------------------------------------
    def set_pending(self, port: int) -> None:
        """Raise ``port`` (evtchn_2l_set_pending)."""
        channel = self.ports.get(port)
        if channel is None:
            return
        self.raised += 1
        if self.shared_info is None:
            self._early.append(port)
            return
        if self._set_bit(SHARED_INFO_EVTCHN_PENDING, port, 1) or self.is_masked(port):
            return
        self._mark_selector(channel.vcpu, port)

    def _mark_selector(self, vcpu: int, port: int) -> None:
        address = self.vcpu_info_address(vcpu)
        if address is None:
            return
        (sel,) = struct.unpack("<Q", self.memory.read(address + VCPU_INFO_PENDING_SEL, 8))
        word = 1 << (port // BITS_PER_WORD)
        if sel & word:
            return
        self.memory.write(address + VCPU_INFO_PENDING_SEL, struct.pack("<Q", sel | word))
        self.mark_upcall_pending(vcpu)

    def mark_upcall_pending(self, vcpu: int) -> None:
        """vcpu_mark_events_pending: set ``evtchn_upcall_pending``; notify on its 0 -> 1 edge."""
        address = self.vcpu_info_address(vcpu)
        if address is None or self.memory.read(address + VCPU_INFO_UPCALL_PENDING, 1)[0]:
            return
        self.memory.write(address + VCPU_INFO_UPCALL_PENDING, b"\x01")
        self.notify(vcpu)

    def raise_virq(self, virq: int, vcpu: int = 0) -> bool:
        """Raise the port bound to ``virq`` on ``vcpu``; False when none is bound."""
        port = self.virqs.get((virq, vcpu))
        if port is None:
            return False
        self.set_pending(port)
        return True

    def notify_guest(self, backend: str) -> None:
        """A toolstack backend notifies the guest's end of its channel(s)."""
        for port, channel in list(self.ports.items()):
            if channel.backend == backend:
                self.set_pending(port)

    # -- allocation ----------------------------------------------------------------------------------
    def _free_port(self) -> int:
        for port in range(1, NR_EVENT_CHANNELS):      # port 0 is reserved (ECS_RESERVED)
            if port not in self.ports:
                return port
        raise EventError(ENOSPC, "no free event channel")

    def _check_vcpu(self, vcpu: int) -> None:
        if vcpu >= self.vcpus:
            raise EventError(ENOENT, f"vcpu {vcpu} does not exist")

    def _check_dom(self, dom: int) -> None:
        if dom not in (DOMID_SELF, self.domid):
            raise EventError(ESRCH, f"domain {dom:#x}")

    def channel(self, port: int) -> Channel:
        """The bound channel at ``port``; -EINVAL for a port out of range or free."""
        channel = self.ports.get(port) if 0 < port < NR_EVENT_CHANNELS else None
        if channel is None:
            raise EventError(EINVAL, f"port {port} is not bound")
        return channel

    def bind_backend(self, backend: str, on_send: Callable[[], object]) -> int:
        """A port of the guest bound, interdomain, to the toolstack's ``backend`` (as the domain
        builder does for the console and xenstore); ``on_send`` runs on every guest ``send``."""
        port = self._free_port()
        self.ports[port] = Channel("interdomain", remote_dom=DOMID_TOOLSTACK, backend=backend)
        self.backends[backend] = on_send
        return port

    def alloc_unbound(self, dom: int, remote_dom: int) -> int:
        self._check_dom(dom)
        port = self._free_port()
        remote = self.domid if remote_dom == DOMID_SELF else remote_dom
        self.ports[port] = Channel("unbound", remote_dom=remote)
        return port

    def bind_interdomain(self, remote_dom: int, remote_port: int) -> int:
        """Bind to an unbound port of this domain (a loopback), or of the toolstack's backends."""
        remote = self.domid if remote_dom == DOMID_SELF else remote_dom
        if remote != self.domid:
            raise EventError(ESRCH, f"domain {remote_dom:#x}: only the domain itself is reachable")
        other = self.channel(remote_port)
        if other.state != "unbound" or other.remote_dom != self.domid:
            raise EventError(EINVAL, f"port {remote_port} is not unbound for this domain")
        port = self._free_port()
        self.ports[port] = Channel("interdomain", remote_dom=remote, remote_port=remote_port)
        other.state, other.remote_port = "interdomain", port
        return port

    def bind_virq(self, virq: int, vcpu: int) -> int:
        if virq >= NR_VIRQS:
            raise EventError(EINVAL, f"virq {virq} out of range")
        if virq not in PER_VCPU_VIRQS and vcpu != 0:
            raise EventError(EINVAL, f"global virq {virq} must be bound on vcpu 0")
        self._check_vcpu(vcpu)
        if (virq, vcpu) in self.virqs:
            raise EventError(EEXIST, f"virq {virq} is already bound on vcpu {vcpu}")
        port = self._free_port()
        self.ports[port] = Channel("virq", vcpu=vcpu, virq=virq)
        self.virqs[(virq, vcpu)] = port
        return port

    def bind_ipi(self, vcpu: int) -> int:
        self._check_vcpu(vcpu)
        port = self._free_port()
        self.ports[port] = Channel("ipi", vcpu=vcpu)
        return port

    # -- operations on a port --------------------------------------------------------------------------
    def close(self, port: int) -> None:
        channel = self.channel(port)
        if channel.state == "virq":
            self.virqs.pop((channel.virq, channel.vcpu), None)
        if channel.state == "interdomain" and channel.remote_port is not None:
            other = self.ports.get(channel.remote_port)
            if other is not None:               # the other end goes back to unbound
                other.state, other.remote_port = "unbound", None
        del self.ports[port]
        if self.shared_info is not None:        # a reused port starts clean (evtchn_2l_clear_pending)
            self._set_bit(SHARED_INFO_EVTCHN_PENDING, port, 0)

    def send(self, port: int) -> object:
        """Notify the other end; returns what a backend's handler returned (else None)."""
        channel = self.channel(port)
        if channel.state == "ipi":
            self.set_pending(port)
        elif channel.state == "interdomain":
            if channel.backend is not None:
                return self.backends[channel.backend]()
            self.set_pending(channel.remote_port)
        elif channel.state != "unbound":         # an unbound port drops the notification silently
            raise EventError(EINVAL, f"port {port} is bound to a {channel.state}: it cannot be sent to")
        return None

    def unmask(self, port: int) -> None:
        """evtchn_2l_unmask: clear the mask bit; a pending event then reaches its vCPU."""
        channel = self.channel(port)
        if self.shared_info is None:
            return
        if self._set_bit(SHARED_INFO_EVTCHN_MASK, port, 0) and self.is_pending(port):
            self._mark_selector(channel.vcpu, port)

    def bind_vcpu(self, port: int, vcpu: int) -> None:
        channel = self.channel(port)
        self._check_vcpu(vcpu)
        if channel.state not in ("unbound", "interdomain") and not (
                channel.state == "virq" and channel.virq not in PER_VCPU_VIRQS):
            raise EventError(EINVAL, f"a {channel.state} port stays on its vcpu")
        channel.vcpu = vcpu

    def status(self, dom: int, port: int) -> bytes:
        """The ``struct evtchn_status`` output fields (status, vcpu, union) for ``port``."""
        self._check_dom(dom)
        if not 0 <= port < NR_EVENT_CHANNELS:
            raise EventError(EINVAL, f"port {port} out of range")
        channel = self.ports.get(port)
        if channel is None:
            return struct.pack("<II8x", EVTCHNSTAT_closed, 0)
        if channel.state == "unbound":
            return struct.pack("<IIH6x", EVTCHNSTAT_unbound, channel.vcpu, channel.remote_dom)
        if channel.state == "interdomain":
            remote_port = channel.remote_port if channel.remote_port is not None else 0
            return struct.pack("<IIH2xI", EVTCHNSTAT_interdomain, channel.vcpu, channel.remote_dom, remote_port)
        if channel.state == "virq":
            return struct.pack("<III4x", EVTCHNSTAT_virq, channel.vcpu, channel.virq)
        return struct.pack("<II8x", EVTCHNSTAT_ipi, channel.vcpu)
