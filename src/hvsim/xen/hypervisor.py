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
- console_io: write (to channel ``xen``), read (no input: 0 bytes).
- sched_op: yield, block (ends the run as ``idle``: no event source is modelled yet),
  shutdown (poweroff, reboot, crash, watchdog; suspend is refused with -EINVAL), shutdown_code.
- xen_version: version (4.17), extraversion, capabilities, changeset, compile_info, pagesize,
  get_features (``features`` given by the environment), commandline (empty).
- memory_op: memory_map, maximum_reservation, current_reservation, maximum_gpfn,
  add_to_physmap for shared_info.
- hvm_op: get_param/set_param (console and store pfn and event channel, callback irq, and any
  other parameter as a stored value), set_evtchn_upcall_vector, flush_tlbs, pagetable_dying.
- vcpu_op: is_up, register_vcpu_info.
- event_channel_op: alloc_unbound, bind_virq, bind_ipi, send (drains the console ring when sent to
  the console's channel), close, unmask; init_control is -ENOSYS (the 2-level ABI).
- grant_table_op: query_size.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from ..abi import xen as x
from ..core.cpuid import LEAF1_ECX_HYPERVISOR
from ..core.devices import ConsoleSink
from ..core.errors import GuestMemoryError
from ..core.events import Call, Shutdown
from ..core.result import StopReason
from .console import ConsoleRing

if TYPE_CHECKING:
    from ..core.layout import MemoryRange
    from ..core.machine import Machine

XEN_VERSION = (4, 17)
EXTRAVERSION = b".0-hvsim"
PAGE = 0x1000
MAX_CONSOLE_WRITE = 1 << 16


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


class XenHypervisor:
    def __init__(self, machine: "Machine", *, memory_map: "list[MemoryRange]", features: int,
                 console_page: int | None = None, store_page: int | None = None,
                 domid: int = 1, capabilities: str = "hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64",
                 console_io: bool = True):
        self.m = machine
        self.console_io_allowed = console_io      # False: not the console domain (-EPERM, as Xen's XSM)
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
        self.next_port = 1
        self.ports: dict[int, str] = {}
        self.console: ConsoleRing | None = None
        if store_page is not None:
            machine.memory.fill(store_page, PAGE)
            self.params[x.HVM_PARAM_STORE_PFN] = store_page // PAGE
            self.params[x.HVM_PARAM_STORE_EVTCHN] = self._alloc_port("xenstore")
        if console_page is not None:
            self.console = ConsoleRing(machine, console_page)
            self.params[x.HVM_PARAM_CONSOLE_PFN] = console_page // PAGE
            self.params[x.HVM_PARAM_CONSOLE_EVTCHN] = self._alloc_port("console")
        self.shared_info: int | None = None          # guest-physical address, once placed
        self.vcpu_info: dict[int, int] = {}          # vcpu -> guest-physical address
        self.upcall_vectors: dict[int, int] = {}
        self.shutdown_code: int | None = None
        self.calls = 0
        self.compat = False                           # the current call comes from 32-bit mode
        self._after_call: Callable[[], None] | None = None   # runs once the call is recorded
        self.depth = 0                                # nesting: multicall dispatches its entries
        self.continuation: tuple[int, ...] | None = None    # set when the last call must be re-entered
        self.handlers: dict[int, Handler] = {
            18: self.console_io, 29: self.sched_op, 17: self.xen_version, 12: self.memory_op,
            34: self.hvm_op, 24: self.vcpu_op, 32: self.event_channel_op, 20: self.grant_table_op,
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
        self.depth += 1
        if self.depth == 1:
            self.continuation = None
        name = x.HYPERCALLS.get(nr, f"hypercall_{nr}")
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
        if handler is None or (result == -x.ENOSYS and op is None):
            info.setdefault("args", [hex(a) for a in args])
        self.m.emit(Call(interface="xen-hypercall", name=f"{name}.{op}" if op else name,
                         args=info, result=result, rip=rip))
        if self._after_call is not None:
            after, self._after_call = self._after_call, None
            after()
        return result

    # -- guest memory ------------------------------------------------------------------------
    def read(self, address: int, size: int) -> bytes:
        return self.m.vmem.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        self.m.vmem.write(address, data)

    def unpack(self, fmt: str, address: int) -> tuple:
        return struct.unpack(fmt, self.read(address, struct.calcsize(fmt)))

    def _alloc_port(self, what: str) -> int:
        if self.next_port >= x.NR_EVENT_CHANNELS_2L:
            raise HypercallError(x.ENOSPC, "no free event channel")
        port = self.next_port
        self.next_port += 1
        self.ports[port] = what
        return port

    # -- console_io ----------------------------------------------------------------------------
    def console_io(self, a, info) -> int:
        cmd, count, buf = a[0], a[1] & 0xFFFF_FFFF, a[2]
        if not self.console_io_allowed:
            info["op"] = {x.CONSOLEIO_WRITE: "write", x.CONSOLEIO_READ: "read"}.get(cmd, f"cmd_{cmd}")
            raise HypercallError(x.EPERM, "the domain is not the console domain")
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
            self.m.stop(StopReason("idle", detail="SCHEDOP_block with no event source modelled"))
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
        major, minor = XEN_VERSION
        strings = {
            x.XENVER_EXTRAVERSION: ("extraversion", EXTRAVERSION, x.XEN_EXTRAVERSION_LEN),
            x.XENVER_CAPABILITIES: ("capabilities", self.capabilities.encode(), x.XEN_CAPABILITIES_INFO_LEN),
            x.XENVER_CHANGESET: ("changeset", b"hvsim", x.XEN_CHANGESET_INFO_LEN),
            x.XENVER_COMMANDLINE: ("commandline", b"", x.XEN_COMMANDLINE_LEN),
        }
        if cmd == x.XENVER_VERSION:
            info["op"] = "version"
            return major << 16 | minor
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
        cmd, arg = a[0] & 0xF, a[1]          # bits above 4 carry a continuation start extent
        if cmd == x.XENMEM_memory_map:
            info["op"] = "memory_map"
            capacity, buffer = self.unpack(x.MEMORY_MAP_COMPAT_FORMAT if self.compat else x.MEMORY_MAP_FORMAT, arg)
            n = min(capacity, len(self.memory_map))
            info.update(capacity=capacity, entries=n)
            entries = b"".join(struct.pack(x.E820_ENTRY_FORMAT, r.start, r.size, int(r.type))
                               for r in self.memory_map[:n])
            self.write(buffer, entries)
            self.write(arg, struct.pack("<I", n))
            return 0
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
            if space != x.XENMAPSPACE_shared_info:
                raise HypercallError(x.ENOSYS, f"map space {space}")
            if idx != 0:
                raise HypercallError(x.EINVAL, f"shared_info index {idx}")
            if not self.m.memory.contains(gpfn * PAGE, PAGE):
                raise HypercallError(x.EINVAL, f"gpfn {gpfn:#x} is not guest memory")
            self.place_shared_info(gpfn * PAGE)
            return 0
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    def place_shared_info(self, address: int) -> None:
        """shared_info now lives at guest-physical ``address``: zeroed (no event pending or
        masked), with each vCPU's upcall mask set until the guest clears it."""
        self.shared_info = address
        self.m.memory.fill(address, PAGE)
        for vcpu in range(min(self.m.config.smp, x.SHARED_INFO_VCPUS)):
            self.m.memory.write_u8(address + vcpu * x.VCPU_INFO_SIZE + x.VCPU_INFO_UPCALL_MASK, 1)

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
            return 0
        if cmd == x.HVMOP_flush_tlbs:
            info["op"] = "flush_tlbs"
            return 0
        if cmd == x.HVMOP_pagetable_dying:
            info["op"] = "pagetable_dying"
            raise HypercallError(x.ENOSYS)
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

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
            return 0
        info.update(op=f"cmd_{cmd}", vcpu=vcpu)
        raise HypercallError(x.ENOSYS)

    # -- event_channel_op ----------------------------------------------------------------------
    def event_channel_op(self, a, info) -> int:
        cmd, arg = a[0], a[1]
        ops = {x.EVTCHNOP_alloc_unbound: "alloc_unbound", x.EVTCHNOP_bind_virq: "bind_virq",
               x.EVTCHNOP_bind_ipi: "bind_ipi", x.EVTCHNOP_send: "send", x.EVTCHNOP_close: "close",
               x.EVTCHNOP_unmask: "unmask", x.EVTCHNOP_init_control: "init_control"}
        info["op"] = ops.get(cmd, f"cmd_{cmd}")
        if cmd == x.EVTCHNOP_alloc_unbound:
            dom, remote = self.unpack("<HH", arg)
            port = self._alloc_port(f"unbound(remote {remote:#x})")
            info.update(remote_dom=remote, port=port)
            self.write(arg + 4, struct.pack("<I", port))
            return 0
        if cmd == x.EVTCHNOP_bind_virq:
            virq, vcpu = self.unpack("<II", arg)
            port = self._alloc_port(f"virq {virq}")
            info.update(virq=virq, vcpu=vcpu, port=port)
            self.write(arg + 8, struct.pack("<I", port))
            return 0
        if cmd == x.EVTCHNOP_bind_ipi:
            (vcpu,) = self.unpack("<I", arg)
            port = self._alloc_port(f"ipi vcpu {vcpu}")
            info.update(vcpu=vcpu, port=port)
            self.write(arg + 4, struct.pack("<I", port))
            return 0
        if cmd in (x.EVTCHNOP_send, x.EVTCHNOP_close, x.EVTCHNOP_unmask):
            (port,) = self.unpack("<I", arg)
            info.update(port=port, channel=self.ports.get(port, "unbound"))
            if port not in self.ports:
                raise HypercallError(x.EINVAL, f"port {port} is not bound")
            if cmd == x.EVTCHNOP_send and self.ports[port] == "console":
                info["drained"] = self._drain()
            if cmd == x.EVTCHNOP_send and self.ports[port] == "xenstore" and self.store is not None:
                info["xenstore_requests"] = self.store.process()
            if cmd == x.EVTCHNOP_close:
                del self.ports[port]
            return 0
        raise HypercallError(x.ENOSYS)

    # -- grant_table_op ------------------------------------------------------------------------
    def grant_table_op(self, a, info) -> int:
        cmd, arg, count = a[0], a[1], a[2]
        if cmd == x.GNTTABOP_query_size:
            info.update(op="query_size", count=count)
            (dom,) = self.unpack("<H", arg)
            status = 0 if dom in (x.DOMID_SELF, self.domid) else -x.ESRCH
            self.write(arg, struct.pack(x.GNTTAB_QUERY_SIZE_FORMAT, dom, 1, 32, status))
            return 0
        info["op"] = f"cmd_{cmd}"
        raise HypercallError(x.ENOSYS)

    # -- CPUID and the hypercall page ------------------------------------------------------------
    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int] | None:
        """The hypervisor leaves at 0x40000000 (arch-x86/cpuid.h) and leaf 1 with the hypervisor bit
        set, as Xen shows every guest; ``None`` for any other leaf."""
        base = x.CPUID_BASE
        if leaf == 1:
            eax, ebx, ecx, edx = self.m.native_cpuid(leaf, subleaf)
            return eax, ebx, ecx | LEAF1_ECX_HYPERVISOR, edx
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

    def _drain(self) -> int:
        return self.console.drain() if self.console is not None else 0
