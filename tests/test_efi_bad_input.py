"""Bad input to the efi firmware: NULL and out-of-RAM pointers and bad sizes get the status the UEFI
specification names, recorded in the trace; a faulting application is stopped with the faulting
instruction shown.  Never a Python exception, never a lost trace."""

from __future__ import annotations

import pytest

from hvsim import MachineConfig
from hvsim.abi import efi
from hvsim.api import Run

from efi_apps import (
    BS, BS_AT_ENTRY, CON_OUT, IMAGE_HANDLE, RT, THIS, bs, call_script, efi_app, rt, scratch, scratch_value,
)

NOWHERE = 0x7000_0000_0000          # no RAM, not mapped


def traced_results(calls, data: bytes = b""):
    app, _ = call_script(calls, data=data)
    result = Run("efi", app, MachineConfig()).execute()
    assert result.exit_status == 0, (result.stop, result.extra.get("host_traceback"))
    assert "host_traceback" not in result.extra
    return [e for e in result.events if e.kind == "Call"]


NULL_CASES = {
    "AllocatePages Memory": (BS, bs("AllocatePages"), 0, efi.LOADER_DATA, 1, 0),
    "GetMemoryMap MemoryMapSize": (BS, bs("GetMemoryMap"), 0, 0, 0, 0, 0),
    "AllocatePool Buffer": (BS, bs("AllocatePool"), efi.LOADER_DATA, 16, 0),
    "FreePool Buffer": (BS, bs("FreePool"), 0),
    "HandleProtocol Interface": (BS, bs("HandleProtocol"), IMAGE_HANDLE, scratch(0), 0),
    "HandleProtocol Protocol": (BS, bs("HandleProtocol"), IMAGE_HANDLE, 0, scratch(0x40)),
    "LocateProtocol Interface": (BS, bs("LocateProtocol"), scratch(0), 0, 0),
    "LocateHandle BufferSize": (BS, bs("LocateHandle"), efi.ALL_HANDLES, 0, 0, 0, 0),
    "LocateDevicePath DevicePath": (BS, bs("LocateDevicePath"), scratch(0), 0, scratch(0x40)),
    "CreateEvent Event": (BS, bs("CreateEvent"), 0, 0, 0, 0, 0),
    "WaitForEvent Index": (BS, bs("WaitForEvent"), 1, scratch(0x40), 0),
    "InstallProtocolInterface Handle": (BS, bs("InstallProtocolInterface"), 0, scratch(0), 0, 0),
    "CalculateCrc32 Crc32": (BS, bs("CalculateCrc32"), scratch(0), 4, 0),
    "GetVariable VariableName": (RT, rt("GetVariable"), 0, scratch(0), 0, scratch(0x40), 0),
    "GetTime Time": (RT, rt("GetTime"), 0, 0),
    "OutputString String": (CON_OUT, 8, THIS, 0),
}


@pytest.mark.parametrize("case", sorted(NULL_CASES))
def test_a_null_pointer_is_invalid_parameter(case):
    (call,) = traced_results([NULL_CASES[case]], data=efi.LOADED_IMAGE_PROTOCOL_GUID)
    assert call.result == "EFI_INVALID_PARAMETER", call
    assert "NULL" in call.args["error"]


OUT_OF_RAM_CASES = {
    "GetMemoryMap MemoryMapSize": (BS, bs("GetMemoryMap"), NOWHERE, 0, 0, 0, 0),
    "AllocatePages Memory": (BS, bs("AllocatePages"), efi.ALLOCATE_ANY_PAGES, efi.LOADER_DATA, 1, NOWHERE),
    "HandleProtocol Protocol": (BS, bs("HandleProtocol"), IMAGE_HANDLE, NOWHERE, scratch(0x40)),
    "CopyMem Destination": (BS, bs("CopyMem"), NOWHERE, scratch(0), 16),
    "SetMem Buffer": (BS, bs("SetMem"), 0xFFFF_FFFF_F000, 0x100, 0),
    "OutputString String": (CON_OUT, 8, THIS, NOWHERE),
    "GetVariable VendorGuid": (RT, rt("GetVariable"), scratch(0), NOWHERE, 0, scratch(0x40), 0),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RAM_CASES))
def test_a_pointer_outside_ram_is_invalid_parameter(case):
    (call,) = traced_results([OUT_OF_RAM_CASES[case]], data="x\0".encode("utf-16-le"))
    assert call.result == "EFI_INVALID_PARAMETER", call
    assert "error" in call.args


