"""Images in memory: loading a PE into pages with its LoadedImage protocol, the image services
(LoadImage, StartImage, Exit, UnloadImage), and the initrd offered through LoadFile2 on Linux's
LINUX_EFI_INITRD_MEDIA vendor device path (what the Linux EFI stub looks for first).
"""

from __future__ import annotations

import struct

import attrs

from hvsim.abi import efi
from hvsim.core.errors import GuestMemoryError
from hvsim.core.layout import FOUR_GIB

from . import file_system, pe_loader
from .calls import EfiError, service
from .protocols import device_path_node, file_path, read_device_path

PAGE = 0x1000
# Where each image type is placed (code; data is the same type's data), as edk2's image loader does:
# an application in LoaderCode, a boot-service driver in BootServicesCode, a runtime driver in
# RuntimeServicesCode (PE subsystems 10, 11, 12; UEFI 2.10 §7.4.1 LoadImage, §2.1.2-2.1.4).
TYPES = {10: (efi.LOADER_CODE, efi.LOADER_DATA), 11: (efi.BOOT_SERVICES_CODE, efi.BOOT_SERVICES_DATA),
         12: (efi.RUNTIME_SERVICES_CODE, efi.RUNTIME_SERVICES_DATA)}
INITRD_MEDIA_GUID = efi.guid_bytes("5568e427-68fc-4f3d-ac74-ca555231cc68")
# At most this many images loaded at once (the boot image included): LoadImage answers
# EFI_OUT_OF_RESOURCES beyond it, so an image that loads and starts itself recursively ends there
# instead of filling host memory with frames and copies.  hvsim's own limit; edk2 has none but RAM.
MAX_LOADED_IMAGES = 64


@attrs.define
class Image:
    handle: int
    name: str
    base: int
    pages: int
    entry: int
    protocol: int
    started: bool = False


def load(fw, layout: pe_loader.PeLayout, *, parent: int, options: bytes, path_name: str,
         device: tuple[int, bytes] | None = None) -> Image:
    """Place and relocate ``layout`` (EfiError on failure) and install its protocols.  ``device``:
    (DeviceHandle, its device path without the End node) the image came from; by default hvsim's
    boot device."""
    device_handle, device_path = device if device is not None else (fw.boot_device, fw.boot_device_path[:-4])
    code_type, data_type = TYPES[layout.subsystem]
    pages = layout.pages
    wanted = layout.image_base
    align = layout.alignment
    if wanted and wanted % align == 0 and fw.map.is_type(wanted, wanted + pages * PAGE, efi.CONVENTIONAL_MEMORY):
        base = fw.map.allocate(efi.ALLOCATE_ADDRESS, code_type, pages, wanted, by_allocate_pages=False)
    elif not layout.relocatable:
        raise EfiError(efi.LOAD_ERROR, f"{layout.name}: relocations are stripped and its ImageBase "
                                       f"{wanted:#x}+{pages * PAGE:#x} is not free memory aligned to {align:#x}")
    else:
        found = fw.map.find_free(pages, FOUR_GIB - 1, align)
        if found is None:
            raise EfiError(efi.OUT_OF_RESOURCES, f"{layout.name}: no {pages} free pages aligned to {align:#x}")
        base = fw.map.allocate(efi.ALLOCATE_ADDRESS, code_type, pages, found, by_allocate_pages=False)
    memory = fw.m.memory
    try:
        pe_loader.place(layout, base, memory.read, memory.write)
    except GuestMemoryError as exc:
        fw.map.convert(base, base + pages * PAGE, efi.CONVENTIONAL_MEMORY)
        raise EfiError(efi.LOAD_ERROR, f"{layout.name}: {exc}") from None
    options_at = fw.put(efi.BOOT_SERVICES_DATA, options, 8) if options else 0
    path = fw.put(efi.BOOT_SERVICES_DATA, file_path(path_name) + efi.END_DEVICE_PATH, 8)
    full_path = fw.put(efi.BOOT_SERVICES_DATA, device_path + file_path(path_name) + efi.END_DEVICE_PATH, 8)
    protocol = fw.alloc(efi.BOOT_SERVICES_DATA, efi.LOADED_IMAGE_SIZE, 8)
    fw.m.memory.write(protocol, struct.pack(
        efi.LOADED_IMAGE_FORMAT, efi.LOADED_IMAGE_REVISION, parent, fw.system_table, device_handle, path, 0,
        len(options), options_at, base, pages * PAGE, code_type, data_type, 0))
    handle = fw.db.install(fw, 0, efi.LOADED_IMAGE_PROTOCOL_GUID, protocol)
    fw.db.install(fw, handle, efi.LOADED_IMAGE_DEVICE_PATH_PROTOCOL_GUID, full_path)
    image = Image(handle, layout.name, base, pages, base + layout.entry_rva, protocol)
    fw.images[handle] = image
    return image


def unload(fw, image: Image) -> None:
    fw.map.convert(image.base, image.base + image.pages * PAGE, efi.CONVENTIONAL_MEMORY)
    fw.db.handles.pop(image.handle, None)
    del fw.images[image.handle]


def _image(ctx, name: str = "ImageHandle") -> Image:
    image = ctx.fw.images.get(ctx.args[name])
    if image is None:
        raise EfiError(efi.INVALID_PARAMETER, f"{ctx.args[name]:#x} is not an image handle")
    return image


