"""The Xen hypervisor as a guest sees it, written once for every Xen environment (xen_pvh, xen_pv).

``XenHypervisor`` holds one domain's state (features, shared_info and vcpu_info placement, HVM
params, event channels, console) and answers hypercalls by number.  An environment plugin decides
how a hypercall arrives (``vmcall``/``vmmcall``, ``syscall``, a hypercall page) and calls
``XenHypervisor.dispatch``; a PV environment adds its own operations with ``register``.

Every guest pointer is a guest-virtual address read through ``machine.vmem`` (HVM and PV guests both
pass linear addresses), so a pointer outside the guest's page tables or RAM gets ``-EFAULT``; an
unknown hypercall or sub-operation gets ``-ENOSYS``.  Each call is recorded as a ``Call`` event
(interface ``"xen-hypercall"``) with its decoded arguments and its result.

What is answered, and how (anything else is -ENOSYS, recorded):
- console_io: write (to channel ``xen``), read (no input: 0 bytes); a domain that is not the
  console domain gets -EPERM, except a write when ``debug_build`` (Xen's debug builds allow it).
- sched_op: yield; block (clears the upcall mask, then guest time skips from event to event
  until ``wakeup_pending()``; the run ends as ``idle`` when nothing can wake the vCPU, and Ctrl-C or
  the wall-clock budget end the wait); poll (the same, until one of the ports is pending or the
  timeout); shutdown (poweroff, reboot, crash, watchdog; suspend is refused with -EINVAL),
  shutdown_code.
- xen_version: version (4.17), extraversion, capabilities, changeset, compile_info, pagesize,
  get_features (``features`` given by the environment), commandline (empty).
- memory_op: memory_map, maximum_reservation, current_reservation, maximum_gpfn,
  add_to_physmap for shared_info and grant frames.
- hvm_op: get_param/set_param (console and store pfn and event channel, callback irq, and any
  other parameter as a stored value), set_evtchn_upcall_vector, flush_tlbs, pagetable_dying.
- vcpu_op: is_up, register_vcpu_info, register_runstate_memory_area, set/stop_singleshot_timer,
  set/stop_periodic_timer; set_timer_op.  Timers run on ``machine.clock`` and raise VIRQ_TIMER.
- event_channel_op (``evtchn.EventChannels``, the 2-level ABI): alloc_unbound, bind_interdomain,
  bind_virq, bind_ipi, send (the console and xenstore channels reach hvsim's backends), close,
  status, bind_vcpu, unmask; init_control is -ENOSYS.
- Xen time: ``vcpu_time_info`` (system time = guest time, the TSC stamp what rdtsc returns) is
  rewritten when shared_info or a vcpu_info is placed, on timer programming and at every upcall;
  the wallclock is ``WALLCLOCK_EPOCH_S`` at system time 0.
- Upcalls: ``deliver_upcall(vcpu)`` is the environment's (PVH: ``hvm_upcall.HvmUpcall``); with none
  an event is recorded (one note) and stays pending.
- grant_table_op (``grant_table.GrantTable``): query_size, setup_table, set_version, get_version,
  get_status_frames; map/unmap/copy/transfer and the rest are -ENOSYS with the reason recorded
  (no other domain shares grants).  memory_op add_to_physmap places shared_info and grant frames
  (shared and status) at any gpfn, a hole of the memory map included (``back_gpfn``).
- Every sub-operation is named in the trace from the public headers (``abi.xen.sub_op_name``),
  answered or not.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from ..abi import xen as x
from ..core.clock import TSC_HZ, WALLCLOCK_EPOCH_S
from ..core.cpuid import LEAF1_ECX_HYPERVISOR
from ..core.devices import ConsoleSink
from ..core.errors import GuestMemoryError
from ..core.events import Call, Shutdown
from ..core.result import StopReason
from . import evtchn as ev
from .console import ConsoleRing
from .grant_table import GrantError, GrantTable
from .pvclock import publish_time, publish_wallclock
from .timer import MIN_PERIOD_NS, VCPU_SSHOTTMR_future, VcpuTimers

if TYPE_CHECKING:
    from ..core.layout import MemoryRange
    from ..core.machine import Machine

XEN_VERSION = (4, 17)
EXTRAVERSION = b".0-hvsim"
PAGE = 0x1000
MAX_CONSOLE_WRITE = 1 << 16
# An idle vCPU (SCHEDOP_block, poll) whose events never wake it would skip time forever; after this
# much guest time it is stopped as idle (as the run loop does for hlt).
MAX_BLOCK_NS = 3600 * 10**9
ETIME = 62                                        # errno.h: a single-shot timer in the past
# vcpu.h: the timer sub-operations; hvm/params.h: HVM_PARAM_CALLBACK_IRQ's type in bits 63:56
VCPUOP_set_periodic_timer, VCPUOP_stop_periodic_timer = 6, 7
VCPUOP_set_singleshot_timer, VCPUOP_stop_singleshot_timer = 8, 9
VCPUOP_register_runstate_memory_area = 5
# vcpu.h: struct vcpu_runstate_info {int state; u64 state_entry_time; u64 time[4]} (x86-64 and
# compat alike: 4-byte pad after state), time[] indexed by RUNSTATE_running/runnable/blocked/offline
RUNSTATE_FORMAT = "<i4xQQQQQ"
RUNSTATE_running = 0
VCPUOP_NAMES = x.VCPUOP_NAMES
HVM_PARAM_CALLBACK_TYPE_GSI, HVM_PARAM_CALLBACK_TYPE_PCI_INTX, HVM_PARAM_CALLBACK_TYPE_VECTOR = 0, 1, 2
HVM_PARAM_CALLBACK_TYPE_SHIFT = 56
SCHED_POLL_FORMAT = "<QIIQ"                       # {XEN_GUEST_HANDLE(port) ports; u32 nr_ports; pad; u64 timeout}
SCHED_POLL_COMPAT_FORMAT = "<IIQ"                 # 32-bit caller: a 32-bit handle


# Leaves Xen shows every guest empty (cpu-policy.c recalculate_misc): MONITOR (5), thermal and power
# (6, with ARAT), 8, 0xC, and the extended topology (0xB: Xen 4.17 clears its topology leaves).
GUEST_EMPTY_LEAVES = frozenset({0x5, 0x6, 0x8, 0xB, 0xC})

class HypercallError(Exception):
    def __init__(self, errno: int, why: str = ""):
        super().__init__(why)
        self.errno = errno


class Continuation(Exception):
    """A hypercall did part of its work and must be entered again with ``args`` (Xen's
    hypercall_create_continuation): the guest re-executes the same hypercall instruction, so the
    run loop regains control (budgets, the wall clock) between the parts of a long call."""

    def __init__(self, args: tuple[int, ...]):
        super().__init__("continued")
        self.resume_args = tuple(args)


Handler = Callable[[tuple[int, ...], dict], int]
INTERFACE = "xen-hypercall"               # the Call events' interface
_NAMES = x.HYPERCALLS
_NOT_IMPLEMENTED = -x.ENOSYS


class XenHypervisor:
    def __init__(self, machine: "Machine", *, memory_map: "list[MemoryRange]", features: int,
                 console_page: int | None = None, store_page: int | None = None,
                 domid: int = 1, capabilities: str = "hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64",
                 console_io: bool = True, debug_build: bool = False):
        self.m = machine
        self.console_io_allowed = console_io      # False: not the console domain (-EPERM, as Xen's XSM)
        # A debug build of Xen (CONFIG_VERBOSE_DEBUG): the dummy XSM lets any domain write with
        # console_io (reading stays the console domain's), as XTF's output relies on.
        self.debug_build = debug_build
        self.store = None                         # a XenStore answering the store ring, if any
        self.memory_map = list(memory_map)
        self.features = features
        self.domid = domid
        self.capabilities = capabilities
        self.nr_pages = sum(r.size for r in memory_map if r.type == 1) // PAGE
        self.max_gpfn = max(r.end for r in memory_map) // PAGE - 1
        self.console_io_sink = ConsoleSink(machine, "xen")
        machine.add_sink(self.console_io_sink)
        self.params: dict[int, int] = {}
        self.events = ev.EventChannels(machine.memory, machine.config.smp, domid=domid, notify=self._upcall)
        # How an event reaches a vCPU whose evtchn_upcall_pending rose (the environment sets it: a
        # vector at the local APIC for PVH, a bounce frame for PV); None: recorded, not delivered.
        self.deliver_upcall: Callable[[int], bool] | None = None
        # Whether a blocked vCPU has something to wake for (Xen's local_events_need_delivery);
        # PVH replaces it with "an interrupt is pending at the vCPU".
        self.wakeup_pending: Callable[[], bool] = self._pv_events_pending
        self.undelivered_upcalls = 0
        self.runstate_area: dict[int, int] = {}     # vcpu -> guest-virtual vcpu_runstate_info
        self.blocked_ns = [0] * machine.config.smp
        self.timers = VcpuTimers(machine.clock, machine.config.smp, self._timer_fired)
        self.console: ConsoleRing | None = None
        if store_page is not None:
            machine.memory.fill(store_page, PAGE)
            self.params[x.HVM_PARAM_STORE_PFN] = store_page // PAGE
            self.params[x.HVM_PARAM_STORE_EVTCHN] = self.events.bind_backend("xenstore", self._store_notified)
        if console_page is not None:
            self.console = ConsoleRing(machine, console_page)
            self.params[x.HVM_PARAM_CONSOLE_PFN] = console_page // PAGE
            self.params[x.HVM_PARAM_CONSOLE_EVTCHN] = self.events.bind_backend("console", self._drain)
        self.shared_info: int | None = None          # guest-physical address, once placed
        self.wallclock = (WALLCLOCK_EPOCH_S, 0)       # (s, ns) at system time 0 (common/time.c wc_sec/wc_nsec)
        self.vcpu_info: dict[int, int] = {}          # vcpu -> guest-physical address
        self.upcall_vectors: dict[int, int] = {}
        self.shutdown_code: int | None = None
        self.calls = 0
        self.compat = False                           # the current call comes from 32-bit mode
        self._after_call: Callable[[], None] | None = None   # runs once the call is recorded
        self.depth = 0                                # nesting: multicall dispatches its entries
        self.continuation: tuple[int, ...] | None = None    # set when the last call must be re-entered
        # The domain's grant table; a PV environment replaces it with one whose frames Xen allocates
        # (``GrantTable(..., allocate=...)``), an auto-translated guest places them with add_to_physmap.
        self.grants = GrantTable(machine.memory)
        self.handlers: dict[int, Handler] = {
            18: self.console_io, 29: self.sched_op, 17: self.xen_version, 12: self.memory_op,
            34: self.hvm_op, 24: self.vcpu_op, 32: self.event_channel_op, 20: self.grant_table_op,
            15: self.set_timer_op, 35: self.sysctl, 36: self.domctl,
        }

    @property
    def preemptible(self) -> bool:
        """A handler may raise ``Continuation``: a call made directly, or an entry of a multicall
        (the multicall then continues from that entry, with the entry's arguments updated)."""
        return self.depth <= 2

    def register(self, nr: int, handler: Handler) -> None:
        """Answer hypercall ``nr`` with ``handler(args, info) -> result`` (an environment's own calls)."""
        self.handlers[nr] = handler

    def unregister(self, nr: int) -> None:
        """Hypercall ``nr`` is not part of this environment's ABI: it gets -ENOSYS."""
        self.handlers.pop(nr, None)

    # -- dispatch ------------------------------------------------------------------------------
    def dispatch(self, nr: int, args: tuple[int, ...], rip: int | None = None, *, compat: bool = False,
                 deny: "HypercallError | None" = None) -> int:
        """Answer hypercall ``nr`` with ``args`` (5 register values); returns the value for RAX.
        When the handler did part of the work (``Continuation``), ``self.continuation`` holds the
        arguments to re-enter it with and the caller must make the guest re-execute the call.

        ``compat``: the caller is in 32-bit mode, so structures have their 32-bit layouts (Xen's
        compat translation).  ``deny``: refuse the call with that error (e.g. -EPERM from CPL > 0),
        still recording it."""
        self.calls += 1
        self.compat = compat
        depth = self.depth = self.depth + 1
        if depth == 1:
            self.continuation = None
        name = _NAMES.get(nr) or f"hypercall_{nr}"
        info: dict = {}
        handler = self.handlers.get(nr)
        try:
            if deny is not None:
                info["args"] = [hex(a) for a in args]
                raise deny
            if handler is None:
                raise HypercallError(x.ENOSYS, "not implemented")
            result = handler(args, info)
        except GuestMemoryError as exc:
            info["fault"] = str(exc)
            info.setdefault("args", [hex(a) for a in args])
            result = -x.EFAULT
        except HypercallError as exc:
            if str(exc):
                info["why"] = str(exc)
            result = -exc.errno
        except Continuation as cont:
            info["continued"] = True
            self.continuation = cont.resume_args
            result = 0
        finally:
            self.depth -= 1
        op = info.pop("op", None)
        if (op is None or op.startswith("cmd_")) and args:
            op = x.sub_op_name(name, args[0]) or op       # a sub-operation hvsim does not answer: named
        if handler is None or (result == _NOT_IMPLEMENTED and op is None):
            info.setdefault("args", [hex(a) for a in args])
        m = self.m
        # positional: the record is built on every hypercall
        m.emit(Call(INTERFACE, f"{name}.{op}" if op else name, info, result, rip, seq=m.next_seq()))
        if self._after_call is not None:
            after, self._after_call = self._after_call, None
            after()
        return result

    def write_memory_map(self, arg: int, entries: "list[tuple[int, int, int]]", info) -> int:
        """Answer a struct xen_memory_map at ``arg`` with E820 ``entries`` (start, size, type), as
        many as its capacity takes."""
        capacity, buffer = self.unpack(x.MEMORY_MAP_COMPAT_FORMAT if self.compat else x.MEMORY_MAP_FORMAT, arg)
        n = min(capacity, len(entries))
        info.update(capacity=capacity, entries=n)
        self.write(buffer, b"".join(struct.pack(x.E820_ENTRY_FORMAT, *e) for e in entries[:n]))
        self.write(arg, struct.pack("<I", n))
        return 0

    # -- sysctl and domctl: the toolstack's ---------------------------------------------------------
    def sysctl(self, a, info) -> int:
        """common/sysctl.c do_sysctl: a struct of another interface version is -EACCES (how a
        caller finds the version), then the dummy XSM's XSM_PRIV: -EPERM unless the caller is the
        control domain; hvsim implements no sysctl for it (-ENOSYS)."""
        cmd, version = self.unpack("<II", a[0])
        info.update(op=f"cmd_{cmd}", interface_version=version)
        if version != x.XEN_SYSCTL_INTERFACE_VERSION:
            raise HypercallError(x.EACCES, f"interface version {version:#x} (this Xen's is "
                                           f"{x.XEN_SYSCTL_INTERFACE_VERSION:#x})")
        if not self.control_domain:
            raise HypercallError(x.EPERM, "sysctl is the control domain's (XSM_PRIV)")
        raise HypercallError(x.ENOSYS, "not implemented")

    def domctl(self, a, info) -> int:
        """common/domctl.c do_domctl: the interface version (-EACCES), the target domain (-ESRCH
        for one that does not exist: this domain or dom0 do), then XSM_PRIV (-EPERM unless the
        caller is the control domain); hvsim implements no domctl for it (-ENOSYS)."""
        cmd, version, domain = self.unpack("<IIH", a[0])
        info.update(op=f"cmd_{cmd}", interface_version=version, domain=domain)
        if version != x.XEN_DOMCTL_INTERFACE_VERSION:
            raise HypercallError(x.EACCES, f"interface version {version:#x} (this Xen's is "
                                           f"{x.XEN_DOMCTL_INTERFACE_VERSION:#x})")
        if domain not in (self.domid, 0):
            raise HypercallError(x.ESRCH, f"no domain {domain}")
        if not self.control_domain:
            raise HypercallError(x.EPERM, "domctl is the control domain's (XSM_PRIV)")
        raise HypercallError(x.ENOSYS, "not implemented")

    @property
    def control_domain(self) -> bool:
        return self.domid == 0

    # -- guest memory ------------------------------------------------------------------------
    def read(self, address: int, size: int) -> bytes:
        return self.m.vmem.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        self.m.vmem.write(address, data)

    def unpack(self, fmt: str, address: int) -> tuple:
        return struct.unpack(fmt, self.read(address, struct.calcsize(fmt)))

    # -- console_io ----------------------------------------------------------------------------
    def console_io(self, a, info) -> int:
        cmd, count, buf = a[0], a[1] & 0xFFFF_FFFF, a[2]
        if not self.console_io_allowed and not (self.debug_build and cmd == x.CONSOLEIO_WRITE):
            info["op"] = {x.CONSOLEIO_WRITE: "write", x.CONSOLEIO_READ: "read"}.get(cmd, f"cmd_{cmd}")
            raise HypercallError(x.EPERM, "the domain is not the console domain"
                                          + ("" if self.debug_build else " (a debug build of Xen, --xen-debug, "
                                                                         "lets it write)"))
        if cmd == x.CONSOLEIO_WRITE:
            info.update(op="write", count=count)
            if count > MAX_CONSOLE_WRITE:
                raise HypercallError(x.EINVAL, f"count {count} exceeds {MAX_CONSOLE_WRITE}")
            self.console_io_sink.put(self.read(buf, count))
            return 0
        if cmd == x.CONSOLEIO_READ:
            info.update(op="read", count=count)
            return 0
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    # -- sched_op ------------------------------------------------------------------------------
    def sched_op(self, a, info) -> int:
        cmd, arg = a[0], a[1]
        if cmd == x.SCHEDOP_YIELD:
            info["op"] = "yield"
            self._drain()
            return 0
        if cmd == x.SCHEDOP_BLOCK:
            info["op"] = "block"
            self._drain()
            self.events.set_upcall_mask(0, False)       # vcpu_block_enable_events
            started = self.m.clock.now()
            woke = self._wait(self.wakeup_pending)
            if self.m.run_ending:
                info["cut_short"] = "the run is ending (interrupted, or its wall-clock budget is spent)"
            elif not woke:
                self.m.stop(StopReason("idle", detail="SCHEDOP_block with no event that can wake the vCPU"))
            elif self.deliver_upcall is None and not self.m.run_ending:
                # woken, but nothing would ever run the guest's handler: it would block again at once
                self.m.stop(StopReason("idle", detail="SCHEDOP_block woken by an event that no upcall route "
                                                      "delivers (PV event callbacks are not modelled)"))
            info["blocked_ns"] = self.m.clock.now() - started
            self.blocked_ns[0] += info["blocked_ns"]
            return 0
        if cmd == x.SCHEDOP_POLL:
            info["op"] = "poll"
            fmt = SCHED_POLL_COMPAT_FORMAT if self.compat else SCHED_POLL_FORMAT
            fields = self.unpack(fmt, arg)
            ports_at, nr_ports, timeout = fields[0], fields[1], fields[-1]
            info.update(nr_ports=nr_ports, timeout=timeout)
            if nr_ports > 128:                        # sched.c: nr_ports > 128 is -EINVAL
                raise HypercallError(x.EINVAL, f"{nr_ports} ports")
            ports = struct.unpack(f"<{nr_ports}I", self.read(ports_at, 4 * nr_ports)) if nr_ports else ()
            if any(not 0 <= p < ev.NR_EVENT_CHANNELS for p in ports):
                raise HypercallError(x.EINVAL, "a port out of range")
            self._drain()
            started = self.m.clock.now()
            woke = self._wait(lambda: any(self.events.is_pending(p) for p in ports) or self.wakeup_pending(),
                              timeout if timeout else None)
            if self.m.run_ending:
                info["cut_short"] = "the run is ending (interrupted, or its wall-clock budget is spent)"
            elif not woke:
                self.m.stop(StopReason("idle", detail="SCHEDOP_poll with no event that can wake the vCPU"))
            info["blocked_ns"] = self.m.clock.now() - started
            self.blocked_ns[0] += info["blocked_ns"]
            return 0
        if cmd in (x.SCHEDOP_SHUTDOWN, x.SCHEDOP_SHUTDOWN_CODE):
            info["op"] = "shutdown" if cmd == x.SCHEDOP_SHUTDOWN else "shutdown_code"
            (reason,) = self.unpack("<I", arg)
            name = x.SHUTDOWN_REASONS.get(reason, f"reason_{reason}")
            info["reason"] = name
            if cmd == x.SCHEDOP_SHUTDOWN_CODE:
                self.shutdown_code = reason
                return 0
            if name in ("suspend", "soft_reset") or reason not in x.SHUTDOWN_REASONS:
                raise HypercallError(x.EINVAL, f"shutdown reason {name} is not supported")
            self._drain()
            self._after_call = lambda: self.m.shutdown(Shutdown(reason=name, source="SCHEDOP_shutdown"))
            return 0
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    # -- xen_version ---------------------------------------------------------------------------
    def xen_version(self, a, info) -> int:
        cmd, arg = a[0], a[1]
        if cmd == x.XENVER_VERSION:          # the most frequent call (a guest's version check)
            info["op"] = "version"
            return XEN_VERSION[0] << 16 | XEN_VERSION[1]
        strings = {
            x.XENVER_EXTRAVERSION: ("extraversion", EXTRAVERSION, x.XEN_EXTRAVERSION_LEN),
            x.XENVER_CAPABILITIES: ("capabilities", self.capabilities.encode(), x.XEN_CAPABILITIES_INFO_LEN),
            x.XENVER_CHANGESET: ("changeset", b"hvsim", x.XEN_CHANGESET_INFO_LEN),
            x.XENVER_COMMANDLINE: ("commandline", b"", x.XEN_COMMANDLINE_LEN),
        }
        if cmd in strings:
            op, text, size = strings[cmd]
            info["op"] = op
            self.write(arg, text.ljust(size, b"\0")[:size])
            return 0
        if cmd == x.XENVER_COMPILE_INFO:
            info["op"] = "compile_info"
            self.write(arg, b"hvsim".ljust(64, b"\0") + b"hvsim".ljust(16, b"\0") + b"".ljust(64, b"\0"))
            return 0
        if cmd == x.XENVER_PAGESIZE:
            info["op"] = "pagesize"
            return PAGE
        if cmd == x.XENVER_GET_FEATURES:
            info["op"] = "get_features"
            (index,) = self.unpack("<I", arg)
            submap = self.features if index == 0 else 0
            info.update(submap_idx=index, submap=submap)
            self.write(arg + 4, struct.pack("<I", submap))
            return 0
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    # -- memory_op -----------------------------------------------------------------------------
    def memory_op(self, a, info) -> int:
        cmd, arg = a[0] & x.MEMOP_CMD_MASK, a[1]     # the bits above carry a continuation start extent
        if cmd == x.XENMEM_memory_map:
            info["op"] = "memory_map"
            return self.write_memory_map(arg, [(r.start, r.size, int(r.type)) for r in self.memory_map], info)
        if cmd in (x.XENMEM_current_reservation, x.XENMEM_maximum_reservation):
            info["op"] = "current_reservation" if cmd == x.XENMEM_current_reservation else "maximum_reservation"
            (domid,) = self.unpack("<H", arg)
            if domid not in (x.DOMID_SELF, self.domid):
                raise HypercallError(x.ESRCH, f"domain {domid:#x}")
            return self.nr_pages
        if cmd == x.XENMEM_maximum_gpfn:
            info["op"] = "maximum_gpfn"
            return self.max_gpfn
        if cmd == x.XENMEM_add_to_physmap:
            info["op"] = "add_to_physmap"
            fmt = x.ADD_TO_PHYSMAP_COMPAT_FORMAT if self.compat else x.ADD_TO_PHYSMAP_FORMAT
            domid, _size, space, idx, gpfn = self.unpack(fmt, arg)
            info.update(space=space, idx=idx, gpfn=gpfn)
            if domid not in (x.DOMID_SELF, self.domid):
                raise HypercallError(x.ESRCH, f"domain {domid:#x}")
            if space == x.XENMAPSPACE_shared_info:
                if idx != 0:
                    raise HypercallError(x.EINVAL, f"shared_info index {idx}")
                self.back_gpfn(gpfn)
                self.place_shared_info(gpfn * PAGE)
                return 0
            if space == x.XENMAPSPACE_grant_table:
                if idx & ~x.XENMAPIDX_grant_table_status >= self.grants.max_frames:
                    raise HypercallError(x.EINVAL, f"grant frame {idx & ~x.XENMAPIDX_grant_table_status} beyond "
                                                   f"the maximum {self.grants.max_frames}")
                try:
                    info["frame"] = self.grants.place(idx, gpfn * PAGE, lambda: self.back_gpfn(gpfn))
                except GrantError as exc:
                    raise HypercallError(exc.errno, str(exc)) from None
                return 0
            raise HypercallError(x.ENOSYS, f"map space {space}")
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    def back_gpfn(self, gpfn: int) -> None:
        """Let guest frame ``gpfn`` hold a page Xen maps there (add_to_physmap): a frame of RAM is
        reused; a frame in a hole of the memory map gets a page of its own, as Xen's p2m takes an
        entry at any gfn below the guest's physical address width.  A frame that is a device's
        MMIO window (the local APIC, the I/O APIC) or beyond that width is refused (-EINVAL)."""
        address = gpfn * PAGE
        if self.m.memory.contains(address, PAGE):
            return
        bits = self.m.native_cpuid(0x8000_0008, 0)[0] & 0xFF or 36     # CPUID: physical address bits
        if address + PAGE > 1 << bits:
            raise HypercallError(x.EINVAL, f"gpfn {gpfn:#x} is beyond the {bits}-bit physical address space")
        if any(begin <= address + PAGE - 1 and address <= end for begin, end, _ in self.m.uc.mem_regions()):
            raise HypercallError(x.EINVAL, f"gpfn {gpfn:#x} is a device's MMIO window")
        self.m.add_private_memory(address, PAGE)
        self.max_gpfn = max(self.max_gpfn, gpfn)

    def set_wallclock(self, secs: int, nsecs: int, system_time: int) -> None:
        """common/time.c do_settime: the wallclock was ``secs``.``nsecs`` at system time
        ``system_time`` (ns); shared_info's wallclock (its time at system time 0) follows."""
        at_zero = secs * 10**9 + nsecs - system_time
        self.wallclock = (at_zero // 10**9 & 0xFFFF_FFFF_FFFF_FFFF, at_zero % 10**9)
        if self.shared_info is not None:
            publish_wallclock(self.m.memory, self.shared_info, *self.wallclock)

    def place_shared_info(self, address: int) -> None:
        """shared_info now lives at guest-physical ``address``: zeroed (no event pending or
        masked), with each vCPU's upcall mask set until the guest clears it."""
        self.shared_info = address
        self.m.memory.fill(address, PAGE)
        for vcpu in range(min(self.m.config.smp, x.SHARED_INFO_VCPUS)):
            self.m.memory.write_u8(address + vcpu * x.VCPU_INFO_SIZE + x.VCPU_INFO_UPCALL_MASK, 1)
        publish_wallclock(self.m.memory, address, *self.wallclock)
        self.events.place_shared_info(address)
        self.publish_time()

    # -- hvm_op --------------------------------------------------------------------------------
    def hvm_op(self, a, info) -> int:
        cmd, arg = a[0], a[1]
        if cmd in (x.HVMOP_set_param, x.HVMOP_get_param):
            info["op"] = "set_param" if cmd == x.HVMOP_set_param else "get_param"
            domid, index, value = self.unpack(x.HVM_PARAM_FORMAT, arg)
            info["param"] = x.HVM_PARAM_NAMES.get(index, str(index))
            if domid not in (x.DOMID_SELF, self.domid):
                raise HypercallError(x.ESRCH, f"domain {domid:#x}")
            if index >= x.HVM_NR_PARAMS:
                raise HypercallError(x.EINVAL, f"parameter {index}")
            if cmd == x.HVMOP_set_param:
                info["value"] = value
                self.params[index] = value
                if index == x.HVM_PARAM_CALLBACK_IRQ:
                    info["callback"] = self._callback_via_name(value)
                    self._reassert(0)
                return 0
            value = self.params.get(index, 0)
            info["value"] = value
            self.write(arg + 8, struct.pack("<Q", value))
            return 0
        if cmd == x.HVMOP_set_evtchn_upcall_vector:
            info["op"] = "set_evtchn_upcall_vector"
            vcpu, vector = self.unpack("<IB", arg)
            info.update(vcpu=vcpu, vector=vector)
            if vcpu >= self.m.config.smp or vector < 0x10:
                raise HypercallError(x.EINVAL)
            self.upcall_vectors[vcpu] = vector
            self._reassert(vcpu)
            return 0
        if cmd == x.HVMOP_flush_tlbs:
            info["op"] = "flush_tlbs"
            return 0
        if cmd == x.HVMOP_pagetable_dying:
            info["op"] = "pagetable_dying"
            raise HypercallError(x.ENOSYS)
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    @property
    def callback_vector(self) -> int | None:
        """The vector of HVM_PARAM_CALLBACK_IRQ when its type is "vector", else None."""
        value = self.params.get(x.HVM_PARAM_CALLBACK_IRQ, 0)
        if value >> HVM_PARAM_CALLBACK_TYPE_SHIFT != HVM_PARAM_CALLBACK_TYPE_VECTOR:
            return None
        return value & 0xFF

    @staticmethod
    def _callback_via_name(value: int) -> str:
        kind = value >> HVM_PARAM_CALLBACK_TYPE_SHIFT
        if value == 0:
            return "none"
        if kind == HVM_PARAM_CALLBACK_TYPE_VECTOR:
            return f"vector {value & 0xFF:#x}"
        if kind == HVM_PARAM_CALLBACK_TYPE_GSI:
            return f"gsi {value & 0xFFFF_FFFF}"
        if kind == HVM_PARAM_CALLBACK_TYPE_PCI_INTX:
            return "pci intx"
        return f"type {kind}"

    def _reassert(self, vcpu: int) -> None:
        """A new upcall route: an event already pending goes out through it (as Xen's
        hvm_set_callback_via and set_evtchn_upcall_vector re-assert the event interrupt)."""
        if self.events.upcall_pending(vcpu) and self.deliver_upcall is not None:
            self.deliver_upcall(vcpu)

    # -- vcpu_op -------------------------------------------------------------------------------
    def vcpu_op(self, a, info) -> int:
        cmd, vcpu, arg = a[0], a[1] & 0xFFFF_FFFF, a[2]
        if vcpu >= self.m.config.smp:
            info.update(op=f"cmd_{cmd}", vcpu=vcpu)
            raise HypercallError(x.ENOENT, f"vcpu {vcpu}")
        if cmd == x.VCPUOP_is_up:
            info.update(op="is_up", vcpu=vcpu)
            return 1 if vcpu == 0 else 0
        if cmd == x.VCPUOP_register_vcpu_info:
            info.update(op="register_vcpu_info", vcpu=vcpu)
            frame, offset, _ = self.unpack(x.REGISTER_VCPU_INFO_FORMAT, arg)
            info.update(frame=frame, offset=offset)
            address = frame * PAGE + offset
            if offset + x.VCPU_INFO_SIZE > PAGE or not self.m.memory.contains(address, x.VCPU_INFO_SIZE):
                raise HypercallError(x.EINVAL, f"vcpu_info at {address:#x}")
            old = self.vcpu_info.get(vcpu)
            if old is None and self.shared_info is not None and vcpu < x.SHARED_INFO_VCPUS:
                old = self.shared_info + vcpu * x.VCPU_INFO_SIZE
            content = self.m.memory.read(old, x.VCPU_INFO_SIZE) if old is not None else bytes(x.VCPU_INFO_SIZE)
            self.m.memory.write(address, content)
            self.vcpu_info[vcpu] = address
            self.events.vcpu_info[vcpu] = address
            self.publish_time(vcpu)
            return 0
        if cmd in (VCPUOP_set_singleshot_timer, VCPUOP_stop_singleshot_timer, VCPUOP_set_periodic_timer,
                   VCPUOP_stop_periodic_timer):
            info.update(op=VCPUOP_NAMES[cmd], vcpu=vcpu)
            self.publish_time(vcpu)
            if cmd == VCPUOP_set_singleshot_timer:
                timeout, flags = self.unpack("<QI", arg)
                info.update(timeout=timeout, flags=flags)
                if flags & VCPU_SSHOTTMR_future and timeout < self.m.clock.now():
                    raise HypercallError(ETIME, "the timeout is in the past")
                self.timers.set_singleshot(vcpu, timeout if timeout < 1 << 63 else self.m.clock.now())
            elif cmd == VCPUOP_stop_singleshot_timer:
                self.timers.stop_singleshot(vcpu)
            elif cmd == VCPUOP_set_periodic_timer:
                (period,) = self.unpack("<Q", arg)
                info["period"] = period
                if period < MIN_PERIOD_NS or period >= 1 << 62:
                    raise HypercallError(x.EINVAL, f"period {period} ns")
                self.timers.set_periodic(vcpu, period)
            else:
                self.timers.stop_periodic(vcpu)
            return 0
        if cmd == VCPUOP_register_runstate_memory_area:
            info.update(op=VCPUOP_NAMES[cmd], vcpu=vcpu)
            (address,) = self.unpack("<I" if self.compat else "<Q", arg)
            info["area"] = address
            self.runstate_area[vcpu] = address
            self.publish_runstate(vcpu)
            return 0
        info.update(op=VCPUOP_NAMES.get(cmd, f"cmd_{cmd}"), vcpu=vcpu)
        raise HypercallError(x.ENOSYS)

    def publish_runstate(self, vcpu: int) -> None:
        """Write ``struct vcpu_runstate_info`` to the registered area: the vCPU is running; its
        time in ``blocked`` is what SCHEDOP_block/poll waited, in ``running`` the rest (it is never
        runnable or offline: no steal time).  An area the guest unmapped is skipped, as Xen does."""
        address = self.runstate_area.get(vcpu)
        if address is None:
            return
        now = self.m.clock.now()
        blocked = self.blocked_ns[vcpu]
        area = struct.pack(RUNSTATE_FORMAT, RUNSTATE_running, now, now - blocked, 0, blocked, 0)
        try:
            self.write(address, area)
        except GuestMemoryError:
            pass

    # -- event_channel_op ----------------------------------------------------------------------
    def event_channel_op(self, a, info) -> int:
        cmd, arg = a[0], a[1]
        info["op"] = ev.EVTCHNOP_NAMES.get(cmd, f"cmd_{cmd}")
        events = self.events
        try:
            if cmd == ev.EVTCHNOP_alloc_unbound:
                dom, remote, _ = self.unpack(ev.ALLOC_UNBOUND_FORMAT, arg)
                info.update(remote_dom=remote)
                port = info["port"] = events.alloc_unbound(dom, remote)
                self.write(arg + 4, struct.pack("<I", port))
                return 0
            if cmd == ev.EVTCHNOP_bind_interdomain:
                remote, remote_port, _ = self.unpack(ev.BIND_INTERDOMAIN_FORMAT, arg)
                info.update(remote_dom=remote, remote_port=remote_port)
                port = info["port"] = events.bind_interdomain(remote, remote_port)
                self.write(arg + 8, struct.pack("<I", port))
                return 0
            if cmd == ev.EVTCHNOP_bind_virq:
                virq, vcpu, _ = self.unpack(ev.BIND_VIRQ_FORMAT, arg)
                info.update(virq=virq, vcpu=vcpu)
                port = info["port"] = events.bind_virq(virq, vcpu)
                self.write(arg + 8, struct.pack("<I", port))
                return 0
            if cmd == ev.EVTCHNOP_bind_ipi:
                vcpu, _ = self.unpack(ev.BIND_IPI_FORMAT, arg)
                info.update(vcpu=vcpu)
                port = info["port"] = events.bind_ipi(vcpu)
                self.write(arg + 4, struct.pack("<I", port))
                return 0
            if cmd in (ev.EVTCHNOP_send, ev.EVTCHNOP_close, ev.EVTCHNOP_unmask):
                (port,) = self.unpack("<I", arg)
                channel = events.ports.get(port)
                info.update(port=port, channel=(channel.backend or channel.state) if channel else "free")
                if cmd == ev.EVTCHNOP_send:
                    answer = events.send(port)
                    if channel is not None and channel.backend is not None:
                        info["xenstore_requests" if channel.backend == "xenstore" else "drained"] = answer
                elif cmd == ev.EVTCHNOP_close:
                    events.close(port)
                else:
                    events.unmask(port)
                return 0
            if cmd == ev.EVTCHNOP_status:
                dom, port, *_ = self.unpack(ev.STATUS_FORMAT, arg)
                info.update(port=port)
                self.write(arg + 8, events.status(dom, port))
                return 0
            if cmd == ev.EVTCHNOP_bind_vcpu:
                port, vcpu = self.unpack(ev.BIND_VCPU_FORMAT, arg)
                info.update(port=port, vcpu=vcpu)
                events.bind_vcpu(port, vcpu)
                return 0
        except ev.EventError as exc:
            raise HypercallError(exc.errno, str(exc)) from None
        if cmd == ev.EVTCHNOP_init_control:
            raise HypercallError(x.ENOSYS, "no FIFO event channels: the 2-level ABI")
        raise HypercallError(x.ENOSYS)

    # -- event delivery and the vCPU's wait -----------------------------------------------------------
    def _upcall(self, vcpu: int) -> None:
        """evtchn_upcall_pending rose on ``vcpu``: the environment delivers the upcall."""
        self.publish_time(vcpu)
        if self.deliver_upcall is None or not self.deliver_upcall(vcpu):
            self.undelivered_upcalls += 1
            if self.undelivered_upcalls == 1:
                self.m.note(f"xen: an event is pending for vcpu {vcpu} but no upcall is registered "
                            "(HVM_PARAM_CALLBACK_IRQ, an upcall vector or a PV event callback): not delivered")

    def _pv_events_pending(self) -> bool:
        return self.events.upcall_pending(0) and not self.events.upcall_masked(0)

    def _wait(self, wake: Callable[[], bool], timeout_ns: int | None = None) -> bool:
        """The vCPU is descheduled until ``wake()`` (or guest time reaches ``timeout_ns``): guest time
        skips from event to event, running them, as an idle ``hlt`` does.  False when nothing can
        ever wake it (no event left, or none raises anything for MAX_BLOCK_NS).  A run that is
        ending (Ctrl-C, the wall-clock budget: ``machine.run_ending``) ends the wait at once: the
        call returns and the engine stops at the next block start, where the run loop says why."""
        clock = self.m.clock
        started = clock.now()
        deadline = clock.schedule(timeout_ns, lambda: None) if timeout_ns is not None else None
        try:
            while True:
                clock.run_due(lambda: self.m.run_ending)
                if wake() or (timeout_ns is not None and clock.now() >= timeout_ns) or self.m.run_ending:
                    return True
                if clock.now() - started > MAX_BLOCK_NS or not clock.skip_to_next():
                    return False
        finally:
            if deadline is not None:
                deadline.cancel()

    # -- Xen time --------------------------------------------------------------------------------------
    def publish_time(self, vcpu: int | None = None) -> None:
        """Bring ``vcpu_time_info`` up to date for ``vcpu`` (or every vCPU): system time is guest time,
        the TSC stamp what rdtsc returns at that moment."""
        vcpus = range(self.m.config.smp) if vcpu is None else (vcpu,)
        now = self.m.clock.now()
        tsc = now + getattr(self.m.native.control, "tsc_offset", 0)
        for v in vcpus:
            address = self.events.vcpu_info_address(v)
            if address is not None:
                publish_time(self.m.memory, address, system_time_ns=now, tsc=tsc & (2**64 - 1), ticks_per_s=TSC_HZ)
            self.publish_runstate(v)

    def _timer_fired(self, vcpu: int) -> None:
        self.publish_time(vcpu)
        self.events.raise_virq(ev.VIRQ_TIMER, vcpu)

    def set_timer_op(self, a, info) -> int:
        """set_timer_op(timeout): arm the single-shot timer at absolute system time ``timeout``
        (a 32-bit caller passes it in two registers); 0 stops it."""
        timeout = a[0] | a[1] << 32 if self.compat else a[0]
        info["timeout"] = timeout
        self.publish_time(0)
        if timeout == 0:
            self.timers.stop_singleshot(0)
        else:
            self.timers.set_singleshot(0, timeout if timeout < 1 << 63 else self.m.clock.now())
        return 0

    # -- grant_table_op ------------------------------------------------------------------------
    def grant_table_op(self, a, info) -> int:
        """grant_table_op(cmd, arg, count): the control of the domain's own table.  Each answered
        operation takes one structure (count 1, else -EINVAL as Xen's gnttab_* do for these) and
        reports its own failures in the structure's status (GNTST_*), the call returning 0."""
        cmd, arg, count = a[0], a[1], a[2] & 0xFFFF_FFFF
        info.update(op=x.GNTTABOP_NAMES.get(cmd, f"cmd_{cmd}"), count=count)
        table = self.grants
        if cmd in (x.GNTTABOP_map_grant_ref, x.GNTTABOP_unmap_grant_ref, x.GNTTABOP_copy,
                   x.GNTTABOP_transfer, x.GNTTABOP_unmap_and_replace, x.GNTTABOP_swap_grant_ref,
                   x.GNTTABOP_cache_flush, x.GNTTABOP_dump_table):
            raise HypercallError(x.ENOSYS, "no other domain shares grants with this one in hvsim: "
                                           "mapping, copying and transferring grants are not modelled")
        if cmd not in (x.GNTTABOP_query_size, x.GNTTABOP_setup_table, x.GNTTABOP_set_version,
                       x.GNTTABOP_get_version, x.GNTTABOP_get_status_frames):
            raise HypercallError(x.ENOSYS)
        if count != 1:
            raise HypercallError(x.EINVAL, f"count {count}: one structure per call")
        invalid = 0xFFFF_FFFF if self.compat else (1 << 64) - 1        # INVALID_GFN as xen_pfn_t
        if cmd == x.GNTTABOP_query_size:
            (dom,) = self.unpack("<H", arg)
            status = x.GNTST_okay if dom in (x.DOMID_SELF, self.domid) else x.GNTST_bad_domain
            self.write(arg, struct.pack(x.GNTTAB_QUERY_SIZE_FORMAT, dom, table.nr_frames, table.max_frames, status))
            info.update(nr_frames=table.nr_frames, status=status)
            return 0
        if cmd == x.GNTTABOP_setup_table:
            fmt = x.GNTTAB_SETUP_TABLE_COMPAT_FORMAT if self.compat else x.GNTTAB_SETUP_TABLE_FORMAT
            dom, nr_frames, _, frame_list = self.unpack(fmt, arg)
            info.update(nr_frames=nr_frames)
            status = x.GNTST_okay
            if dom not in (x.DOMID_SELF, self.domid):
                status = x.GNTST_bad_domain
            elif nr_frames > table.max_frames:
                status = x.GNTST_general_error
                info["why"] = f"{nr_frames} frames exceed the maximum {table.max_frames}"
            else:
                table.grow(nr_frames)
                frames = table.frame_numbers(False, nr_frames, invalid)
                info["frames"] = [hex(f) for f in frames]
                self.write(frame_list, struct.pack(f"<{nr_frames}{'I' if self.compat else 'Q'}",
                                                   *(f & invalid for f in frames)))
            info["status"] = status
            self.write(arg + x.GNTTAB_SETUP_TABLE_STATUS, struct.pack("<h", status))
            return 0
        if cmd == x.GNTTABOP_set_version:
            (version,) = self.unpack("<I", arg)
            info["version"] = version
            try:
                table.set_version(version)
            except GrantError as exc:
                raise HypercallError(exc.errno, str(exc)) from None
            self.write(arg, struct.pack("<I", table.version))
            return 0
        if cmd == x.GNTTABOP_get_version:
            dom, _ = self.unpack(x.GNTTAB_GET_VERSION_FORMAT, arg)
            if dom not in (x.DOMID_SELF, self.domid):
                raise HypercallError(x.ESRCH, f"domain {dom:#x}")
            info["version"] = table.version
            self.write(arg + 4, struct.pack("<I", table.version))
            return 0
        fmt = x.GNTTAB_GET_STATUS_FRAMES_COMPAT_FORMAT if self.compat else x.GNTTAB_GET_STATUS_FRAMES_FORMAT
        nr_frames, dom, _, frame_list = self.unpack(fmt, arg)
        info.update(nr_frames=nr_frames)
        status = x.GNTST_okay
        if dom not in (x.DOMID_SELF, self.domid):
            status = x.GNTST_bad_domain
        elif table.version != 2:
            status = x.GNTST_general_error
            info["why"] = f"status frames exist only in version 2 (the table is version {table.version})"
        elif nr_frames > table.nr_status_frames:
            status = x.GNTST_general_error
            info["why"] = f"{nr_frames} status frames asked, the table has {table.nr_status_frames}"
        else:
            frames = table.frame_numbers(True, nr_frames, (1 << 64) - 1)
            info["frames"] = [hex(f) for f in frames]
            self.write(frame_list, struct.pack(f"<{nr_frames}Q", *frames))
        info["status"] = status
        self.write(arg + x.GNTTAB_GET_STATUS_FRAMES_STATUS, struct.pack("<h", status))
        return 0

    # -- CPUID and the hypercall page ------------------------------------------------------------
    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int] | None:
        """The hypervisor leaves at 0x40000000 (arch-x86/cpuid.h), leaf 1 with the hypervisor bit
        set, and the leaves Xen empties or trims for every guest (cpu-policy.c recalculate_misc:
        MONITOR, thermal/power (ARAT), leaves 8 and 0xC, the extended topology, most of
        0x80000007 and 0x80000008's EDX), as Xen shows them; ``None`` for any other leaf."""
        base = x.CPUID_BASE
        if leaf == 1:
            eax, ebx, ecx, edx = self.m.native_cpuid(leaf, subleaf)
            return eax, ebx, ecx | LEAF1_ECX_HYPERVISOR, edx
        if leaf in GUEST_EMPTY_LEAVES:
            return 0, 0, 0, 0
        if leaf in (0x8000_0007, 0x8000_0008):
            eax, ebx, ecx, edx = self.m.native_cpuid(leaf, subleaf)
            return (0, 0, 0, edx) if leaf == 0x8000_0007 else (eax, ebx, ecx, 0)
        if not base <= leaf <= base + 0xFF:
            return None
        if leaf == base:
            b, c, d = struct.unpack("<3I", x.CPUID_SIGNATURE)
            return base + x.CPUID_LEAVES, b, c, d
        if leaf == base + 1:
            return XEN_VERSION[0] << 16 | XEN_VERSION[1], 0, 0, 0
        if leaf == base + 2:
            return 1, x.HYPERCALL_PAGE_MSR, 0, 0
        if leaf == base + 4:            # VCPU_ID_PRESENT | DOMID_PRESENT
            return (1 << 3) | (1 << 4), 0, self.domid, 0
        return 0, 0, 0, 0

    def hypercall_page(self, vendor_amd: bool) -> bytes:
        """Xen's HVM hypercall page: int3 fill, "mov $nr,%eax; vmcall|vmmcall; ret" every 32 bytes,
        ud2 for iret (hvm/vmx/vmx.c, hvm/svm/svm.c)."""
        insn = x.VMMCALL if vendor_amd else x.VMCALL
        page = bytearray(b"\xcc" * PAGE)
        for nr in range(PAGE // 32):
            stub = b"\x0f\x0b" if nr == x.HYPERCALL_IRET else b"\xb8" + struct.pack("<I", nr) + insn + b"\xc3"
            page[nr * 32:nr * 32 + len(stub)] = stub
        return bytes(page)

    def _store_notified(self) -> int:
        """The guest notified the xenstore channel: answer the ring, then notify it back."""
        if self.store is None:
            return 0
        answered = self.store.process()
        if answered:
            self.events.notify_guest("xenstore")
        return answered

    def _drain(self) -> int:
        return self.console.drain() if self.console is not None else 0
