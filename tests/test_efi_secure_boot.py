"""Secure Boot's variables under ``--secure-boot off|setup`` (no keys enrolled, nothing enforced),
read and written by an EFI application as a loader (shim, GRUB, Linux's stub) reads them."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from hvsim.abi import efi

from efi_apps import RT, rt, script, scratch

DB_GUID = efi.guid_bytes("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
NAMES = [("SecureBoot", 0), ("SetupMode", 0), ("AuditMode", 0), ("DeployedMode", 0), ("VendorKeys", 0),
         ("SignatureSupport", 0), ("PK", 0), ("KEK", 0), ("db", 16), ("dbx", 16)]
NAME_AT, SIZE_AT, DATA_AT, VALUE_AT = 0x40, 0x800, 0x1000, 0x1800
BS_RT = efi.VARIABLE_BOOTSERVICE_ACCESS | efi.VARIABLE_RUNTIME_ACCESS
NV_BS_RT = efi.VARIABLE_NON_VOLATILE | BS_RT
SIGNATURE_TYPES = ["826ca512-cf10-4ac9-b187-be01496631bd", "c1c41626-504c-4092-aca9-41f936934328",
                   "3c5766e8-269c-4e34-aa14-ed776e85b3b6", "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"]


def scratch_data() -> bytes:
    data = bytearray(VALUE_AT + 16)
    data[0:16], data[16:32] = efi.GLOBAL_VARIABLE_GUID, DB_GUID
    for i, (name, _) in enumerate(NAMES):
        encoded = (name + "\0").encode("utf-16-le")
        data[NAME_AT + 0x40 * i:NAME_AT + 0x40 * i + len(encoded)] = encoded
        struct.pack_into("<Q", data, SIZE_AT + 0x10 * i, 0x80)       # DataSize in: the buffer's size
    data[VALUE_AT] = 1
    return bytes(data)


def get(i: int):
    name, guid = NAMES[i]
    return (RT, rt("GetVariable"), scratch(NAME_AT + 0x40 * i), scratch(guid), scratch(SIZE_AT + 0x10 * i + 8),
            scratch(SIZE_AT + 0x10 * i), scratch(DATA_AT + 0x80 * i))


def set_(i: int, attributes: int, size: int):
    name, guid = NAMES[i]
    return (RT, rt("SetVariable"), scratch(NAME_AT + 0x40 * i), scratch(guid), attributes, size, scratch(VALUE_AT))


def read_back(prepared, symbols):
    memory, base = prepared.machine.memory, symbols["scratch"]
    out = {}
    for i, (name, _) in enumerate(NAMES):
        size = memory.read_u64(base + SIZE_AT + 0x10 * i)
        attributes = memory.read_u32(base + SIZE_AT + 0x10 * i + 8)
        out[name] = (attributes, memory.read(base + DATA_AT + 0x80 * i, size))
    return out


@pytest.mark.parametrize("mode", ["off", "setup"])
def test_setup_mode_variables_without_keys(mode):
    calls = [get(i) for i in range(len(NAMES))]
    prepared, result, traced, symbols = script(calls, data=scratch_data(), secure_boot=mode)
    assert result.exit_status == 0, result.stop
    results = {NAMES[i][0]: traced[i].result for i in range(len(NAMES))}
    mode_variables = {"AuditMode", "DeployedMode"}
    for name, status in results.items():
        if name in ("PK", "KEK", "db", "dbx") or (mode == "off" and name in mode_variables):
            assert status == "EFI_NOT_FOUND", name
        else:
            assert status == "EFI_SUCCESS", name
    values = read_back(prepared, symbols)
    assert values["SecureBoot"] == (BS_RT, b"\x00")
    assert values["SetupMode"] == (BS_RT, b"\x01")
    assert values["VendorKeys"] == (BS_RT, b"\x01")
    attributes, raw = values["SignatureSupport"]
    assert attributes == BS_RT
    assert [efi.guid_name(raw[i:i + 16]) for i in range(0, len(raw), 16)] == SIGNATURE_TYPES
    if mode == "setup":
        assert values["AuditMode"] == (BS_RT, b"\x00") and values["DeployedMode"] == (BS_RT, b"\x00")


def test_mode_variables_are_read_only_and_keys_need_authenticated_writes():
    calls = [set_(0, BS_RT, 1),            # SecureBoot = 1
             set_(1, 0, 0),                # delete SetupMode
             set_(2, BS_RT, 1),            # AuditMode = 1
             set_(6, NV_BS_RT, 1),         # PK without TIME_BASED_AUTHENTICATED_WRITE_ACCESS
             set_(8, BS_RT | 0x20, 1),     # db, authenticated but volatile
             get(0), get(1)]
    prepared, result, traced, symbols = script(calls, data=scratch_data(), secure_boot="setup")
    assert [c.result for c in traced] == ["EFI_WRITE_PROTECTED"] * 3 + ["EFI_INVALID_PARAMETER"] * 2 + \
        ["EFI_SUCCESS"] * 2
    assert "read-only" in traced[0].args["error"]
    values = read_back(prepared, symbols)
    assert values["SecureBoot"] == (BS_RT, b"\x00") and values["SetupMode"] == (BS_RT, b"\x01")


def test_without_secure_boot_support_there_is_nothing_to_read_and_nothing_to_fake():
    calls = [get(0), get(1), set_(0, BS_RT, 1), get(0)]
    _, _, traced, _ = script(calls, data=scratch_data())
    assert [c.result for c in traced] == ["EFI_NOT_FOUND", "EFI_NOT_FOUND", "EFI_WRITE_PROTECTED", "EFI_NOT_FOUND"]


def test_a_variable_file_with_enrolled_keys_is_refused(tmp_path):
    store = tmp_path / "vars.json"
    store.write_text(json.dumps({"variables": [{"guid": "8be4df61-93ca-11d2-aa0d-00e098032b8c", "name": "PK",
                                                "attributes": NV_BS_RT | 0x20, "data": "00"}]}))
    done = subprocess.run([sys.executable, "-m", "hvsim", "run", "--env", "efi", "--secure-boot", "off",
                           "--efi-vars", str(store)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "PK" in done.stderr and "user mode" in done.stderr