@service("BS", "LoadImage", "BootPolicy", "ParentImageHandle", "DevicePath", "SourceBuffer", "SourceSize", "ImageHandle")
def load_image(ctx):
    a = ctx.args
    out = ctx.pointer("ImageHandle")
    _image(ctx, "ParentImageHandle")
    if len(ctx.fw.images) >= MAX_LOADED_IMAGES:
        raise EfiError(efi.OUT_OF_RESOURCES, f"{len(ctx.fw.images)} images are loaded, the most this firmware holds")
    device = None
    if a["SourceBuffer"] == 0:
        if a["DevicePath"] == 0:
            raise EfiError(efi.NOT_FOUND, "neither SourceBuffer nor DevicePath")
        name = file_system.file_path_name(ctx.fw, read_device_path(ctx, a["DevicePath"]))
        ctx.record["file"] = name
        path_name, data = file_system.read_file(ctx.fw, name)
        device = (ctx.fw.esp.handle, ctx.fw.esp.device_path)
    else:
        if a["SourceSize"] == 0 or a["SourceSize"] > (256 << 20):
            raise EfiError(efi.LOAD_ERROR, f"SourceSize {a['SourceSize']:#x}")
        data = ctx.read(a["SourceBuffer"], a["SourceSize"])
        path_name = f"\\image{len(ctx.fw.images)}.efi"
    try:
        layout = pe_loader.parse(data, path_name if device else f"image at {a['SourceBuffer']:#x}")
    except pe_loader.PeRefused as exc:
        raise EfiError(efi.UNSUPPORTED if exc.unsupported else efi.LOAD_ERROR, str(exc)) from None
    image = load(ctx.fw, layout, parent=a["ParentImageHandle"], options=b"", path_name=path_name, device=device)
    ctx.write_u64(out, image.handle)
    ctx.record.update(handle=image.handle, base=image.base)
    return efi.SUCCESS


@service("BS", "StartImage", "ImageHandle", "ExitDataSize", "ExitData")
def start_image(ctx):
    image = _image(ctx)
    if image.started:
        raise EfiError(efi.INVALID_PARAMETER, "the image was already started")
    image.started = True
    for name in ("ExitDataSize", "ExitData"):
        if ctx.args[name]:
            ctx.write_u64(ctx.args[name], 0)
    fw = ctx.fw

    def finished(status: int) -> int:
        if image.handle in fw.images:
            unload(fw, image)
        return status

    fw.call_guest([(image.entry, (image.handle, fw.system_table))], finished, image=image.handle)
    ctx.record["result"] = f"entering {image.entry:#x}"
    return None


@service("BS", "Exit", "ImageHandle", "ExitStatus", "ExitDataSize", "ExitData")
def exit_image(ctx):
    fw, a = ctx.fw, ctx.args
    if a["ImageHandle"] == fw.main_image and not any(f.image == fw.main_image for f in fw.frames):
        ctx.after_call = lambda: fw.image_finished(a["ExitStatus"], "called Exit")
        ctx.record["result"] = "run ends"
        return None
    if not fw.unwind_to(a["ImageHandle"], a["ExitStatus"]):
        raise EfiError(efi.INVALID_PARAMETER, "ImageHandle is not a started image")
    ctx.record["result"] = f"back to StartImage with {efi.status_name(a['ExitStatus'])}"
    return None


@service("BS", "UnloadImage", "ImageHandle")
def unload_image(ctx):
    image = _image(ctx)
    if image.started:
        raise EfiError(efi.UNSUPPORTED, "the image is running and has no Unload function")
    unload(ctx.fw, image)
    return efi.SUCCESS


# -- the initrd ---------------------------------------------------------------------------------------
def install_initrd(fw, data: bytes) -> None:
    path = device_path_node(efi.MEDIA_DEVICE_PATH, efi.MEDIA_VENDOR_DP, INITRD_MEDIA_GUID) + efi.END_DEVICE_PATH
    interface = fw.put(efi.BOOT_SERVICES_DATA, struct.pack("<Q", fw.stubs[("LoadFile2", "LoadFile")]), 8)
    handle = fw.db.install(fw, 0, efi.DEVICE_PATH_PROTOCOL_GUID, fw.put(efi.BOOT_SERVICES_DATA, path, 8))
    fw.db.install(fw, handle, efi.LOAD_FILE2_PROTOCOL_GUID, interface)
    fw.load_file2 = (interface, data)


@service("LoadFile2", "LoadFile", "This", "FilePath", "BootPolicy", "BufferSize", "Buffer")
def load_file(ctx):
    a = ctx.args
    if ctx.fw.load_file2 is None or a["This"] != ctx.fw.load_file2[0]:
        raise EfiError(efi.INVALID_PARAMETER, "This is not the initrd's LoadFile2 protocol")
    if a["BootPolicy"] & 0xFF:
        raise EfiError(efi.UNSUPPORTED, "LoadFile2 does not take BootPolicy TRUE")
    size_ptr = ctx.pointer("BufferSize")
    data = ctx.fw.load_file2[1]
    have = ctx.read_u64(size_ptr)
    ctx.write_u64(size_ptr, len(data))
    if a["Buffer"] == 0 or have < len(data):
        return efi.BUFFER_TOO_SMALL
    try:
        ctx.write(a["Buffer"], data)
    except GuestMemoryError as exc:
        raise EfiError(efi.INVALID_PARAMETER, str(exc)) from None
    return efi.SUCCESS