BAD_SIZE_CASES = {
    "AllocatePages of 0 pages": ((BS, bs("AllocatePages"), efi.ALLOCATE_ANY_PAGES, efi.LOADER_DATA, 0, scratch(0)),
                                 "EFI_INVALID_PARAMETER"),
    "AllocatePages of 2**40 pages": ((BS, bs("AllocatePages"), efi.ALLOCATE_ANY_PAGES, efi.LOADER_DATA, 1 << 40,
                                      scratch(0)), "EFI_OUT_OF_RESOURCES"),
    "AllocatePages of an unknown type": ((BS, bs("AllocatePages"), 7, efi.LOADER_DATA, 1, scratch(0)),
                                         "EFI_INVALID_PARAMETER"),
    "AllocatePages of Conventional memory": ((BS, bs("AllocatePages"), efi.ALLOCATE_ANY_PAGES,
                                              efi.CONVENTIONAL_MEMORY, 1, scratch(0)), "EFI_INVALID_PARAMETER"),
    "AllocatePool of 2**50 bytes": ((BS, bs("AllocatePool"), efi.LOADER_DATA, 1 << 50, scratch(0)),
                                    "EFI_OUT_OF_RESOURCES"),
    "AllocatePool of memory type 0x1000": ((BS, bs("AllocatePool"), 0x1000, 16, scratch(0)), "EFI_INVALID_PARAMETER"),
    "FreePages unaligned": ((BS, bs("FreePages"), 0x100123, 1), "EFI_INVALID_PARAMETER"),
    "FreePages of memory nobody allocated": ((BS, bs("FreePages"), 0x200000, 1), "EFI_NOT_FOUND"),
    "FreePool of a pointer AllocatePool never gave": ((BS, bs("FreePool"), scratch(0)), "EFI_INVALID_PARAMETER"),
    "CopyMem of 2**40 bytes": ((BS, bs("CopyMem"), scratch(0), scratch(8), 1 << 40), "EFI_INVALID_PARAMETER"),
    "CalculateCrc32 of 0 bytes": ((BS, bs("CalculateCrc32"), scratch(0), 0, scratch(8)), "EFI_INVALID_PARAMETER"),
    "WaitForEvent on 0 events": ((BS, bs("WaitForEvent"), 0, scratch(0), scratch(8)), "EFI_INVALID_PARAMETER"),
    "ExitBootServices with a key never issued": ((BS, bs("ExitBootServices"), IMAGE_HANDLE, 0xBAD), "EFI_INVALID_PARAMETER"),
    "SetVirtualAddressMap before ExitBootServices": ((RT, rt("SetVirtualAddressMap"), 48, 48, 1, scratch(0)),
                                                     "EFI_UNSUPPORTED"),
    "RegisterProtocolNotify (not provided)": ((BS, bs("RegisterProtocolNotify"), scratch(0), 0, scratch(8)),
                                              "EFI_UNSUPPORTED"),
}


@pytest.mark.parametrize("case", sorted(BAD_SIZE_CASES))
def test_bad_sizes_and_arguments_get_the_specified_status(case):
    call_args, status = BAD_SIZE_CASES[case]
    (call,) = traced_results([call_args], data=efi.LOADED_IMAGE_PROTOCOL_GUID)
    assert call.result == status, call


def test_a_faulting_application_is_stopped_with_the_faulting_instruction():
    app = efi_app(f"mov $1, %eax\nmovabs ${NOWHERE:#x}, %rcx\nmov (%rcx), %rdx\njmp done")
    result = Run("efi", app, MachineConfig()).execute()
    assert result.stop.kind == "crash"
    assert "#PF" in result.stop.detail and "mov rdx, qword ptr [rcx]" in result.stop.detail
    (fault,) = [e for e in result.events if e.kind == "Fault"]      # recorded once, by the core
    assert (fault.vector, fault.cr2) == (14, NOWHERE)
    assert result.state.instruction == "mov rdx, qword ptr [rcx]"
    assert result.state.registers["rip"] == fault.rip and result.state.registers["rax"] == 1


def test_a_boot_service_after_exit_boot_services_is_an_error_not_a_crash():
    calls = [
        (BS, bs("GetMemoryMap"), scratch(0), scratch(0x1000), scratch(8), scratch(16), scratch(24)),
        (BS, bs("ExitBootServices"), IMAGE_HANDLE, scratch_value(8)),
        (BS_AT_ENTRY, bs("LocateProtocol"), scratch(0x40), 0, scratch(0x60)),
        (BS_AT_ENTRY, bs("ExitBootServices"), IMAGE_HANDLE, scratch_value(8)),
        (RT, rt("GetVariable"), scratch(0x80), scratch(0x40), 0, scratch(0x60), 0),
    ]
    traced = traced_results(calls, data=(0x4000).to_bytes(8, "little"))
    assert [c.result for c in traced] == ["EFI_SUCCESS", "EFI_SUCCESS", "EFI_UNSUPPORTED", "EFI_UNSUPPORTED",
                                          "EFI_NOT_FOUND"]
    assert all("ExitBootServices" in c.args["error"] for c in traced[2:4])


def test_handover_needs_a_bzimage():
    from hvsim.core.errors import LoadError
    from hvsim.kernels import probe_path

    with pytest.raises(LoadError, match="--entry handover needs a bzImage"):
        Run("efi", probe_path("efi"), MachineConfig(), options={"entry": "handover"})


def test_a_variable_store_that_cannot_be_written_is_a_device_error(tmp_path):
    data = efi.GLOBAL_VARIABLE_GUID + "X\0".encode("utf-16-le") + b"\x01"
    nv = efi.VARIABLE_NON_VOLATILE | efi.VARIABLE_BOOTSERVICE_ACCESS
    app, _ = call_script([(RT, rt("SetVariable"), scratch(16), scratch(0), nv, 1, scratch(20))], data=data)
    result = Run("efi", app, MachineConfig(), options={"efi_vars": str(tmp_path / "missing" / "v.json")}).execute()
    (call,) = [e for e in result.events if e.kind == "Call"]
    assert call.result == "EFI_DEVICE_ERROR" and "cannot write" in call.args["error"]
    assert result.exit_status == 0


def test_the_smallest_machine_still_boots_the_probe():
    from hvsim.kernels import probe_path

    result = Run("efi", probe_path("efi"), MachineConfig(memory="16M")).execute()
    assert result.stop.kind == "poweroff", result.stop
