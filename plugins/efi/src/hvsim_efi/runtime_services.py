"""Runtime services other than variables (UEFI 2.10 §8.3-§8.5): time, SetVirtualAddressMap,
ConvertPointer, the monotonic counter's high half, ResetSystem, and the capsule services this
platform does not have.

The clock is deterministic: 2026-01-01 00:00:00 UTC plus guest time plus whatever SetTime moved it.
"""

from __future__ import annotations

import datetime
import struct

from hvsim.abi import efi
from hvsim.core.clock import WALLCLOCK_EPOCH_S
from hvsim.core.events import Shutdown

from . import tables
from .calls import EfiError, service

EPOCH = WALLCLOCK_EPOCH_S
OPTIONAL_POINTER = 1


def _now(fw) -> datetime.datetime:
    seconds = fw.events.now() / 1e9 + fw.clock_offset
    return datetime.datetime.fromtimestamp(EPOCH + seconds, datetime.timezone.utc)


@service("RT", "GetTime", "Time", "Capabilities")
def get_time(ctx):
    out = ctx.pointer("Time")
    t = _now(ctx.fw)
    ctx.write(out, struct.pack(efi.TIME_FORMAT, t.year, t.month, t.day, t.hour, t.minute, t.second,
                               t.microsecond * 1000, efi.UNSPECIFIED_TIMEZONE, 0))
    if ctx.args["Capabilities"]:
        ctx.write(ctx.args["Capabilities"], struct.pack(efi.TIME_CAPABILITIES_FORMAT, 1, 50_000_000, False))
    ctx.record["time"] = t.strftime("%Y-%m-%d %H:%M:%S")
    return efi.SUCCESS


@service("RT", "SetTime", "Time")
def set_time(ctx):
    year, month, day, hour, minute, second, ns, zone, daylight = struct.unpack(
        efi.TIME_FORMAT, ctx.read(ctx.pointer("Time"), 16))
    try:
        wanted = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc)
    except ValueError as exc:
        raise EfiError(efi.INVALID_PARAMETER, f"time: {exc}") from None
    if not 1900 <= year <= 9999 or ns >= 1_000_000_000 or daylight & ~3 or not (
            -1440 <= zone <= 1440 or zone == efi.UNSPECIFIED_TIMEZONE):
        raise EfiError(efi.INVALID_PARAMETER, "a field is out of range")
    ctx.fw.clock_offset += (wanted - _now(ctx.fw)).total_seconds()
    ctx.record["time"] = wanted.strftime("%Y-%m-%d %H:%M:%S")
    return efi.SUCCESS


@service("RT", "GetWakeupTime", "Enabled", "Pending", "Time")
def get_wakeup_time(ctx):
    raise EfiError(efi.UNSUPPORTED, "this platform has no wakeup timer")


@service("RT", "SetWakeupTime", "Enable", "Time")
def set_wakeup_time(ctx):
    raise EfiError(efi.UNSUPPORTED, "this platform has no wakeup timer")


@service("RT", "SetVirtualAddressMap", "MemoryMapSize", "DescriptorSize", "DescriptorVersion", "VirtualMap")
def set_virtual_address_map(ctx):
    fw, a = ctx.fw, ctx.args
    if fw.boot_services_active or fw.virtual_mode:
        raise EfiError(efi.UNSUPPORTED, "only once, and only after ExitBootServices")
    if a["DescriptorSize"] < efi.MEMORY_DESCRIPTOR_SIZE or a["DescriptorVersion"] != efi.MEMORY_DESCRIPTOR_VERSION:
        raise EfiError(efi.INVALID_PARAMETER, "descriptor size or version")
    if a["MemoryMapSize"] % a["DescriptorSize"] or a["MemoryMapSize"] > (1 << 20):
        raise EfiError(efi.INVALID_PARAMETER, "MemoryMapSize")
    blob = ctx.read(ctx.pointer("VirtualMap"), a["MemoryMapSize"])
    mapping = []
    for offset in range(0, len(blob), a["DescriptorSize"]):
        kind, phys, virt, pages, attr = struct.unpack_from(efi.MEMORY_DESCRIPTOR_FORMAT, blob, offset)
        if attr & efi.MEMORY_RUNTIME:
            mapping.append((phys, phys + pages * 0x1000, virt))
    runtime = [r for r in fw.map.descriptors() if r.attribute & efi.MEMORY_RUNTIME]
    for r in runtime:
        if not any(p <= r.start and r.end <= e for p, e, _ in mapping):
            raise EfiError(efi.NO_MAPPING,
                           f"runtime range {r.start:#x}-{r.end:#x} has no virtual address")
    fw.virtual_map = mapping
    fw.virtual_mode = True
    fw.runtime_pointers_to_virtual()
    fw.events.virtual_address_change()
    ctx.record["ranges"] = len(mapping)
    return efi.SUCCESS


def to_virtual(fw, address: int) -> int | None:
    for phys, end, virt in fw.virtual_map or ():
        if phys <= address < end:
            return virt + (address - phys)
    return None


@service("RT", "ConvertPointer", "DebugDisposition", "Address")
def convert_pointer(ctx):
    out = ctx.pointer("Address")
    value = ctx.read_u64(out)
    if value == 0 and ctx.args["DebugDisposition"] & OPTIONAL_POINTER:
        return efi.SUCCESS
    converted = to_virtual(ctx.fw, value) if ctx.fw.virtual_map else None
    if converted is None:
        raise EfiError(efi.NOT_FOUND, f"{value:#x} is in no runtime range of the virtual map")
    ctx.write_u64(out, converted)
    return efi.SUCCESS


@service("RT", "GetNextHighMonotonicCount", "HighCount")
def get_next_high_monotonic_count(ctx):
    out = ctx.pointer("HighCount")
    ctx.fw.monotonic = ((ctx.fw.monotonic >> 32) + 1) << 32
    ctx.write_u32(out, ctx.fw.monotonic >> 32)
    return efi.SUCCESS


@service("RT", "ResetSystem", "ResetType", "ResetStatus", "DataSize", "ResetData")
def reset_system(ctx):
    kind = ctx.args["ResetType"]
    name = efi.RESET_TYPE_NAMES.get(kind, f"reset type {kind}")
    reason = "poweroff" if kind == efi.RESET_SHUTDOWN else "reboot"
    status = ctx.args["ResetStatus"]          # EFI_SUCCESS is the ordinary reset: no code, as an ACPI one
    event = Shutdown(reason=reason, source=f"EFI ResetSystem({name})", code=status or None)
    ctx.after_call = lambda: ctx.m.shutdown(event)
    ctx.record["result"] = f"run ends: {name}"
    return None


@service("RT", "UpdateCapsule", "CapsuleHeaderArray", "CapsuleCount", "ScatterGatherList")
def update_capsule(ctx):
    raise EfiError(efi.UNSUPPORTED, "this platform takes no capsules")


@service("RT", "QueryCapsuleCapabilities", "CapsuleHeaderArray", "CapsuleCount", "MaximumCapsuleSize", "ResetType")
def query_capsule_capabilities(ctx):
    raise EfiError(efi.UNSUPPORTED, "this platform takes no capsules")


def rewrite_runtime_table(fw, convert) -> None:
    """The runtime-services table with each service pointer passed through ``convert``."""
    stubs = [convert(fw.stubs[("RT", n)]) for n in efi.RUNTIME_SERVICES]
    fw.m.memory.write(fw.runtime_table, tables.service_table(
        efi.RUNTIME_SERVICES_SIGNATURE, efi.RUNTIME_SERVICES_FIRST_SLOT, stubs))
