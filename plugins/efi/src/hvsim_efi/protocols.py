"""Handles and the protocol database, device paths, and the boot services that search them.

A handle is the address of a small firmware-owned record (so it is a valid, unique pointer), with
an ordered set of (protocol GUID -> interface pointer).  Searches return handles in the order they
were created, as edk2's handle list does.
"""

from __future__ import annotations

import struct

from hvsim.abi import efi

from .calls import EfiError, service

HANDLE_RECORD = 16
DEVICE_PATH_LIMIT = 4096
VENDOR_HW_GUID = efi.guid_bytes("6e9b4f3e-7a5c-4c2f-9a1d-68767369d000")   # hvsim's boot device


class ProtocolDatabase:
    def __init__(self) -> None:
        self.handles: dict[int, dict[bytes, int]] = {}
        self.opens: dict[tuple[int, bytes], list[tuple[int, int, int]]] = {}

    def install(self, fw, handle: int, guid: bytes, interface: int) -> int:
        if handle == 0:
            handle = fw.alloc(efi.BOOT_SERVICES_DATA, HANDLE_RECORD, 16)
            self.handles[handle] = {}
        elif handle not in self.handles:
            raise EfiError(efi.INVALID_PARAMETER, f"{handle:#x} is not a handle")
        if guid in self.handles[handle]:
            raise EfiError(efi.INVALID_PARAMETER, f"{efi.guid_name(guid)} is already on handle {handle:#x}")
        self.handles[handle][guid] = interface
        return handle

    def uninstall(self, handle: int, guid: bytes, interface: int) -> None:
        protocols = self.handles.get(handle)
        if protocols is None or protocols.get(guid) != interface:
            raise EfiError(efi.NOT_FOUND, f"{efi.guid_name(guid)} with that interface is not on {handle:#x}")
        del protocols[guid]
        self.opens.pop((handle, guid), None)
        if not protocols:
            del self.handles[handle]

    def interface(self, handle: int, guid: bytes) -> int:
        protocols = self.handles.get(handle)
        if protocols is None:
            raise EfiError(efi.INVALID_PARAMETER, f"{handle:#x} is not a handle")
        if guid not in protocols:
            raise EfiError(efi.UNSUPPORTED, f"handle {handle:#x} does not support {efi.guid_name(guid)}")
        return protocols[guid]

    def with_protocol(self, guid: bytes | None) -> list[int]:
        return [h for h, protocols in self.handles.items() if guid is None or guid in protocols]


# -- device paths -----------------------------------------------------------------------------------
def device_path_node(kind: int, subtype: int, body: bytes) -> bytes:
    return struct.pack("<BBH", kind, subtype, 4 + len(body)) + body


def file_path(name: str) -> bytes:
    return device_path_node(efi.MEDIA_DEVICE_PATH, efi.MEDIA_FILEPATH_DP, (name + "\0").encode("utf-16-le"))


def read_device_path(ctx, address: int) -> bytes:
    """The nodes of a device path up to (not including) its End node."""
    out, cursor = bytearray(), address
    while len(out) < DEVICE_PATH_LIMIT:
        kind, subtype, length = struct.unpack("<BBH", ctx.read(cursor, 4))
        if kind == efi.END_DEVICE_PATH_TYPE and subtype == 0xFF:
            return bytes(out)
        if length < 4:
            raise EfiError(efi.INVALID_PARAMETER, f"device path node at {cursor:#x} has length {length}")
        out += ctx.read(cursor, length)
        cursor += length
    raise EfiError(efi.INVALID_PARAMETER, f"device path at {address:#x} has no end node")


def install_boot_device(fw) -> None:
    """The device the image was loaded from: a vendor hardware node, with the DEVICE_PATH protocol."""
    path = device_path_node(efi.HARDWARE_DEVICE_PATH, 0x04, VENDOR_HW_GUID) + efi.END_DEVICE_PATH
    fw.boot_device_path = path
    fw.boot_device = fw.db.install(fw, 0, efi.DEVICE_PATH_PROTOCOL_GUID, fw.put(efi.BOOT_SERVICES_DATA, path, 8))


# -- boot services over the database -------------------------------------------------------------------
@service("BS", "InstallProtocolInterface", "Handle", "Protocol", "InterfaceType", "Interface")
def install_protocol_interface(ctx):
    handle_ptr = ctx.pointer("Handle")
    guid = ctx.guid("Protocol")
    if ctx.args["InterfaceType"] != 0:
        raise EfiError(efi.INVALID_PARAMETER, "InterfaceType is not EFI_NATIVE_INTERFACE")
    handle = ctx.fw.db.install(ctx.fw, ctx.read_u64(handle_ptr), guid, ctx.args["Interface"])
    ctx.write_u64(handle_ptr, handle)
    ctx.record["handle"] = handle
    return efi.SUCCESS


@service("BS", "UninstallProtocolInterface", "Handle", "Protocol", "Interface")
def uninstall_protocol_interface(ctx):
    ctx.fw.db.uninstall(ctx.args["Handle"], ctx.guid("Protocol"), ctx.args["Interface"])
    return efi.SUCCESS


