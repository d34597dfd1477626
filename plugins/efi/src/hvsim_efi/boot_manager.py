"""What the boot manager boots from the ESP when no kernel is named (``--esp DIR`` alone).

UEFI 2.10 §3.1.1: the BootOrder variable lists Boot#### options, tried in order; an option is
tried when its LOAD_OPTION_ACTIVE attribute is set and its first device path names a file on the
ESP (its full path, or the short form starting at the hard-drive node) that is a loadable image;
its OptionalData become the image's LoadOptions, and BootCurrent says which one runs.  When none
boots, §3.5.1.1: the removable-media path ``\\EFI\\BOOT\\BOOTX64.EFI``.

Not modelled: options naming other devices (there are none), LOAD_OPTION_CATEGORY_APP, BootNext,
and retrying the next option when a booted one returns (a run ends with its image).
"""

from __future__ import annotations

import struct

import attrs

from hvsim.abi import efi
from hvsim.core.errors import LoadError

from . import file_system, pe_loader
from .calls import EfiError

LOAD_OPTION_ACTIVE = 0x00000001            # §3.1.3
REMOVABLE_MEDIA_BOOT = "\\EFI\\BOOT\\BOOTX64.EFI"     # §3.5.1.1, x64
VARIABLE_BOOTSERVICE_ACCESS, VARIABLE_RUNTIME_ACCESS = 0x2, 0x4   # §8.2.1


@attrs.frozen
class BootChoice:
    path: str
    data: bytes
    options: bytes          # LoadOptions (a Boot####'s OptionalData)
    how: str                # "Boot0001 (description)" or "removable media"


def parse_load_option(raw: bytes) -> tuple[int, str, bytes, bytes] | None:
    """(Attributes, Description, FilePathList, OptionalData) of an EFI_LOAD_OPTION, None if malformed."""
    if len(raw) < 8:
        return None
    attributes, list_length = struct.unpack_from("<IH", raw)
    end = 6
    while end + 2 <= len(raw) and raw[end:end + 2] != b"\0\0":
        end += 2
    if end + 2 > len(raw) or end + 2 + list_length > len(raw):
        return None
    description = raw[6:end].decode("utf-16-le", "replace")
    paths = raw[end + 2:end + 2 + list_length]
    return attributes, description, paths, raw[end + 2 + list_length:]


def _try(fw, path: bytes) -> tuple[str, bytes] | None:
    try:
        name, data = file_system.read_file(fw, file_system.file_path_name(fw, path))
        pe_loader.parse(data, name)
    except (EfiError, LoadError):
        return None
    return name, data


def choose(fw) -> BootChoice:
    """The image to boot; LoadError when neither a Boot#### option nor the removable path has one."""
    store = fw.variables.variables
    order = store.get((efi.GLOBAL_VARIABLE_GUID, "BootOrder"))
    tried = []
    if order is not None:
        raw = order[1]
        for (number,) in struct.iter_unpack("<H", raw[:len(raw) // 2 * 2]):
            name = f"Boot{number:04X}"
            option = store.get((efi.GLOBAL_VARIABLE_GUID, name))
            parsed = parse_load_option(option[1]) if option else None
            if parsed is None or not parsed[0] & LOAD_OPTION_ACTIVE:
                tried.append(f"{name}: {'missing' if option is None else 'inactive or malformed'}")
                continue
            found = _try(fw, parsed[2])
            if found is None:
                tried.append(f"{name}: no loadable image on the ESP")
                continue
            store[(efi.GLOBAL_VARIABLE_GUID, "BootCurrent")] = (
                VARIABLE_BOOTSERVICE_ACCESS | VARIABLE_RUNTIME_ACCESS, struct.pack("<H", number))
            return BootChoice(found[0], found[1], parsed[3], f"{name} ({parsed[1]})")
    try:
        name, data = file_system.read_file(fw, REMOVABLE_MEDIA_BOOT)
    except EfiError as exc:
        tried.append(f"{REMOVABLE_MEDIA_BOOT}: {exc.why or efi.status_name(exc.status)}")
        raise LoadError(f"--esp {fw.esp.volume.root}: nothing to boot ({'; '.join(tried)})") from None
    return BootChoice(name, data, b"", "removable media")
