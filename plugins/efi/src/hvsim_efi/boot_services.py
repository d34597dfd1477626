"""Boot services: memory, ExitBootServices, configuration tables, and the small utilities.

Statuses follow UEFI 2.10 §7.2-§7.5: a NULL out-pointer is EFI_INVALID_PARAMETER, an allocation
that does not fit is EFI_OUT_OF_RESOURCES (AnyPages) or EFI_NOT_FOUND (MaxAddress, Address), a
stale map key makes ExitBootServices fail with EFI_INVALID_PARAMETER.
"""

from __future__ import annotations

import zlib

from hvsim.abi import efi
from hvsim.core.result import StopReason

from .calls import EfiError, service
from .memory_map import DESCRIPTOR_SIZE

MAX_COPY = 1 << 30     # CopyMem/SetMem/CalculateCrc32 larger than this are refused as bad sizes


@service("BS", "RaiseTPL", "NewTpl")
def raise_tpl(ctx):
    """To TPL_HIGH_LEVEL (or above) from below it: interrupts off (UEFI 2.10 §7.1.8).  A NewTpl
    below the current one leaves the TPL where it is."""
    events = ctx.fw.events
    old, new = events.tpl, ctx.args["NewTpl"]
    events.tpl = max(old, new)
    if events.tpl >= efi.TPL_HIGH_LEVEL > old:
        ctx.fw.set_interrupts(False)
    ctx.record["result"] = f"old TPL {old}"
    ctx.m.set_reg("rax", old)
    return None


@service("BS", "RestoreTPL", "OldTpl")
def restore_tpl(ctx):
    """Below TPL_HIGH_LEVEL: interrupts on.  The notifications queued above the new TPL run
    before the call returns (the firmware's dispatch does it for every service)."""
    events = ctx.fw.events
    events.tpl = ctx.args["OldTpl"]
    ctx.fw.set_interrupts(events.tpl < efi.TPL_HIGH_LEVEL)
    ctx.record["result"] = "void"
    return None


@service("BS", "AllocatePages", "Type", "MemoryType", "Pages", "Memory")
def allocate_pages(ctx):
    out = ctx.pointer("Memory")
    a = ctx.args
    given = ctx.read_u64(out)          # a Memory pointer the caller cannot reach fails before allocating
    address = given if a["Type"] in (efi.ALLOCATE_MAX_ADDRESS, efi.ALLOCATE_ADDRESS) else 0
    start = ctx.fw.map.allocate(a["Type"], a["MemoryType"], a["Pages"], address)
    ctx.write_u64(out, start)
    ctx.record["address"] = start
    return efi.SUCCESS


@service("BS", "FreePages", "Memory", "Pages")
def free_pages(ctx):
    ctx.fw.map.free(ctx.args["Memory"], ctx.args["Pages"])
    return efi.SUCCESS


@service("BS", "GetMemoryMap", "MemoryMapSize", "MemoryMap", "MapKey", "DescriptorSize", "DescriptorVersion")
def get_memory_map(ctx):
    size_ptr = ctx.pointer("MemoryMapSize")
    a = ctx.args
    fw = ctx.fw
    needed = fw.map.size_needed()
    have = ctx.read_u64(size_ptr)
    ctx.write_u64(size_ptr, needed)
    if a["DescriptorSize"]:
        ctx.write_u64(a["DescriptorSize"], DESCRIPTOR_SIZE)
    if a["DescriptorVersion"]:
        ctx.write_u32(a["DescriptorVersion"], efi.MEMORY_DESCRIPTOR_VERSION)
    ctx.record["needed"] = needed
    if have < needed:
        return efi.BUFFER_TOO_SMALL
    buffer = ctx.pointer("MemoryMap")
    ctx.write(buffer, fw.map.pack())
    if a["MapKey"]:
        ctx.write_u64(a["MapKey"], fw.map.key)
    ctx.record["map_key"] = fw.map.key
    ctx.record["descriptors"] = needed // DESCRIPTOR_SIZE
    return efi.SUCCESS


@service("BS", "AllocatePool", "PoolType", "Size", "Buffer")
def allocate_pool(ctx):
    out = ctx.pointer("Buffer")
    if ctx.args["Size"] > (1 << 40):
        raise EfiError(efi.OUT_OF_RESOURCES, f"{ctx.args['Size']:#x} bytes")
    address = ctx.fw.pool.allocate(ctx.args["PoolType"], ctx.args["Size"])
    ctx.write_u64(out, address)
    ctx.record["address"] = address
    return efi.SUCCESS


@service("BS", "FreePool", "Buffer")
def free_pool(ctx):
    ctx.fw.pool.free(ctx.pointer("Buffer"))
    return efi.SUCCESS