@service("BS", "ReinstallProtocolInterface", "Handle", "Protocol", "OldInterface", "NewInterface")
def reinstall_protocol_interface(ctx):
    a = ctx.args
    guid = ctx.guid("Protocol")
    protocols = ctx.fw.db.handles.get(a["Handle"])
    if protocols is None:
        raise EfiError(efi.INVALID_PARAMETER, f"{a['Handle']:#x} is not a handle")
    if protocols.get(guid) != a["OldInterface"]:
        raise EfiError(efi.NOT_FOUND, "OldInterface is not installed for that protocol on the handle")
    protocols[guid] = a["NewInterface"]
    return efi.SUCCESS


def _variadic_pairs(ctx, first: int):
    """(GUID*, interface) pairs from the variadic arguments, up to the NULL GUID pointer."""
    m, rsp = ctx.m, ctx.m.reg("rsp")
    regs = [ctx.m.reg("r10"), ctx.m.reg("r8"), ctx.m.reg("r9")]     # RDX is in R10 at the stub
    k = 0
    pairs = []
    while True:
        values = []
        for _ in range(2):
            index = first + k
            values.append(regs[index - 1] if index < 4 else ctx.read_u64(rsp + 0x28 + 8 * (index - 4)))
            k += 1
            if values[0] == 0:
                return pairs
        pairs.append((m.vmem.read(values[0], 16), values[1]))
        if len(pairs) > 64:
            raise EfiError(efi.INVALID_PARAMETER, "more than 64 protocol pairs (no NULL terminator?)")


@service("BS", "InstallMultipleProtocolInterfaces", "Handle")
def install_multiple(ctx):
    handle_ptr = ctx.pointer("Handle")
    pairs = _variadic_pairs(ctx, 1)
    ctx.record["protocols"] = [efi.guid_name(g) for g, _ in pairs]
    handle = ctx.read_u64(handle_ptr)
    if len({g for g, _ in pairs}) != len(pairs) or (handle and any(
            g in ctx.fw.db.handles.get(handle, {}) for g, _ in pairs)):
        raise EfiError(efi.ALREADY_STARTED, "a protocol is already installed on the handle")
    for guid, interface in pairs:
        handle = ctx.fw.db.install(ctx.fw, handle, guid, interface)
    ctx.write_u64(handle_ptr, handle)
    return efi.SUCCESS


@service("BS", "UninstallMultipleProtocolInterfaces", "Handle")
def uninstall_multiple(ctx):
    handle = ctx.args["Handle"]
    pairs = _variadic_pairs(ctx, 1)
    ctx.record["protocols"] = [efi.guid_name(g) for g, _ in pairs]
    protocols = ctx.fw.db.handles.get(handle, {})
    if any(protocols.get(g) != i for g, i in pairs):
        raise EfiError(efi.INVALID_PARAMETER, "a protocol of the list is not on the handle")
    for guid, interface in pairs:
        ctx.fw.db.uninstall(handle, guid, interface)
    return efi.SUCCESS


@service("BS", "HandleProtocol", "Handle", "Protocol", "Interface")
def handle_protocol(ctx):
    out = ctx.pointer("Interface")
    interface = ctx.fw.db.interface(ctx.args["Handle"], ctx.guid("Protocol"))
    ctx.write_u64(out, interface)
    return efi.SUCCESS


@service("BS", "OpenProtocol", "Handle", "Protocol", "Interface", "AgentHandle", "ControllerHandle", "Attributes")
def open_protocol(ctx):
    a = ctx.args
    attributes = a["Attributes"]
    if attributes not in (efi.OPEN_PROTOCOL_BY_HANDLE_PROTOCOL, efi.OPEN_PROTOCOL_GET_PROTOCOL,
                          efi.OPEN_PROTOCOL_TEST_PROTOCOL, efi.OPEN_PROTOCOL_BY_CHILD_CONTROLLER,
                          efi.OPEN_PROTOCOL_BY_DRIVER, efi.OPEN_PROTOCOL_EXCLUSIVE,
                          efi.OPEN_PROTOCOL_BY_DRIVER | efi.OPEN_PROTOCOL_EXCLUSIVE):
        raise EfiError(efi.INVALID_PARAMETER, f"Attributes {attributes:#x}")
    if attributes != efi.OPEN_PROTOCOL_TEST_PROTOCOL:
        ctx.pointer("Interface")
    guid = ctx.guid("Protocol")
    interface = ctx.fw.db.interface(a["Handle"], guid)
    if attributes != efi.OPEN_PROTOCOL_TEST_PROTOCOL:
        ctx.write_u64(a["Interface"], interface)
        ctx.fw.db.opens.setdefault((a["Handle"], guid), []).append(
            (a["AgentHandle"], a["ControllerHandle"], attributes))
    return efi.SUCCESS


@service("BS", "CloseProtocol", "Handle", "Protocol", "AgentHandle", "ControllerHandle")
def close_protocol(ctx):
    a = ctx.args
    guid = ctx.guid("Protocol")
    ctx.fw.db.interface(a["Handle"], guid)
    opens = ctx.fw.db.opens.get((a["Handle"], guid), [])
    match = [o for o in opens if o[0] == a["AgentHandle"] and o[1] == a["ControllerHandle"]]
    if not match:
        raise EfiError(efi.NOT_FOUND, "the protocol is not open by that agent and controller")
    for o in match:
        opens.remove(o)
    return efi.SUCCESS


