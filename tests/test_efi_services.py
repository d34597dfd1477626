"""efi boot services (memory, ExitBootServices, protocols, images) driven by a scripted EFI
application (efi_apps.call_script), each asserted through the trace the firmware records and the
memory the guest sees.  Events, runtime services and consoles: test_efi_runtime.py."""

from __future__ import annotations

import struct
import zlib


from hvsim import MachineConfig
from hvsim.abi import efi

from efi_apps import (
    BS, BS_AT_ENTRY, IMAGE_HANDLE, RT, bs, efi_app, rt, scratch, scratch_value, script, u64,
    ucs2,
)

PAGE = 0x1000


# -- memory ------------------------------------------------------------------------------------------

def test_allocate_pages_any_max_address_and_address_then_free():
    data = struct.pack("<QQQ", 0, 0x800000, 0x3000000)       # [8]: MaxAddress limit, [16]: the address wanted
    prepared, result, traced, sym = script([
        (BS, bs("AllocatePages"), efi.ALLOCATE_ANY_PAGES, efi.LOADER_DATA, 3, scratch(0)),
        (BS, bs("AllocatePages"), efi.ALLOCATE_MAX_ADDRESS, efi.BOOT_SERVICES_DATA, 2, scratch(8)),
        (BS, bs("AllocatePages"), efi.ALLOCATE_ADDRESS, efi.LOADER_CODE, 4, scratch(16)),
        (BS, bs("AllocatePages"), efi.ALLOCATE_ADDRESS, efi.LOADER_CODE, 1, scratch(16)),   # taken now
        (BS, bs("FreePages"), scratch_value(16), 4),
        (BS, bs("FreePages"), scratch_value(16), 4),                                      # twice: not allocated
    ], data=data)
    assert [c.result for c in traced] == ["EFI_SUCCESS"] * 3 + ["EFI_NOT_FOUND", "EFI_SUCCESS", "EFI_NOT_FOUND"]
    anywhere, below, at = (u64(prepared, sym, o) for o in (0, 8, 16))
    assert anywhere % PAGE == 0 and anywhere + 3 * PAGE <= 1 << 32
    assert below + 2 * PAGE <= 0x800000 + 1
    assert at == 0x3000000
    final = prepared.machine.plugin_state["efi"].map
    assert final.type_at(anywhere) == efi.LOADER_DATA and final.type_at(below) == efi.BOOT_SERVICES_DATA
    assert final.type_at(at) == efi.CONVENTIONAL_MEMORY


def test_top_down_allocation_takes_the_highest_free_pages():
    prepared, _, traced, sym = script([
        (BS, bs("AllocatePages"), efi.ALLOCATE_ANY_PAGES, efi.LOADER_DATA, 1, scratch(0)),
        (BS, bs("AllocatePages"), efi.ALLOCATE_ANY_PAGES, efi.LOADER_DATA, 1, scratch(8)),
    ])
    first, second = u64(prepared, sym, 0), u64(prepared, sym, 8)
    assert second < first
    fw = prepared.machine.plugin_state["efi"]
    assert fw.map.find_for(efi.LOADER_DATA, 1, (1 << 32) - 1) < second     # the bins above are not its


def test_get_memory_map_buffer_too_small_protocol_and_a_key_that_changes_with_every_allocation():
    data = struct.pack("<Q", 0)
    prepared, result, traced, sym = script([
        (BS, bs("GetMemoryMap"), scratch(0), 0, scratch(8), scratch(16), scratch(24)),         # size 0 probe
        (BS, bs("GetMemoryMap"), scratch(0), scratch(0x1000), scratch(8), scratch(16), scratch(24)),
        (BS, bs("AllocatePool"), efi.ACPI_RECLAIM_MEMORY, 100, scratch(32)),
        (BS, bs("GetMemoryMap"), scratch(40), scratch(0x2000), scratch(48), scratch(16), scratch(24)),
    ], data=data + bytes(32) + struct.pack("<Q", 0x4000))
    probe, first, _, second = traced
    assert probe.result == "EFI_BUFFER_TOO_SMALL" and probe.args["needed"] > 0
    assert first.result == "EFI_SUCCESS"
    assert u64(prepared, sym, 16) == 48                                   # DescriptorSize, as edk2
    assert prepared.machine.memory.read_u32(sym["scratch"] + 24) == 1     # DescriptorVersion
    key1, key2 = u64(prepared, sym, 8), u64(prepared, sym, 48)
    assert key2 != key1
    # the map itself: 48-byte descriptors, sorted, and the ACPI reclaim pool shows as its own type
    size = u64(prepared, sym, 40)
    blob = prepared.machine.memory.read(sym["scratch"] + 0x2000, size)
    descriptors = [struct.unpack_from(efi.MEMORY_DESCRIPTOR_FORMAT, blob, o) for o in range(0, size, 48)]
    starts = [d[1] for d in descriptors]
    assert starts == sorted(starts)
    pool = u64(prepared, sym, 32)
    assert any(d[0] == efi.ACPI_RECLAIM_MEMORY and d[1] <= pool < d[1] + d[3] * PAGE for d in descriptors)