@service("BS", "ExitBootServices", "ImageHandle", "MapKey")
def exit_boot_services(ctx):
    fw, a = ctx.fw, ctx.args
    if a["ImageHandle"] not in fw.images:
        raise EfiError(efi.INVALID_PARAMETER, f"{a['ImageHandle']:#x} is not an image handle")
    if a["MapKey"] != fw.map.key:
        raise EfiError(efi.INVALID_PARAMETER, f"stale map key (the map's key is {fw.map.key})")
    fw.exit_map = fw.map.descriptors()
    fw.boot_services_active = False
    fw.write_system_table()
    fw.stop_timer()                      # the tick stops, the IDT loses its gate, interrupts off
    fw.events.exit_boot_services()
    if fw.keys and fw.m.chipset is not None and fw.m.chipset.typing is not None:
        fw.m.chipset.typing.start(fw.keys)      # keys ConIn did not take: typed on the PS/2 keyboard
        fw.keys = []
    return efi.SUCCESS


@service("BS", "InstallConfigurationTable", "Guid", "Table")
def install_configuration_table(ctx):
    ctx.fw.install_config_table(ctx.guid("Guid"), ctx.args["Table"])
    return efi.SUCCESS


@service("BS", "GetNextMonotonicCount", "Count")
def get_next_monotonic_count(ctx):
    out = ctx.pointer("Count")
    ctx.fw.monotonic += 1
    ctx.write_u64(out, ctx.fw.monotonic)
    return efi.SUCCESS


MAX_STALL_NS = 3600 * 10**9      # as the run loop's idle limit: a longer Stall ends the run as idle


@service("BS", "Stall", "Microseconds")
def stall(ctx):
    """Lets the time pass as idle guest time (``GuestClock.advance``) instead of executing a busy
    loop for it: the devices' events it passes over (the PIT's, hence the tick) run as soon as it
    returns, so a timer due during the stall is signalled at the tick that follows it."""
    ns = ctx.args["Microseconds"] * 1000
    if ns > MAX_STALL_NS:
        ctx.m.stop(StopReason("idle", detail=f"EFI Stall of {ctx.args['Microseconds']} us: longer than the "
                                             f"{MAX_STALL_NS // 10**9} s of guest time this firmware lets pass"))
        return efi.SUCCESS
    ctx.m.clock.advance(ns)
    return efi.SUCCESS


@service("BS", "SetWatchdogTimer", "Timeout", "WatchdogCode", "DataSize", "WatchdogData")
def set_watchdog_timer(ctx):
    """The code is only logged on a timeout: edk2 (MdeModulePkg/Core/Dxe/Misc/SetWatchdogTimer.c) takes any
    code, and loaders (GRUB, Linux's stub, the shim) disable the timer with ``(0, 0, 0, NULL)``."""
    a = ctx.args
    if a["DataSize"] and not a["WatchdogData"]:
        raise EfiError(efi.INVALID_PARAMETER, "DataSize without WatchdogData")
    ctx.fw.events.watchdog(a["Timeout"])
    return efi.SUCCESS


@service("BS", "CopyMem", "Destination", "Source", "Length")
def copy_mem(ctx):
    a = ctx.args
    if a["Length"] > MAX_COPY:
        raise EfiError(efi.INVALID_PARAMETER, f"Length {a['Length']:#x}")
    ctx.copy(a["Destination"], a["Source"], a["Length"])
    ctx.record["result"] = "void"
    return None


@service("BS", "SetMem", "Buffer", "Size", "Value")
def set_mem(ctx):
    a = ctx.args
    if a["Size"] > MAX_COPY:
        raise EfiError(efi.INVALID_PARAMETER, f"Size {a['Size']:#x}")
    ctx.fill(a["Buffer"], a["Size"], a["Value"] & 0xFF)
    ctx.record["result"] = "void"
    return None


@service("BS", "CalculateCrc32", "Data", "DataSize", "Crc32")
def calculate_crc32(ctx):
    a = ctx.args
    data_ptr, out = ctx.pointer("Data"), ctx.pointer("Crc32")
    if a["DataSize"] == 0 or a["DataSize"] > MAX_COPY:
        raise EfiError(efi.INVALID_PARAMETER, f"DataSize {a['DataSize']:#x}")
    crc = 0
    for chunk in ctx.chunks(data_ptr, a["DataSize"]):
        crc = zlib.crc32(chunk, crc)
    ctx.write_u32(out, crc)
    ctx.record["crc32"] = f"{crc:08x}"
    return efi.SUCCESS


@service("BS", "ConnectController", "ControllerHandle", "DriverImageHandle", "RemainingDevicePath", "Recursive")
def connect_controller(ctx):
    if ctx.args["ControllerHandle"] not in ctx.fw.db.handles:
        raise EfiError(efi.INVALID_PARAMETER, "not a handle")
    raise EfiError(efi.NOT_FOUND, "no driver binding protocols are installed")


@service("BS", "DisconnectController", "ControllerHandle", "DriverImageHandle", "ChildHandle")
def disconnect_controller(ctx):
    if ctx.args["ControllerHandle"] not in ctx.fw.db.handles:
        raise EfiError(efi.INVALID_PARAMETER, "not a handle")
    return efi.SUCCESS      # no driver manages any controller: nothing to stop
