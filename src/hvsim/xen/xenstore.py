"""A small xenstore behind a guest's store ring (io/xs_wire.h): enough that a guest reading its own
basic keys gets answers, not a hang.

Requests are answered when the guest notifies the store event channel, in order, each with a
response of the same type, request id and transaction id (or ``XS_ERROR`` with an errno name).
Answered: ``read``, ``directory``, ``write``, ``mkdir``, ``rm``, ``get_domain_path``,
``transaction_start``/``end`` (one transaction id, no isolation), ``watch``/``unwatch`` and
``reset_watches`` (accepted; no watch ever fires, since nothing else changes the store).  Any
other request gets ``ENOSYS``.  Relative paths are under ``/local/domain/<domid>``.

The tree at boot: ``name`` ("hvsim"), ``domid``, ``vm``, ``memory/target`` and
``memory/static-max`` (KiB of RAM), ``cpu/<n>/availability`` ("online"), ``console/ring-ref``
(the console mfn), ``console/port``, ``console/type`` ("xenconsoled"), empty ``device`` and
``control`` directories; ``/vm/<uuid>/name``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..abi import xen as x

if TYPE_CHECKING:
    from ..core.config import MachineConfig
    from ..core.machine import Machine

RING_MASK = x.XS_RING_SIZE - 1
UUID = "00000000-0000-4000-8000-000068767369"      # "hvsi" in the node field; fixed for reproducibility


class XenStore:
    def __init__(self, machine: "Machine", page: int, *, domid: int, config: "MachineConfig", memory_kib: int,
                 console: tuple[int, int] | None = None):
        self.m = machine
        self.page = page
        self.home = f"/local/domain/{domid}"
        self.requests = 0
        self._partial = bytearray()          # request bytes taken off the ring, not yet a whole message
        kib = str(memory_kib)
        self.tree: dict[str, str] = {"/vm/" + UUID + "/name": "hvsim"}
        for key, value in {"name": "hvsim", "domid": str(domid), "vm": "/vm/" + UUID, "memory/target": kib,
                           "memory/static-max": kib, "device": "", "control": ""}.items():
            self.tree[f"{self.home}/{key}"] = value
        for cpu in range(config.smp):
            self.tree[f"{self.home}/cpu/{cpu}/availability"] = "online"
        if console is not None:
            self.tree.update({f"{self.home}/console/ring-ref": str(console[0]),
                              f"{self.home}/console/port": str(console[1]),
                              f"{self.home}/console/type": "xenconsoled"})
        machine.memory.fill(page, 0x1000)

    # -- the ring ------------------------------------------------------------------------------------
    def process(self) -> int:
        """Take every byte the guest produced off the ring (as xenstored does: a message may arrive in
        pieces, and the guest notifies again only when it finds the ring drained), then answer every
        complete request; returns how many were answered.  A header announcing more than
        XENSTORE_PAYLOAD_MAX bytes, or indices further apart than the ring, discards what was read."""
        mem, page = self.m.memory, self.page
        cons, prod = mem.read_u32(page + x.XS_REQ_CONS), mem.read_u32(page + x.XS_REQ_PROD)
        avail = (prod - cons) & 0xFFFF_FFFF
        if avail > x.XS_RING_SIZE:
            self.m.note(f"xenstore: req_prod - req_cons = {avail} exceeds the ring; ignored")
            return 0
        if avail:
            self._partial += self._ring_read(cons, avail)
            mem.write_u32(page + x.XS_REQ_CONS, prod)
        answered = 0
        header_size = struct.calcsize(x.XS_MSG_HEADER_FORMAT)
        while len(self._partial) >= header_size:
            kind, req_id, tx_id, length = struct.unpack_from(x.XS_MSG_HEADER_FORMAT, self._partial)
            if length > x.XENSTORE_PAYLOAD_MAX:
                self.m.note(f"xenstore: a request of {length} bytes exceeds {x.XENSTORE_PAYLOAD_MAX}; discarded")
                self._partial.clear()
                break
            if len(self._partial) < header_size + length:
                break
            payload = bytes(self._partial[header_size:header_size + length])
            del self._partial[:header_size + length]
            rkind, body = self.answer(kind, payload)
            self._respond(rkind, req_id, tx_id, body)
            answered += 1
            self.requests += 1
        return answered

    def _ring_read(self, index: int, size: int) -> bytes:
        ring = self.m.memory.read(self.page + x.XS_RING_REQ, x.XS_RING_SIZE)
        start = index & RING_MASK
        return (ring[start:] + ring[:start])[:size]

    def _respond(self, kind: int, req_id: int, tx_id: int, body: bytes) -> None:
        message = struct.pack(x.XS_MSG_HEADER_FORMAT, kind, req_id, tx_id, len(body)) + body
        mem, page = self.m.memory, self.page
        prod = mem.read_u32(page + x.XS_RSP_PROD)
        for i, byte in enumerate(message):          # the guest consumes as we go; the ring is 1 KiB
            mem.write_u8(page + x.XS_RING_RSP + ((prod + i) & RING_MASK), byte)
        mem.write_u32(page + x.XS_RSP_PROD, (prod + len(message)) & 0xFFFF_FFFF)

    # -- the store -----------------------------------------------------------------------------------
    def _path(self, payload: bytes) -> str:
        path = payload.split(b"\0", 1)[0].decode("utf-8", "replace").rstrip("/")
        return path if path.startswith("/") else f"{self.home}/{path}"

    def _children(self, path: str) -> list[str]:
        prefix = path + "/"
        return sorted({key[len(prefix):].split("/", 1)[0] for key in self.tree if key.startswith(prefix)})

    def answer(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        def error(name: str) -> tuple[int, bytes]:
            return x.XS_ERROR, name.encode() + b"\0"

        ok = (kind, b"OK\0")
        if kind == x.XS_READ:
            path = self._path(payload)
            if path in self.tree:
                return kind, self.tree[path].encode()
            return (kind, b"") if self._children(path) else error("ENOENT")
        if kind == x.XS_DIRECTORY:
            path = self._path(payload)
            children = self._children(path)
            if not children and path not in self.tree:
                return error("ENOENT")
            return kind, b"".join(c.encode() + b"\0" for c in children)
        if kind == x.XS_WRITE:
            path_bytes, _, value = payload.partition(b"\0")
            self.tree[self._path(path_bytes)] = value.decode("utf-8", "replace")
            return ok
        if kind == x.XS_MKDIR:
            self.tree.setdefault(self._path(payload), "")
            return ok
        if kind == x.XS_RM:
            path = self._path(payload)
            for key in [k for k in self.tree if k == path or k.startswith(path + "/")]:
                del self.tree[key]
            return ok
        if kind == x.XS_GET_DOMAIN_PATH:
            return kind, self.home.encode() + b"\0"
        if kind == x.XS_TRANSACTION_START:
            return kind, b"1\0"
        if kind in (x.XS_TRANSACTION_END, x.XS_WATCH, x.XS_UNWATCH, x.XS_RESET_WATCHES):
            return ok
        return error("ENOSYS")
