"""efi events, runtime services and consoles driven by a scripted EFI application
(efi_apps.call_script), asserted through the firmware's trace and the memory the guest sees."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from hvsim import MachineConfig
from hvsim.abi import efi
from hvsim.api import Run

from efi_apps import (
    BS, CON_IN, CON_OUT, IMAGE_HANDLE, RT, THIS, bs, call_script, con_out, efi_app, interface_at, rt, scratch,
    scratch_value, script, u64,
)


# -- events and the keyboard --------------------------------------------------------------------------

def test_timer_event_wait_check_and_signal():
    prepared, result, traced, sym = script([
        (BS, bs("CreateEvent"), efi.EVT_TIMER, 0, 0, 0, scratch(0)),
        (BS, bs("CheckEvent"), scratch_value(0)),
        (BS, bs("SetTimer"), scratch_value(0), efi.TIMER_RELATIVE, 10_000_000),            # 1 s
        (BS, bs("WaitForEvent"), 1, scratch(0), scratch(8)),
        (BS, bs("CheckEvent"), scratch_value(0)),
        (BS, bs("SignalEvent"), scratch_value(0)),
        (BS, bs("CheckEvent"), scratch_value(0)),
        (BS, bs("CloseEvent"), scratch_value(0)),
        (BS, bs("CheckEvent"), scratch_value(0)),
        (BS, bs("Stall"), 1000),
        (BS, bs("SetWatchdogTimer"), 0, 0x10000, 0, 0),
        (BS, bs("SetWatchdogTimer"), 0, 0, 0, 0),                 # how GRUB and Linux's stub disable it
        (BS, bs("SetWatchdogTimer"), 5, 0x10000, 8, 0),           # a size without its buffer
    ])
    assert [c.result for c in traced] == ["EFI_SUCCESS", "EFI_NOT_READY", "EFI_SUCCESS", "EFI_SUCCESS",
                                          "EFI_NOT_READY", "EFI_SUCCESS", "EFI_SUCCESS", "EFI_SUCCESS",
                                          "EFI_INVALID_PARAMETER", "EFI_SUCCESS", "EFI_SUCCESS", "EFI_SUCCESS",
                                          "EFI_INVALID_PARAMETER"]
    assert prepared.machine.plugin_state["efi"].events.now() >= 1_000_000_000


def test_signal_event_calls_the_notification_function():
    """A notify function (in the app) that counts its calls; SignalEvent runs it before returning."""
    app = efi_app(f"""
        mov ST_BS(%rbx), %r13
        mov $0x200, %ecx                 # EVT_NOTIFY_SIGNAL
        mov $8, %edx                     # TPL_CALLBACK
        lea notify(%rip), %r8
        lea counter(%rip), %r9
        lea event(%rip), %rax
        mov %rax, 0x20(%rsp)
        call *{bs('CreateEvent')}(%r13)
        mov event(%rip), %rcx
        call *{bs('SignalEvent')}(%r13)
        mov event(%rip), %rcx
        call *{bs('SignalEvent')}(%r13)
        mov counter(%rip), %rax
        jmp done
    notify:
        incq (%rdx)
        ret
    .balign 8
    event: .quad 0
    counter: .quad 0
    """)
    result = Run("efi", app, MachineConfig()).execute()
    assert result.stop.code == 2, result.stop
    assert [e.name for e in result.events if e.kind == "Call"] == ["BS.CreateEvent", "BS.SignalEvent", "BS.SignalEvent"]


def test_a_key_wait_gets_the_scripted_keys_then_stops_idle():
    wait_event = 0x10                                 # ConIn.WaitForKey at This + 0x10
    app, sym = call_script([
        (CON_IN, wait_event - wait_event, THIS, 0),                                    # Reset
        (BS, bs("WaitForEvent"), 1, scratch(0x100), scratch(8)),
        (CON_IN, 8, THIS, scratch(16)),                                                # ReadKeyStroke
        (CON_IN, 8, THIS, scratch(24)),
        (CON_IN, 8, THIS, scratch(32)),
        (BS, bs("WaitForEvent"), 1, scratch(0x100), scratch(8)),
    ])
    # the event handle: read it from ConIn at run time is not possible in the script, so the test
    # passes it in: the firmware's ConIn.WaitForKey is known once the firmware is built
    prepared = Run("efi", app, MachineConfig(keys="a{esc}"))
    fw = prepared.machine.plugin_state["efi"]
    prepared.machine.memory.write_u64(sym["scratch"] + 0x100, fw.con_in.wait_for_key)
    result = prepared.execute()
    traced = [e for e in result.events if e.kind == "Call"]
    assert [c.result for c in traced] == ["EFI_SUCCESS", "EFI_SUCCESS", "EFI_SUCCESS", "EFI_SUCCESS",
                                          "EFI_NOT_READY", "EFI_NOT_READY"]
    memory = prepared.machine.memory
    assert struct.unpack("<HH", memory.read(sym["scratch"] + 16, 4)) == (0, ord("a"))
    assert struct.unpack("<HH", memory.read(sym["scratch"] + 24, 4)) == (0x17, 0)      # SCAN_ESC
    assert result.stop.kind == "idle" and "no scripted keys left" in result.stop.detail


def test_the_watchdog_ends_a_run_that_overstays():
    _, result, traced, _ = script([
        (BS, bs("SetWatchdogTimer"), 1, 0x10000, 0, 0),
        (BS, bs("Stall"), 2_000_000),
        (BS, bs("Stall"), 1),
    ])
    assert result.stop.kind == "crash" and "watchdog" in result.stop.detail
    assert [c.name for c in traced] == ["BS.SetWatchdogTimer", "BS.Stall"]


def test_exit_boot_services_signals_its_event_group():
    app = efi_app(f"""
        mov ST_BS(%rbx), %r13
        mov $0x201, %ecx                 # EVT_SIGNAL_EXIT_BOOT_SERVICES
        mov $8, %edx
        lea notify(%rip), %r8
        lea counter(%rip), %r9
        lea event(%rip), %rax
        mov %rax, 0x20(%rsp)
        call *{bs('CreateEvent')}(%r13)
        movq $0x4000, size(%rip)
        lea size(%rip), %rcx
        lea map(%rip), %rdx
        lea key(%rip), %r8
        lea dsize(%rip), %r9
        lea dversion(%rip), %rax
        mov %rax, 0x20(%rsp)
        call *{bs('GetMemoryMap')}(%r13)
        mov %r12, %rcx
        mov key(%rip), %rdx
        call *{bs('ExitBootServices')}(%r13)
        mov counter(%rip), %rax
        jmp done
    notify:
        incq (%rdx)
        ret
    .balign 8
    event: .quad 0
    counter: .quad 0
    size: .quad 0
    key: .quad 0
    dsize: .quad 0
    dversion: .quad 0
    map: .skip 0x4000
    """)
    result = Run("efi", app, MachineConfig()).execute()
    assert result.stop.code == 1, result.stop
    assert [e.name for e in result.events if e.kind == "Call"][-1] == "BS.ExitBootServices"


# -- runtime services -----------------------------------------------------------------------------------

def test_variables_set_get_enumerate_and_persist(tmp_path):
    store = tmp_path / "vars.json"
    name = "BootOrder\0".encode("utf-16-le")
    value = b"\x01\x00\x02\x00"
    data = efi.GLOBAL_VARIABLE_GUID + name.ljust(64, b"\0") + value
    nv = efi.VARIABLE_NON_VOLATILE | efi.VARIABLE_BOOTSERVICE_ACCESS | efi.VARIABLE_RUNTIME_ACCESS
    calls = [
        (RT, rt("SetVariable"), scratch(16), scratch(0), nv, len(value), scratch(80)),
        (RT, rt("GetVariable"), scratch(16), scratch(0), scratch(0x100), scratch(0x108), scratch(0x110)),
        (RT, rt("GetNextVariableName"), scratch(0x200), scratch(0x208), scratch(0x300)),
    ]
    data = data.ljust(0x108, b"\0") + struct.pack("<Q", 16) + bytes(0xF0) + struct.pack("<Q", 64)
    prepared, _, traced, sym = script(calls, data=data, efi_vars=str(store))
    assert [c.result for c in traced] == ["EFI_SUCCESS"] * 3
    memory = prepared.machine.memory
    assert memory.read(sym["scratch"] + 0x110, 4) == value
    assert memory.read_u32(sym["scratch"] + 0x100) == nv
    assert traced[2].args["next"] == "BootOrder"
    saved = json.loads(store.read_text())["variables"]
    assert saved == [{"guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "name": "BootOrder", "attributes": nv,
                      "data": value.hex()}]
    # a second run reads it back from the file
    _, _, traced, _ = script(calls[1:2], data=data, efi_vars=str(store))
    assert traced[0].result == "EFI_SUCCESS"


def test_get_and_set_time():
    time = struct.pack(efi.TIME_FORMAT, 2030, 6, 15, 12, 30, 0, 0, efi.UNSPECIFIED_TIMEZONE, 0)
    bad = struct.pack(efi.TIME_FORMAT, 2030, 13, 15, 12, 30, 0, 0, efi.UNSPECIFIED_TIMEZONE, 0)
    _, _, traced, _ = script([
        (RT, rt("GetTime"), scratch(0x100), scratch(0x120)),
        (RT, rt("SetTime"), scratch(0)),
        (RT, rt("GetTime"), scratch(0x100), 0),
        (RT, rt("SetTime"), scratch(16)),
    ], data=time + bad)
    assert [c.result for c in traced] == ["EFI_SUCCESS", "EFI_SUCCESS", "EFI_SUCCESS", "EFI_INVALID_PARAMETER"]
    assert traced[0].args["time"].startswith("2026-01-01")
    assert traced[2].args["time"].startswith("2030-06-15 12:30")


@pytest.mark.parametrize("reset_type,kind", [(efi.RESET_SHUTDOWN, "poweroff"), (efi.RESET_COLD, "reboot"),
                                             (efi.RESET_WARM, "reboot")])
def test_reset_system_ends_the_run_with_its_type(reset_type, kind):
    _, result, traced, _ = script([(RT, rt("ResetSystem"), reset_type, 0, 0, 0)])
    assert result.stop.kind == kind
    assert efi.RESET_TYPE_NAMES[reset_type] in result.stop.detail
    assert traced[-1].name == "RT.ResetSystem"


def run_virtual_map(offset: int, after: list):
    """GetMemoryMap, ExitBootServices, SetVirtualAddressMap giving each runtime range
    physical + ``offset``, then the calls ``after`` (through the system table, which the guest can
    follow only when ``offset`` is 0: nothing maps the other addresses)."""
    app, sym = call_script([
        (BS, bs("GetMemoryMap"), scratch(0), scratch(0x2000), scratch(8), scratch(16), scratch(24)),
        (BS, bs("ExitBootServices"), IMAGE_HANDLE, scratch_value(8)),
        (RT, rt("SetVirtualAddressMap"), scratch_value(32), 48, 1, scratch(0x1000)),
        *after,
    ], data=struct.pack("<Q", 0x4000))
    prepared = Run("efi", app, MachineConfig())
    fw, memory = prepared.machine.plugin_state["efi"], prepared.machine.memory
    runtime = [r for r in fw.map.descriptors() if r.attribute & efi.MEMORY_RUNTIME]
    virtual_map = b"".join(struct.pack(efi.MEMORY_DESCRIPTOR_FORMAT, r.type, r.start, offset + r.start, r.pages,
                                       r.attribute) + bytes(8) for r in runtime)
    memory.write(sym["scratch"] + 0x1000, virtual_map)
    memory.write_u64(sym["scratch"] + 32, len(virtual_map))
    memory.write_u64(sym["scratch"] + 40, fw.runtime_table)            # pointers to convert
    memory.write_u64(sym["scratch"] + 48, sym["scratch"])
    result = prepared.execute()
    return fw, memory, result, [e for e in result.events if e.kind == "Call"], sym


def test_set_virtual_address_map_moves_the_runtime_tables():
    """The runtime table's service pointers, and the system table's pointers into runtime memory,
    follow the virtual map, with their CRCs recomputed."""
    from hvsim_efi.tables import header_crc_ok

    offset = 0xFFFF_8000_0000_0000
    fw, memory, result, traced, _ = run_virtual_map(offset, [])
    assert [c.result for c in traced] == ["EFI_SUCCESS"] * 3 and result.exit_status == 0
    st = memory.read(fw.system_table, efi.SYSTEM_TABLE_SIZE)
    assert header_crc_ok(st)
    assert struct.unpack_from("<Q", st, efi.ST_RUNTIME_SERVICES)[0] == offset + fw.runtime_table
    assert struct.unpack_from("<Q", st, efi.ST_CONFIGURATION_TABLE)[0] == offset + fw.config_array
    table = memory.read(fw.runtime_table, efi.RUNTIME_SERVICES_SIZE)
    assert header_crc_ok(table)
    assert struct.unpack_from("<Q", table, rt("GetTime"))[0] == offset + fw.stubs[("RT", "GetTime")]


def test_set_virtual_address_map_only_once_and_convert_pointer():
    _, memory, _, traced, sym = run_virtual_map(0, [
        (RT, rt("SetVirtualAddressMap"), scratch_value(32), 48, 1, scratch(0x1000)),
        (RT, rt("ConvertPointer"), 0, scratch(40)),
        (RT, rt("ConvertPointer"), 0, scratch(48)),
        (RT, rt("GetTime"), scratch(0x100), 0),
    ])
    assert [c.result for c in traced] == ["EFI_SUCCESS"] * 3 + ["EFI_UNSUPPORTED", "EFI_SUCCESS", "EFI_NOT_FOUND",
                                                                "EFI_SUCCESS"]


# -- consoles and graphics -----------------------------------------------------------------------------

def test_text_output_mode_attribute_and_cursor():
    text = "ab\r\ncd".encode("utf-16-le") + b"\0\0"
    prepared, result, traced, sym = script([
        (CON_OUT, con_out("QueryMode"), THIS, 0, scratch(0x100), scratch(0x108)),
        (CON_OUT, con_out("QueryMode"), THIS, 3, scratch(0x100), scratch(0x108)),
        (CON_OUT, con_out("SetAttribute"), THIS, 0x1F),
        (CON_OUT, con_out("ClearScreen"), THIS),
        (CON_OUT, con_out("OutputString"), THIS, scratch(0)),
        (CON_OUT, con_out("SetCursorPosition"), THIS, 79, 24),
        (CON_OUT, con_out("SetCursorPosition"), THIS, 80, 0),
        (CON_OUT, con_out("EnableCursor"), THIS, 0),
    ], data=text)
    assert [c.result for c in traced] == ["EFI_SUCCESS", "EFI_UNSUPPORTED", "EFI_SUCCESS", "EFI_SUCCESS",
                                          "EFI_SUCCESS", "EFI_SUCCESS", "EFI_UNSUPPORTED", "EFI_SUCCESS"]
    assert (u64(prepared, sym, 0x100), u64(prepared, sym, 0x108)) == (80, 25)
    assert result.console("efi-conout") == "ab\r\ncd"
    fw = prepared.machine.plugin_state["efi"]
    mode = struct.unpack(efi.TEXT_OUTPUT_MODE_FORMAT, prepared.machine.memory.read(fw.con_out.mode_address, 24))
    assert mode == (1, 0, 0x1F, 79, 24, False)


def test_graphics_output_blt_lands_in_the_saved_png(tmp_path):
    png = tmp_path / "screen.png"
    pixel = bytes([0x10, 0x20, 0xF0, 0])                    # blue, green, red, reserved
    blt = 8 * efi.GOP_SERVICES.index("Blt")
    app, sym = call_script([
        (BS, bs("LocateHandle"), efi.BY_PROTOCOL, scratch(0), 0, scratch(0x28), 0),
        (BS, bs("LocateProtocol"), scratch(0), 0, scratch(0x20)),
        # EfiBltVideoFill of a 3x2 rectangle at (7, 5) with the pixel
        (interface_at(0x20), blt, THIS, scratch(16), efi.BLT_VIDEO_FILL, 0, 0, 7, 5, 3, 2, 0),
        # a rectangle that leaves the screen
        (interface_at(0x20), blt, THIS, scratch(16), efi.BLT_VIDEO_FILL, 0, 0, 799, 0, 2, 1, 0),
    ], data=efi.GRAPHICS_OUTPUT_PROTOCOL_GUID + pixel)
    prepared = Run("efi", app, MachineConfig(), options={"framebuffer_png": str(png)})
    result = prepared.execute()
    assert [e.result for e in result.events if e.kind == "Call"] == [
        "EFI_BUFFER_TOO_SMALL", "EFI_SUCCESS", "EFI_SUCCESS", "EFI_INVALID_PARAMETER"]
    gop = prepared.machine.plugin_state["efi"].gop
    assert (gop.width, gop.height) == (800, 600) and result.extra["efi"]["framebuffer_png"] == str(png)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    raw = zlib.decompress(data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8])
    stride = 1 + width * 3
    rows = [raw[y * stride + 1:(y + 1) * stride] for y in range(height)]
    assert rows[5][7 * 3:10 * 3] == bytes([0xF0, 0x20, 0x10]) * 3
    assert rows[6][9 * 3:10 * 3] == bytes([0xF0, 0x20, 0x10])
    assert rows[7][7 * 3:10 * 3] == bytes(9) and rows[5][6 * 3:7 * 3] == bytes(3)


def test_standard_error_is_its_own_console_and_counters_count():
    std_err = 0x50                                   # EFI_SYSTEM_TABLE.StdErr
    _, result, traced, _ = script([
        (std_err, con_out("OutputString"), THIS, scratch(0)),
        (BS, bs("GetNextMonotonicCount"), scratch(0x100)),
        (BS, bs("GetNextMonotonicCount"), scratch(0x108)),
        (RT, rt("GetNextHighMonotonicCount"), scratch(0x110)),
        (RT, rt("QueryVariableInfo"), efi.VARIABLE_BOOTSERVICE_ACCESS, scratch(0x120), scratch(0x128), scratch(0x130)),
        (RT, rt("GetNextVariableName"), scratch(0x140), scratch(0x200), scratch(0x300)),
    ], data="oops\n".encode("utf-16-le") + b"\0\0" + bytes(0x140 - 12) + struct.pack("<Q", 64))
    assert [c.result for c in traced] == ["EFI_SUCCESS"] * 5 + ["EFI_NOT_FOUND"]
    assert result.console("efi-stderr") == "oops\n" and result.console("efi-conout") == ""