def test_pool_blocks_share_pages_and_are_freed():
    prepared, _, traced, sym = script([
        (BS, bs("AllocatePool"), efi.LOADER_DATA, 24, scratch(0)),
        (BS, bs("AllocatePool"), efi.LOADER_DATA, 24, scratch(8)),
        (BS, bs("FreePool"), scratch_value(0)),
        (BS, bs("FreePool"), scratch_value(0)),
        (BS, bs("FreePool"), scratch_value(8)),
    ])
    assert [c.result for c in traced] == ["EFI_SUCCESS"] * 3 + ["EFI_INVALID_PARAMETER", "EFI_SUCCESS"]
    a, b = u64(prepared, sym, 0), u64(prepared, sym, 8)
    assert a // PAGE == b // PAGE and abs(a - b) >= 24 and a % 8 == b % 8 == 0
    assert prepared.machine.plugin_state["efi"].map.type_at(a) == efi.CONVENTIONAL_MEMORY


def test_copy_set_mem_and_crc32():
    data = b"hello, firmware!"
    prepared, _, traced, sym = script([
        (BS, bs("CopyMem"), scratch(0x100), scratch(0), len(data)),
        (BS, bs("SetMem"), scratch(0x200), 5, 0x5A),
        (BS, bs("CalculateCrc32"), scratch(0), len(data), scratch(0x300)),
    ], data=data)
    memory = prepared.machine.memory
    assert memory.read(sym["scratch"] + 0x100, len(data)) == data
    assert memory.read(sym["scratch"] + 0x200, 6) == b"ZZZZZ\0"
    assert memory.read_u32(sym["scratch"] + 0x300) == zlib.crc32(data)


# -- ExitBootServices ----------------------------------------------------------------------------------

def test_exit_boot_services_checks_the_key_then_refuses_boot_services():
    prepared, result, traced, sym = script([
        (BS, bs("GetMemoryMap"), scratch(0), scratch(0x1000), scratch(8), scratch(16), scratch(24)),
        (BS, bs("AllocatePool"), efi.LOADER_DATA, 8, scratch(32)),                 # the key moves on
        (BS, bs("ExitBootServices"), IMAGE_HANDLE, scratch_value(8)),              # stale
        (BS, bs("GetMemoryMap"), scratch(56), scratch(0x1000), scratch(8), scratch(16), scratch(24)),
        (BS, bs("ExitBootServices"), IMAGE_HANDLE, scratch_value(8)),
        (BS_AT_ENTRY, bs("AllocatePool"), efi.LOADER_DATA, 8, scratch(40)),        # after: refused
        (RT, rt("GetTime"), scratch(0x40), 0),                                     # runtime still works
    ], data=struct.pack("<Q", 0x4000).ljust(56, b"\0") + struct.pack("<Q", 0x4000))
    results = [c.result for c in traced]
    assert results == ["EFI_SUCCESS", "EFI_SUCCESS", "EFI_INVALID_PARAMETER", "EFI_SUCCESS", "EFI_SUCCESS",
                       "EFI_UNSUPPORTED", "EFI_SUCCESS"]
    assert "ExitBootServices" in traced[5].args["error"]
    assert result.exit_status == 0
    # the system table no longer offers boot services or consoles, and its CRC is still right
    from hvsim_efi.tables import header_crc_ok
    fw = prepared.machine.plugin_state["efi"]
    st = prepared.machine.memory.read(fw.system_table, efi.SYSTEM_TABLE_SIZE)
    assert header_crc_ok(st)
    assert struct.unpack_from("<Q", st, efi.ST_BOOT_SERVICES)[0] == 0
    assert struct.unpack_from("<Q", st, efi.ST_CON_OUT)[0] == 0


