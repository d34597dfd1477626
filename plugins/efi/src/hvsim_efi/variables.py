"""The variable store and its runtime services (UEFI 2.10 §8.2): GetVariable, GetNextVariableName,
SetVariable, QueryVariableInfo.

Variables are kept in creation order.  With a file (``--efi-vars FILE``) the non-volatile ones are
read from it when the run starts and written back, as JSON, after every change to one of them.
With ``--secure-boot MODE`` the store starts with Secure Boot's variables (``secure_boot``), and
its rules on writes apply.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from hvsim.abi import efi
from hvsim.core.errors import UsageError

from . import secure_boot
from .calls import EfiError, service

STORAGE_SIZE = 64 * 1024
MAX_VARIABLE_SIZE = 32 * 1024
AUTHENTICATED_WRITE = 0x10 | 0x20          # EFI_VARIABLE_(TIME_BASED_)AUTHENTICATED_WRITE_ACCESS
APPEND_WRITE = 0x40


class VariableStore:
    def __init__(self, path: "str | os.PathLike | None" = None, secure_boot_mode: str | None = None):
        self.path = Path(path) if path else None
        self.secure_boot_mode = secure_boot_mode
        self.variables: dict[tuple[bytes, str], tuple[int, bytes]] = {}
        if self.path is not None and self.path.exists():
            try:
                for v in json.loads(self.path.read_text())["variables"]:
                    key = (uuid.UUID(v["guid"]).bytes_le, v["name"])
                    self.variables[key] = (int(v["attributes"]), bytes.fromhex(v["data"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"EFI variable file {self.path}: {exc}") from None
        if secure_boot_mode is not None:
            secure_boot.check_enrolled(self.variables, secure_boot_mode)
            for key in secure_boot.READ_ONLY:        # a file cannot bring what the firmware owns
                self.variables.pop((efi.GLOBAL_VARIABLE_GUID, key), None)
            self.variables.update(secure_boot.initial_variables(secure_boot_mode))

    def used(self) -> int:
        return sum(len(n) * 2 + 2 + len(d) + 24 for (_, n), (_, d) in self.variables.items())

    def save(self) -> None:
        if self.path is None:
            return
        kept = [{"guid": str(uuid.UUID(bytes_le=g)), "name": n, "attributes": a, "data": d.hex()}
                for (g, n), (a, d) in self.variables.items() if a & efi.VARIABLE_NON_VOLATILE]
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"variables": kept}, indent=1) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise EfiError(efi.DEVICE_ERROR, f"cannot write {self.path}: {exc.strerror or exc}") from None


def _visible(ctx, attributes: int) -> bool:
    return ctx.fw.boot_services_active or bool(attributes & efi.VARIABLE_RUNTIME_ACCESS)


def _key(ctx) -> tuple[bytes, str]:
    name = ctx.ucs2(ctx.pointer("VariableName"), 1024)
    ctx.record["name"] = name
    return ctx.guid("VendorGuid"), name


@service("RT", "GetVariable", "VariableName", "VendorGuid", "Attributes", "DataSize", "Data")
def get_variable(ctx):
    key = _key(ctx)
    size_ptr = ctx.pointer("DataSize")
    found = ctx.fw.variables.variables.get(key)
    if found is None or not _visible(ctx, found[0]):
        raise EfiError(efi.NOT_FOUND)
    attributes, data = found
    have = ctx.read_u64(size_ptr)
    ctx.write_u64(size_ptr, len(data))
    if have < len(data):
        return efi.BUFFER_TOO_SMALL
    if data:
        ctx.write(ctx.pointer("Data"), data)
    if ctx.args["Attributes"]:
        ctx.write_u32(ctx.args["Attributes"], attributes)
    return efi.SUCCESS


@service("RT", "GetNextVariableName", "VariableNameSize", "VariableName", "VendorGuid")
def get_next_variable_name(ctx):
    size_ptr, name_ptr, guid_ptr = ctx.pointer("VariableNameSize"), ctx.pointer("VariableName"), ctx.pointer("VendorGuid")
    have = ctx.read_u64(size_ptr)
    current = ctx.ucs2(name_ptr, max(have // 2, 1))
    keys = [k for k, (a, _) in ctx.fw.variables.variables.items() if _visible(ctx, a)]
    if current == "":
        position = 0
    else:
        key = (ctx.read(guid_ptr, 16), current)
        if key not in keys:
            raise EfiError(efi.INVALID_PARAMETER, f"{current!r} is not an existing variable")
        position = keys.index(key) + 1
    if position >= len(keys):
        raise EfiError(efi.NOT_FOUND)
    guid, name = keys[position]
    encoded = (name + "\0").encode("utf-16-le")
    ctx.write_u64(size_ptr, len(encoded))
    if have < len(encoded):
        return efi.BUFFER_TOO_SMALL
    ctx.write(name_ptr, encoded)
    ctx.write(guid_ptr, guid)
    ctx.record["next"] = name
    return efi.SUCCESS


@service("RT", "SetVariable", "VariableName", "VendorGuid", "Attributes", "DataSize", "Data")
def set_variable(ctx):
    guid, name = _key(ctx)
    a = ctx.args
    store = ctx.fw.variables
    attributes, size = a["Attributes"], a["DataSize"]
    if name == "" or attributes & ~efi.VARIABLE_KNOWN_ATTRIBUTES:
        raise EfiError(efi.INVALID_PARAMETER, "empty name or unknown attribute bits")
    if attributes & efi.VARIABLE_RUNTIME_ACCESS and not attributes & efi.VARIABLE_BOOTSERVICE_ACCESS:
        raise EfiError(efi.INVALID_PARAMETER, "RUNTIME_ACCESS needs BOOTSERVICE_ACCESS")
    secure_boot.check_write(guid, name, attributes, store.secure_boot_mode)
    if attributes & AUTHENTICATED_WRITE:
        raise EfiError(efi.UNSUPPORTED, "authenticated variables are not supported")
    if not ctx.fw.boot_services_active and attributes and not attributes & efi.VARIABLE_RUNTIME_ACCESS:
        raise EfiError(efi.INVALID_PARAMETER, "after ExitBootServices only runtime-access variables can be set")
    if size and a["Data"] == 0:
        raise EfiError(efi.INVALID_PARAMETER, "Data is NULL")
    if size > MAX_VARIABLE_SIZE:
        raise EfiError(efi.OUT_OF_RESOURCES, f"{size} bytes is more than {MAX_VARIABLE_SIZE}")
    data = ctx.read(a["Data"], size) if size else b""
    existing = store.variables.get((guid, name))
    if attributes == 0 or (size == 0 and not attributes & APPEND_WRITE):
        if existing is None:
            raise EfiError(efi.NOT_FOUND)
        del store.variables[(guid, name)]
    else:
        attributes &= ~APPEND_WRITE
        if existing is not None and existing[0] != attributes:
            raise EfiError(efi.INVALID_PARAMETER, f"the variable exists with attributes {existing[0]:#x}")
        if existing is not None and a["Attributes"] & APPEND_WRITE:
            data = existing[1] + data
        if store.used() + len(data) > STORAGE_SIZE:
            raise EfiError(efi.OUT_OF_RESOURCES, "variable storage is full")
        store.variables[(guid, name)] = (attributes, data)
    if (attributes | (existing[0] if existing else 0)) & efi.VARIABLE_NON_VOLATILE:
        store.save()
    return efi.SUCCESS


@service("RT", "QueryVariableInfo", "Attributes", "MaximumVariableStorageSize", "RemainingVariableStorageSize",
         "MaximumVariableSize")
def query_variable_info(ctx):
    outs = [ctx.pointer(n) for n in ("MaximumVariableStorageSize", "RemainingVariableStorageSize", "MaximumVariableSize")]
    if ctx.args["Attributes"] == 0 or ctx.args["Attributes"] & ~efi.VARIABLE_KNOWN_ATTRIBUTES:
        raise EfiError(efi.INVALID_PARAMETER, f"Attributes {ctx.args['Attributes']:#x}")
    for out, value in zip(outs, (STORAGE_SIZE, STORAGE_SIZE - ctx.fw.variables.used(), MAX_VARIABLE_SIZE)):
        ctx.write_u64(out, value)
    return efi.SUCCESS
