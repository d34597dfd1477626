"""efi ``--esp DIR``: an EFI application booted from the ESP as removable media opens the volume
through SIMPLE_FILE_SYSTEM and reads, lists, writes and deletes files with EFI_FILE_PROTOCOL;
LoadImage by device path; Boot####/BootOrder; bad names refused without touching the host outside
DIR.  Also PE placement: SectionAlignment above 4 KiB and memory types by image type."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from hvsim import MachineConfig
from hvsim.abi import efi
from hvsim.api import Run

from efi_apps import BS, IMAGE_HANDLE, bs, call_script, efi_app, interface_at, scratch, scratch_value

from hvsim_efi import esp as fat
from hvsim_efi import file_system

SFS_GUID_AT, INFO_GUID_AT, FS_INFO_GUID_AT = 0x100, 0x110, 0x120
NAMES_AT = 0x200            # UTF-16 names, 0x100 bytes apart
SIZES_AT = 0x80             # u64 in/out sizes, 8 bytes apart
BUFFER_AT = 0x1000
SFS, ROOT, FILE, FILE2 = 8, 16, 24, 32       # interface slots in the scratch area
OK = "EFI_SUCCESS"


def slot(name: str) -> int:
    return 8 + 8 * file_system.FILE_SERVICES.index(name)


def name(k: int) -> int:
    return scratch(NAMES_AT + 0x100 * k)


def size(k: int) -> int:
    return scratch(SIZES_AT + 8 * k)


def data_block(names: list[str], sizes: list[int], extra: dict[int, bytes] | None = None) -> bytes:
    data = bytearray(0x3000)
    data[SFS_GUID_AT:SFS_GUID_AT + 16] = file_system.SIMPLE_FILE_SYSTEM_PROTOCOL_GUID
    data[INFO_GUID_AT:INFO_GUID_AT + 16] = fat.FILE_INFO_GUID
    data[FS_INFO_GUID_AT:FS_INFO_GUID_AT + 16] = fat.FILE_SYSTEM_INFO_GUID
    for k, text in enumerate(names):
        raw = (text + "\0").encode("utf-16-le")
        assert len(raw) <= 0x100 or k == len(names) - 1
        data[NAMES_AT + 0x100 * k:NAMES_AT + 0x100 * k + len(raw)] = raw
    for k, value in enumerate(sizes):
        struct.pack_into("<Q", data, SIZES_AT + 8 * k, value)
    for at, raw in (extra or {}).items():
        data[at:at + len(raw)] = raw
    return bytes(data)


OPEN_ROOT = [
    (BS, bs("LocateProtocol"), scratch(SFS_GUID_AT), 0, scratch(SFS)),
    (interface_at(SFS), 8, "THIS", scratch(ROOT)),
]


def boot_from_esp(tmp_path, calls, data: bytes, *, writable: bool = False, efi_vars=None):
    """The calls as an app at \\EFI\\BOOT\\BOOTX64.EFI of an ESP in ``tmp_path/esp``, booted with no kernel."""
    from efi_apps import THIS
    calls = [tuple(THIS if a == "THIS" else a for a in c) for c in calls]
    app, symbols = call_script(calls, data=data)
    root = tmp_path / "esp"
    (root / "EFI" / "BOOT").mkdir(parents=True, exist_ok=True)
    (root / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(app)
    options = {"esp": str(root), "esp_writable": writable, "kernel": None}
    if efi_vars:
        options["efi_vars"] = str(efi_vars)
    prepared = Run("efi", None, MachineConfig(), options=options)
    result = prepared.execute()
    traced = [e for e in result.events if e.kind == "Call"]
    memory = prepared.machine.memory

    def read(offset, n):
        return memory.read(symbols["scratch"] + offset, n)
    read.statuses = lambda: [memory.read_u64(symbols["results"] + 8 * k) for k in range(len(calls))]
    return prepared, result, traced, read


def results(traced, first: int = 0):
    return [c.result for c in traced if not c.name.startswith(("BS.LocateProtocol",))][first:]


def esp_tree(tmp_path):
    root = tmp_path / "esp"
    (root / "docs").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello world")
    return root


def test_removable_media_boot_reads_a_file_gets_its_info_and_lists_the_root(tmp_path):
    esp_tree(tmp_path)
    data = data_block(["\\HELLO.TXT", "docs"], [0x100, 0x200, 0x200, 0x200, 0x200, 0x200, 8, 0x200])
    prepared, result, traced, read = boot_from_esp(tmp_path, OPEN_ROOT + [
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(0), fat.FILE_MODE_READ, 0),
        (interface_at(FILE), slot("Read"), "THIS", size(0), scratch(BUFFER_AT)),
        (interface_at(FILE), slot("GetInfo"), "THIS", scratch(INFO_GUID_AT), size(1), scratch(0x1400)),
        (interface_at(FILE), slot("Close"), "THIS"),
        (interface_at(ROOT), slot("Read"), "THIS", size(2), scratch(0x1600)),
        (interface_at(ROOT), slot("Read"), "THIS", size(3), scratch(0x1800)),
        (interface_at(ROOT), slot("Read"), "THIS", size(4), scratch(0x1a00)),
        (interface_at(ROOT), slot("Read"), "THIS", size(5), scratch(0x1c00)),
        (interface_at(ROOT), slot("SetPosition"), "THIS", 0),
        (interface_at(ROOT), slot("Read"), "THIS", size(6), scratch(0x1e00)),     # 8 bytes: too small
        (interface_at(ROOT), slot("GetInfo"), "THIS", scratch(FS_INFO_GUID_AT), size(7), scratch(0x2000)),
    ], data)
    assert result.exit_status == 0, result.stop.describe()
    assert results(traced) == [OK] * 10 + ["EFI_BUFFER_TOO_SMALL", OK]
    assert struct.unpack("<Q", read(SIZES_AT + 8 * 6, 8))[0] == fat.SIZE_OF_FILE_INFO + 2 * len("EFI\0")
    assert read(BUFFER_AT, 11) == b"hello world" and struct.unpack("<Q", read(SIZES_AT, 8))[0] == 11
    info = read(0x1400, 0x100)
    struct_size, file_size, physical = struct.unpack_from("<QQQ", info)
    assert (file_size, physical) == (11, fat.CLUSTER)
    assert struct.unpack_from("<Q", info, 0x48)[0] == fat.FILE_ARCHIVE
    assert info[0x50:struct_size].decode("utf-16-le") == "hello.txt\0"

    def entry(at):
        raw = read(at, 0x200)
        return raw[0x50:struct.unpack_from("<Q", raw)[0] - 2].decode("utf-16-le"), struct.unpack_from("<Q", raw, 0x48)[0]
    assert [entry(a) for a in (0x1600, 0x1800, 0x1a00)] == [
        ("EFI", fat.FILE_DIRECTORY), ("docs", fat.FILE_DIRECTORY), ("hello.txt", fat.FILE_ARCHIVE)]
    assert struct.unpack("<Q", read(SIZES_AT + 8 * 5, 8))[0] == 0        # the end: BufferSize 0
    fs_info = read(0x2000, 0x100)
    assert fs_info[8] == 1 and struct.unpack_from("<I", fs_info, 0x20)[0] == fat.CLUSTER   # ReadOnly
    assert fs_info[0x24:0x24 + 2 * len(fat.DEFAULT_LABEL)].decode("utf-16-le") == fat.DEFAULT_LABEL
    fw = prepared.machine.plugin_state["efi"]
    assert len(fw.esp.files) == 1              # the root stays open, the file was closed
    loaded = fw.images[fw.main_image].protocol
    device_handle, file_path = struct.unpack("<QQ", prepared.machine.memory.read(loaded + 0x18, 16))
    assert device_handle == fw.esp.handle
    node = prepared.machine.memory.read(file_path, 4 + 2 * 22)
    assert node[4:].decode("utf-16-le") == "\\EFI\\BOOT\\BOOTX64.EFI\0"
    assert fw.db.handles[fw.esp.handle][efi.DEVICE_PATH_PROTOCOL_GUID]


def test_read_only_esp_refuses_writes_and_bad_names_without_touching_the_host_outside(tmp_path):
    root = esp_tree(tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"host secret")
    (root / "out").symlink_to(outside)
    (root / "inside").symlink_to(root / "hello.txt")
    long_name = "a" * 256
    data = data_block(["hello.txt", "new.txt", "..\\secret.txt", "\\docs\\..\\..\\secret.txt", "/etc/passwd",
                       "out", "inside", "C:\\x", long_name], [0x100])
    opened = []

    def audit(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes)) and "secret" in str(args[0]):
            opened.append(args)
    sys.addaudithook(audit)
    prepared, result, traced, read = boot_from_esp(tmp_path, OPEN_ROOT + [
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(0), fat.FILE_MODE_READ | fat.FILE_MODE_WRITE, 0),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(1), fat.OPEN_MODES[2], 0),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(0), fat.FILE_MODE_WRITE, 0),   # bad mode
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(2), fat.FILE_MODE_READ, 0),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(3), fat.FILE_MODE_READ, 0),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(4), fat.FILE_MODE_READ, 0),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(5), fat.FILE_MODE_READ, 0),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(7), fat.FILE_MODE_READ, 0),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(8), fat.FILE_MODE_READ, 0),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(6), fat.FILE_MODE_READ, 0),   # inside: fine
        (interface_at(FILE), slot("Write"), "THIS", size(0), scratch(BUFFER_AT)),
        (interface_at(FILE), slot("Delete"), "THIS"),
    ], data)
    opened_during_run = list(opened)
    opened.clear()
    assert result.exit_status == 0, result.stop.describe()
    assert results(traced) == ["EFI_SUCCESS", "EFI_WRITE_PROTECTED", "EFI_WRITE_PROTECTED", "EFI_INVALID_PARAMETER",
                               "EFI_NOT_FOUND", "EFI_NOT_FOUND", "EFI_INVALID_PARAMETER", "EFI_ACCESS_DENIED",
                               "EFI_INVALID_PARAMETER", "EFI_INVALID_PARAMETER", OK, "EFI_WRITE_PROTECTED",
                               "EFI_WARN_DELETE_FAILURE"]
    errors = [c.args.get("error", "") for c in traced[2:]]
    assert "outside the ESP" in errors[6] and "255" in errors[8]
    assert opened_during_run == []
    assert outside.read_bytes() == b"host secret" and (root / "hello.txt").read_bytes() == b"hello world"
    assert not (root / "new.txt").exists()


def test_writable_esp_creates_writes_reads_back_renames_and_deletes(tmp_path):
    root = esp_tree(tmp_path)
    new_info = struct.pack(fat.FILE_INFO_HEADER, fat.SIZE_OF_FILE_INFO + 24, 4, 0, bytes(16), bytes(16), bytes(16),
                           fat.FILE_ARCHIVE) + "renamed.txt\0".encode("utf-16-le")
    label = "NEWLABEL\0".encode("utf-16-le")
    data = data_block(["\\docs\\notes.txt", "sub", "gone.txt", "\\docs\\renamed.txt"], [10, 0x100, len(new_info), 0x200, 3],
                      {BUFFER_AT: b"0123456789", 0x1800: new_info, 0x1900: label,
                       0x130: fat.VOLUME_LABEL_GUID})
    create = fat.OPEN_MODES[2]
    prepared, result, traced, read = boot_from_esp(tmp_path, OPEN_ROOT + [
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(0), create, 0),
        (interface_at(FILE), slot("Write"), "THIS", size(0), scratch(BUFFER_AT)),
        (interface_at(FILE), slot("SetPosition"), "THIS", 2),
        (interface_at(FILE), slot("Read"), "THIS", size(1), scratch(0x1400)),
        (interface_at(FILE), slot("GetPosition"), "THIS", scratch(0x60)),
        (interface_at(FILE), slot("SetInfo"), "THIS", scratch(INFO_GUID_AT), len(new_info), scratch(0x1800)),
        (interface_at(FILE), slot("Flush"), "THIS"),
        (interface_at(FILE), slot("Close"), "THIS"),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE), name(1), create, fat.FILE_DIRECTORY),
        (interface_at(FILE), slot("Open"), "THIS", scratch(FILE2), name(2), create, 0),
        (interface_at(FILE2), slot("Delete"), "THIS"),
        (interface_at(ROOT), slot("Open"), "THIS", scratch(40), name(0), fat.FILE_MODE_READ, 0),     # renamed
        (interface_at(ROOT), slot("Open"), "THIS", scratch(FILE2), name(3), fat.FILE_MODE_READ, 0),
        (interface_at(FILE2), slot("Write"), "THIS", size(4), scratch(BUFFER_AT)),     # opened read-only
        (interface_at(FILE), slot("Write"), "THIS", size(4), scratch(BUFFER_AT)),      # a directory
        (interface_at(ROOT), slot("SetInfo"), "THIS", scratch(0x130), len(label), scratch(0x1900)),
    ], data, writable=True)
    assert result.exit_status == 0, result.stop.describe()
    got = results(traced)
    assert got == [OK] * 12 + ["EFI_NOT_FOUND", OK, "EFI_ACCESS_DENIED", "EFI_UNSUPPORTED", OK], got
    assert read(0x1400, 8) == b"23456789" and struct.unpack("<Q", read(0x60, 8))[0] == 10
    assert (root / "docs" / "renamed.txt").read_bytes() == b"0123"          # renamed and cut to 4 bytes
    assert not (root / "docs" / "notes.txt").exists()
    assert (root / "sub").is_dir() and not (root / "sub" / "gone.txt").exists()
    assert prepared.machine.plugin_state["efi"].esp.volume.label == "NEWLABEL"


def test_load_image_by_device_path_from_the_esp_and_not_from_another_device(tmp_path):
    root = tmp_path / "esp"
    (root / "apps").mkdir(parents=True)
    (root / "apps" / "child.efi").write_bytes(efi_app("    mov $0x77, %eax\n    jmp done\n", image_base=0x20000000))
    short_form = (file_system.harddrive_node() + _file_node("\\apps") + _file_node("child.efi") + efi.END_DEVICE_PATH)
    other = bytes([1, 4, 20, 0]) + bytes(16) + _file_node("\\apps\\child.efi") + efi.END_DEVICE_PATH
    directory = file_system.harddrive_node() + _file_node("\\apps") + efi.END_DEVICE_PATH
    data = data_block([], [], {0x300: short_form, 0x400: other, 0x500: directory})
    prepared, result, traced, read = boot_from_esp(tmp_path, [
        (BS, bs("LoadImage"), 0, IMAGE_HANDLE, scratch(0x300), 0, 0, scratch(0)),
        (BS, bs("StartImage"), scratch_value(0), 0, 0),
        (BS, bs("LoadImage"), 0, IMAGE_HANDLE, scratch(0x400), 0, 0, scratch(8)),
        (BS, bs("LoadImage"), 0, IMAGE_HANDLE, scratch(0x500), 0, 0, scratch(8)),
    ], data)
    assert result.exit_status == 0, result.stop.describe()
    assert read.statuses() == [efi.SUCCESS, 0x77, efi.NOT_FOUND, efi.NOT_FOUND]
    assert traced[0].args["file"] == "\\apps\\child.efi"


def _file_node(text: str) -> bytes:
    body = (text + "\0").encode("utf-16-le")
    return struct.pack("<BBH", 4, 4, 4 + len(body)) + body


def test_boot_order_picks_the_first_active_option_and_sets_boot_current(tmp_path):
    root = tmp_path / "esp"
    (root / "apps").mkdir(parents=True)
    (root / "apps" / "chosen.efi").write_bytes(efi_app("    mov $0x42, %eax\n    jmp done\n"))

    def load_option(attributes, description, path, optional=b""):
        paths = file_system.harddrive_node() + _file_node(path) + efi.END_DEVICE_PATH
        return (struct.pack("<IH", attributes, len(paths)) + (description + "\0").encode("utf-16-le") + paths
                + optional)
    guid = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    variables = {"variables": [
        {"guid": guid, "name": "BootOrder", "attributes": 7, "data": struct.pack("<HHH", 3, 1, 2).hex()},
        {"guid": guid, "name": "Boot0001", "attributes": 7, "data": load_option(0, "inactive", "\\apps\\chosen.efi").hex()},
        {"guid": guid, "name": "Boot0002", "attributes": 7,
         "data": load_option(1, "chosen", "\\APPS\\CHOSEN.EFI", "x\0".encode("utf-16-le")).hex()},
    ]}
    store = tmp_path / "vars.json"
    store.write_text(json.dumps(variables))
    prepared, result, traced, _ = boot_from_esp(tmp_path, [], b"", efi_vars=store)
    assert result.stop.code == 0x42, result.stop.describe()
    assert "Boot0002 (chosen)" in prepared.entry
    fw = prepared.machine.plugin_state["efi"]
    assert fw.variables.variables[(efi.GLOBAL_VARIABLE_GUID, "BootCurrent")][1] == struct.pack("<H", 2)


def test_no_bootable_file_on_the_esp_is_a_load_error(tmp_path):
    from hvsim.core.errors import LoadError
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="nothing to boot"):
        Run("efi", None, MachineConfig(), options={"esp": str(tmp_path / "empty"), "kernel": None})


# -- PE placement ------------------------------------------------------------------------------------
def test_two_mib_section_alignment_places_the_image_at_a_two_mib_boundary():
    app = efi_app("    lea _start(%rip), %rax\n    jmp done\n", image_base=0x10100000, text_rva=0x200000,
                  section_alignment=0x200000, relocate=())
    prepared = Run("efi", app, MachineConfig())
    fw = prepared.machine.plugin_state["efi"]
    base = fw.images[fw.main_image].base
    assert base % 0x200000 == 0 and base != 0x10100000
    result = prepared.execute()
    assert "returned from its entry point" in result.stop.describe()


@pytest.mark.parametrize("subsystem, code_type", [(10, efi.LOADER_CODE), (11, efi.BOOT_SERVICES_CODE),
                                                  (12, efi.RUNTIME_SERVICES_CODE)])
def test_image_types_are_placed_in_their_memory_types(subsystem, code_type):
    app = efi_app("    xor %eax, %eax\n    jmp done\n", subsystem=subsystem)
    prepared = Run("efi", app, MachineConfig())
    fw = prepared.machine.plugin_state["efi"]
    assert fw.map.type_at(fw.images[fw.main_image].base) == code_type