# -- protocols -----------------------------------------------------------------------------------------

def test_loaded_image_has_image_base_size_and_the_command_line():
    data = efi.LOADED_IMAGE_PROTOCOL_GUID
    prepared, result, traced, sym = script([
        (BS, bs("HandleProtocol"), IMAGE_HANDLE, scratch(0), scratch(16)),
        (BS, bs("OpenProtocol"), IMAGE_HANDLE, scratch(0), scratch(24), IMAGE_HANDLE, 0,
         efi.OPEN_PROTOCOL_GET_PROTOCOL),
        (BS, bs("CloseProtocol"), IMAGE_HANDLE, scratch(0), IMAGE_HANDLE, 0),
        (BS, bs("CloseProtocol"), IMAGE_HANDLE, scratch(0), IMAGE_HANDLE, 0),
    ], data=data, config=MachineConfig(cmdline="root=/dev/sda1 ✓"))
    assert [c.result for c in traced] == ["EFI_SUCCESS", "EFI_SUCCESS", "EFI_SUCCESS", "EFI_NOT_FOUND"]
    memory = prepared.machine.memory
    loaded = u64(prepared, sym, 16)
    assert loaded == u64(prepared, sym, 24)
    fields = struct.unpack(efi.LOADED_IMAGE_FORMAT, memory.read(loaded, efi.LOADED_IMAGE_SIZE))
    revision, _parent, system_table, _device, _path, _res, options_size, options, base, size, code, data_type, _ = fields
    assert revision == 0x1000 and base == 0x10000000 and size % PAGE == 0 and size >= 0x2000
    assert (code, data_type) == (efi.LOADER_CODE, efi.LOADER_DATA)
    assert memory.read(options, options_size) == "root=/dev/sda1 ✓\0".encode("utf-16-le")


def test_install_locate_and_uninstall_protocols():
    guid = efi.guid_bytes("11111111-2222-3333-4444-555555555555")
    other = efi.guid_bytes("66666666-2222-3333-4444-555555555555")
    data = guid + other + bytes(16)
    prepared, result, traced, sym = script([
        (BS, bs("InstallProtocolInterface"), scratch(0x40), scratch(0), 0, 0xABC0),
        (BS, bs("LocateProtocol"), scratch(0), 0, scratch(0x48)),
        (BS, bs("LocateHandle"), efi.BY_PROTOCOL, scratch(0), 0, scratch(0x50), 0),        # size probe
        (BS, bs("LocateHandle"), efi.BY_PROTOCOL, scratch(0), 0, scratch(0x50), scratch(0x60)),
        (BS, bs("LocateHandleBuffer"), efi.BY_PROTOCOL, scratch(0), 0, scratch(0x70), scratch(0x78)),
        (BS, bs("ReinstallProtocolInterface"), scratch_value(0x40), scratch(0), 0x1111, 0xABC1),
        (BS, bs("ReinstallProtocolInterface"), scratch_value(0x40), scratch(0), 0xABC0, 0xABC0),
        (BS, bs("InstallMultipleProtocolInterfaces"), scratch(0x40), scratch(16), 0xDEF0, 0),
        (BS, bs("ProtocolsPerHandle"), scratch_value(0x40), scratch(0x80), scratch(0x88)),
        (BS, bs("UninstallMultipleProtocolInterfaces"), scratch_value(0x40), scratch(0), 0xABC0, scratch(16), 0xDEF0, 0),
        (BS, bs("LocateProtocol"), scratch(0), 0, scratch(0x48)),
        (BS, bs("LocateHandleBuffer"), efi.BY_PROTOCOL, scratch(16), 0, scratch(0x70), scratch(0x78)),
    ], data=data)
    results = [c.result for c in traced]
    assert results == ["EFI_SUCCESS", "EFI_SUCCESS", "EFI_BUFFER_TOO_SMALL", "EFI_SUCCESS", "EFI_SUCCESS",
                       "EFI_NOT_FOUND", "EFI_SUCCESS",
                       "EFI_SUCCESS", "EFI_SUCCESS", "EFI_SUCCESS", "EFI_NOT_FOUND", "EFI_NOT_FOUND"]
    handle = u64(prepared, sym, 0x40)
    assert u64(prepared, sym, 0x50) == 8 and u64(prepared, sym, 0x60) == handle
    assert u64(prepared, sym, 0x70) == 1
    assert u64(prepared, sym, 0x88) == 2                                # two protocols on the handle
    assert traced[7].args["protocols"] == ["66666666-2222-3333-4444-555555555555"]