@service("BS", "ProtocolsPerHandle", "Handle", "ProtocolBuffer", "ProtocolBufferCount")
def protocols_per_handle(ctx):
    buffer_ptr, count_ptr = ctx.pointer("ProtocolBuffer"), ctx.pointer("ProtocolBufferCount")
    protocols = ctx.fw.db.handles.get(ctx.args["Handle"])
    if protocols is None:
        raise EfiError(efi.INVALID_PARAMETER, "not a handle")
    array = ctx.fw.pool.allocate(efi.BOOT_SERVICES_DATA, 8 * len(protocols))
    guids = ctx.fw.pool.allocate(efi.BOOT_SERVICES_DATA, 16 * len(protocols))
    for i, guid in enumerate(protocols):
        ctx.write(guids + 16 * i, guid)
        ctx.write_u64(array + 8 * i, guids + 16 * i)
    ctx.write_u64(buffer_ptr, array)
    ctx.write_u64(count_ptr, len(protocols))
    return efi.SUCCESS


@service("BS", "LocateProtocol", "Protocol", "Registration", "Interface")
def locate_protocol(ctx):
    out = ctx.pointer("Interface")
    guid = ctx.guid("Protocol")
    handles = ctx.fw.db.with_protocol(guid)
    if not handles:
        ctx.write_u64(out, 0)
        raise EfiError(efi.NOT_FOUND)
    ctx.write_u64(out, ctx.fw.db.handles[handles[0]][guid])
    return efi.SUCCESS


def _search(ctx) -> list[int]:
    kind = ctx.args["SearchType"]
    if kind == efi.ALL_HANDLES:
        return ctx.fw.db.with_protocol(None)
    if kind == efi.BY_PROTOCOL:
        return ctx.fw.db.with_protocol(ctx.guid("Protocol"))
    if kind == efi.BY_REGISTER_NOTIFY:
        raise EfiError(efi.NOT_FOUND, "no protocol-notify registrations exist")
    raise EfiError(efi.INVALID_PARAMETER, f"SearchType {kind}")


@service("BS", "LocateHandle", "SearchType", "Protocol", "SearchKey", "BufferSize", "Buffer")
def locate_handle(ctx):
    size_ptr = ctx.pointer("BufferSize")
    handles = _search(ctx)
    if not handles:
        raise EfiError(efi.NOT_FOUND)
    needed, have = 8 * len(handles), ctx.read_u64(size_ptr)
    ctx.write_u64(size_ptr, needed)
    if have < needed:
        return efi.BUFFER_TOO_SMALL
    buffer = ctx.pointer("Buffer")
    ctx.write(buffer, b"".join(struct.pack("<Q", h) for h in handles))
    return efi.SUCCESS


@service("BS", "LocateHandleBuffer", "SearchType", "Protocol", "SearchKey", "NoHandles", "Buffer")
def locate_handle_buffer(ctx):
    count_ptr, buffer_ptr = ctx.pointer("NoHandles"), ctx.pointer("Buffer")
    handles = _search(ctx)
    if not handles:
        raise EfiError(efi.NOT_FOUND)
    array = ctx.fw.pool.allocate(efi.BOOT_SERVICES_DATA, 8 * len(handles))
    ctx.write(array, b"".join(struct.pack("<Q", h) for h in handles))
    ctx.write_u64(count_ptr, len(handles))
    ctx.write_u64(buffer_ptr, array)
    return efi.SUCCESS


@service("BS", "LocateDevicePath", "Protocol", "DevicePath", "Device")
def locate_device_path(ctx):
    path_ptr, device_ptr = ctx.pointer("DevicePath"), ctx.pointer("Device")
    guid = ctx.guid("Protocol")
    start = ctx.read_u64(path_ptr)
    if start == 0:
        raise EfiError(efi.INVALID_PARAMETER, "*DevicePath is NULL")
    wanted = read_device_path(ctx, start)
    best, best_len = None, -1
    for handle in ctx.fw.db.with_protocol(guid):
        path_iface = ctx.fw.db.handles[handle].get(efi.DEVICE_PATH_PROTOCOL_GUID)
        if path_iface is None:
            continue
        nodes = read_device_path(ctx, path_iface)
        if wanted.startswith(nodes) and len(nodes) > best_len:
            best, best_len = handle, len(nodes)
    if best is None:
        raise EfiError(efi.NOT_FOUND, "no handle with that protocol lies on the device path")
    ctx.write_u64(device_ptr, best)
    ctx.write_u64(path_ptr, start + best_len)
    ctx.record["device"] = best
    return efi.SUCCESS


@service("BS", "RegisterProtocolNotify", "Protocol", "Event", "Registration")
def register_protocol_notify(ctx):
    ctx.pointer("Registration")
    ctx.guid("Protocol")
    raise EfiError(efi.UNSUPPORTED, "protocol notifications are not provided by this firmware")