def test_locate_device_path_finds_the_longest_match_or_not_found():
    fw_device_path = bytes([0x01, 0x04, 20, 0]) + efi.guid_bytes("6e9b4f3e-7a5c-4c2f-9a1d-68767369d000")
    file_node = bytes([0x04, 0x04, 8, 0]) + "a\0".encode("utf-16-le")
    path = fw_device_path + file_node + efi.END_DEVICE_PATH
    data = efi.DEVICE_PATH_PROTOCOL_GUID + efi.LOAD_FILE2_PROTOCOL_GUID + struct.pack("<Q", 0) + path
    # scratch: [0] DEVICE_PATH guid, [16] LOAD_FILE2 guid, [0x28] the path pointer, [0x38] the path
    data = data[:0x20] + bytes(0x18) + path
    prepared, _, traced, sym = script([
        (BS, bs("LocateDevicePath"), scratch(0), scratch(0x28), scratch(0x30)),
        (BS, bs("LocateDevicePath"), scratch(16), scratch(0x28), scratch(0x30)),
    ], data=data, path_pointer=True)
    found, missing = traced
    assert found.result == "EFI_SUCCESS" and missing.result == "EFI_NOT_FOUND"
    fw = prepared.machine.plugin_state["efi"]
    assert found.args["device"] == fw.boot_device
    # the remaining path points at the file node
    remaining = u64(prepared, sym, 0x28)
    assert prepared.machine.memory.read(remaining, 8) == file_node


# -- images ---------------------------------------------------------------------------------------------

def test_load_start_exit_and_unload_a_child_image():
    message = ucs2("child says hi\n")
    child = efi_app(f"""
        mov ST_CONOUT(%rbx), %rcx
        lea msg(%rip), %rdx
        call *8(%rcx)
        mov ST_BS(%rbx), %rax
        mov %r12, %rcx
        mov $0x800000000000000e, %rdx
        xor %r8d, %r8d
        xor %r9d, %r9d
        call *{bs('Exit')}(%rax)
        mov $1, %eax
        jmp done
    msg: {message}
    """, image_base=0x7000_0000_0000)
    prepared, result, traced, sym = script([
        (BS, bs("LoadImage"), 0, IMAGE_HANDLE, 0, scratch(0x100), len(child), scratch(0)),
        (BS, bs("StartImage"), scratch_value(0), 0, 0),
        (BS, bs("UnloadImage"), scratch_value(0)),
        (BS, bs("LoadImage"), 0, IMAGE_HANDLE, 0, scratch(0x100), 0x40, scratch(8)),      # truncated
    ], data=bytes(0x100) + child)
    names = [c.name for c in traced]
    assert names == ["BS.LoadImage", "BS.StartImage", "ConOut.OutputString", "BS.Exit", "BS.UnloadImage",
                     "BS.LoadImage"]
    assert result.console("efi-conout") == "child says hi\n"
    results = prepared.machine.memory.read(sym["results"], 32)
    start_status = struct.unpack_from("<Q", results, 8)[0]
    assert start_status == efi.NOT_FOUND                                   # what the child passed to Exit
    assert traced[4].result == "EFI_INVALID_PARAMETER"                      # Exit already unloaded it
    assert traced[5].result == "EFI_LOAD_ERROR"
    assert result.exit_status == 0
