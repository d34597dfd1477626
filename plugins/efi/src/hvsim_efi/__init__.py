"""hvsim environment ``efi``: UEFI firmware for x64 PE32+ applications and the Linux EFI stub.

The image is loaded as edk2 loads a boot option (``pe_loader``): sections at their RVAs, BSS
zero-filled, relocated when it cannot have its ImageBase, as LoaderCode.  It is entered in 64-bit
long mode with all RAM identity-mapped (2 MiB pages), CR0 0x80010033, CR4 0x620, EFER 0xd00, a GDT
with 64-bit code at 0x38 and data at 0x30, a 256-entry IDT whose exception gates stop the run with
the faulting instruction and whose gate 0x68 takes the firmware's 10 ms timer tick (PIT IRQ0
through the 8259s, as OVMF: ``tick.py``), at TPL_APPLICATION with interrupts on, and RSP = 8 mod
16 with shadow space and a return address that ends the run with the image's status.

- ``--entry pe`` (default): ``AddressOfEntryPoint(ImageHandle = RCX, SystemTable = RDX)``; the
  command line is the LoadedImage's LoadOptions (UTF-16, NUL-terminated).
- ``--entry handover`` (bzImages with XLF_EFI_HANDOVER_64): the 64-bit EFI handover entry at
  startup_32 + ``handover_offset`` + 0x200, with RDI = ImageHandle, RSI = SystemTable, RDX = a
  boot_params page holding the kernel's setup header and the command line (as GRUB does).

- ``--esp DIR`` (``esp``, ``file_system``): DIR served read-only (``--esp-writable``: writable) as
  the EFI system partition, a SIMPLE_FILE_SYSTEM handle with a hard-drive device path that is the
  DeviceHandle of the images loaded; with no kernel named (``kernel`` None in the options) the
  boot manager (``boot_manager``) boots a Boot#### option of BootOrder or \\EFI\\BOOT\\BOOTX64.EFI.
  The disk holding it (a GPT with the ESP as a FAT32 volume, ``gpt_disk``, ``fat_image``) has
  BLOCK_IO on the boot device and on the ESP (``block_io``): loaders with their own file system
  drivers, such as GRUB, read it.  The firmware's flash below 4 GiB reads as erased (``flash``).
- ``--secure-boot off|setup`` (``secure_boot``): Secure Boot's variables with no keys enrolled.

Firmware: ``firmware`` (tables, memory, call dispatch), ``boot_services``, ``protocols``,
``images``, ``events``, ``console``, ``runtime_services``, ``variables``.  The PC devices and the
ACPI tables of the other environments are there too and stay after ExitBootServices; as under
OVMF the tables are in ACPIReclaimMemory and the FACS in ACPIMemoryNVS that the firmware
allocated, the RSDP reached through the configuration table only (``--legacy-bios-area``: a copy
at 0xE0000 too).
"""

from __future__ import annotations

from pathlib import Path

from hvsim import Acceptance, Environment, InherentDifference, hookimpl
from hvsim.abi import boot_params
from hvsim.abi import efi
from hvsim.abi import linux_boot as lb
from hvsim.core.cpu import RFLAGS_RESERVED, EntryState
from hvsim.core.devices.keyboard import parse_keys
from hvsim.core.errors import LoadError, UsageError
from hvsim.core.layout import FOUR_GIB
from hvsim.image import load_image

# Importing the service modules registers their services.
from . import boot_services, events, images, protocols, runtime_services, variables  # noqa: F401
from . import boot_manager, console, esp, pe_loader, secure_boot
from .calls import EfiError
from .firmware import ENTRY_RETURNED, GDT_CODE64, GDT_DATA64, IDT_VECTORS, RFLAGS_IF, Firmware
from .memory_map import DESCRIPTOR_SIZE

ENV = "efi"
CR0 = 0x80010033            # PG | WP | NE | ET | MP | PE
CR4 = 0x620                 # OSXMMEXCPT | OSFXSR | PAE
EFER = 0xD00                # NXE | LMA | LME
LINUX_LOAD_ADDRESS = 16 << 20          # LOAD_PHYSICAL_ADDR: where the stub decompresses the kernel
LINUX_ALIGN = 2 << 20
FRAMEBUFFER = (800, 600)
BOOT_PATH = "\\EFI\\BOOT\\BOOTX64.EFI"


@hookimpl
def hvsim_environments():
    return [Environment(ENV, "UEFI firmware: PE32+ EFI applications, the Linux EFI stub (PE or handover entry)",
                        default_image="efi")]


@hookimpl
def hvsim_inherent_differences(env):
    if env != ENV:
        return None
    return [
        InherentDifference("entry", "an EFI application is entered at its PE entry point (or the handover entry)"),
        InherentDifference("memmap", "the firmware keeps its runtime services code and data reserved, its ACPI "
                                     "tables in ACPI reclaim and the FACS in ACPI NVS memory it allocated from "
                                     "RAM, and edk2's memory-type bins show their free pages as their types (the "
                                     "same ranges from boot to boot); below 1 MiB the map is OVMF's: all of "
                                     "[0, 0xA0000) is RAM (no EBDA) and 0xA0000-0xFFFFF is not described (no "
                                     "BIOS area: the RSDP is reached through the configuration table)"),
        InherentDifference("rsdp", "a UEFI firmware's RSDP is in the ACPI reclaim memory it allocated, reached "
                                   "through the configuration table, not in the BIOS area at 0xE0000 (as OVMF)"),
        InherentDifference("module_addresses", "the initrd is where the application's own allocation put it"),
        InherentDifference("console_channels", "an EFI application writes through ConOut before it owns the UART"),
        InherentDifference("stop_detail", "an EFI application powers off through ResetSystem"),
        InherentDifference("calls", "an EFI application calls boot and runtime services"),
        InherentDifference("userspace_memmap", "the firmware keeps its runtime services memory reserved and "
                                               "its ACPI tables in ACPI data and NVS ranges of RAM "
                                               "(/sys/firmware/memmap is the map the kernel got)"),
        InherentDifference("userspace_iomem", "the firmware keeps its runtime services memory reserved and "
                                              "its ACPI tables in ACPI data and NVS ranges of RAM"),
        InherentDifference("userspace_efi", "an EFI boot leaves /sys/firmware/efi and its runtime services"),
        InherentDifference("userspace_dmi", "the firmware publishes SMBIOS tables, which Linux shows in "
                                            "/sys/firmware/dmi"),
        InherentDifference("userspace_boot_params", "the EFI stub builds boot_params itself (no setup header "
                                                    "version from a boot loader)"),
    ]


@hookimpl
def hvsim_add_options(parser):
    group = parser.add_argument_group("efi environment")
    group.add_argument("--entry", choices=("pe", "handover"), default=None,
                       help="efi: enter at the PE entry point (default) or a bzImage's EFI handover entry")
    group.add_argument("--framebuffer-png", default=None,
                       help="efi: offer Graphics Output (800x600) and save its framebuffer as this PNG")
    group.add_argument("--esp", default=None, metavar="DIR",
                       help="efi: serve DIR as the EFI system partition (read-only); with no kernel, boot what "
                            "its Boot####/BootOrder variables or \\EFI\\BOOT\\BOOTX64.EFI name")
    group.add_argument("--esp-writable", action="store_true", default=False,
                       help="efi: let the guest create, write and delete files on the --esp directory")
    group.add_argument("--legacy-bios-area", action="store_true", default=False,
                       help="efi: also put a copy of the RSDP at 0xE0000, where a BIOS's is (as a CSM does); "
                            "by default it is reached through the configuration table only, as under OVMF")
    group.add_argument("--efi-vars", default=None,
                       help="efi: keep non-volatile EFI variables in this JSON file (read at start, written on change)")
    group.add_argument("--secure-boot", choices=secure_boot.MODES, default=None,
                       help="efi: a firmware with Secure Boot support and no keys enrolled, so nothing is verified "
                            "(by default there is no Secure Boot support: none of its variables exists).  off: as "
                            "OVMF gives it, SetupMode=1, SecureBoot=0, SignatureSupport, VendorKeys=1, no PK/KEK/"
                            "db/dbx; setup: the UEFI spec's Setup Mode, the same plus AuditMode=0, DeployedMode=0.  "
                            "These variables are read-only (EFI_WRITE_PROTECTED); enrolling keys is not modelled")


@hookimpl
def hvsim_accepts(env, image):
    if env != ENV:
        return None
    if image.pe is None:
        return Acceptance.no(f"{image.name}: no PE32+ header (an EFI image is a PE32+ file)")
    try:
        layout = pe_loader.parse(image.data, image.name)
    except LoadError as exc:
        return Acceptance.no(str(exc))
    how = f"pe: {layout.name} entered at RVA {layout.entry_rva:#x}"
    if _handover(image) is not None:
        how += "; --entry handover for the EFI handover entry"
    return Acceptance.yes(how)


def _handover(image):
    """The 64-bit EFI handover entry from the headers (``image.entry`` would decompress the payload)."""
    return next((e for e in image.header_entries if e.kind == "efi_handover64"), None)


def _options(options, config) -> dict:
    keys = parse_keys(config.keys)          # ConIn's until ExitBootServices, then the PS/2 keyboard's
    png = options.get("framebuffer_png")
    if png and not Path(png).resolve().parent.is_dir():
        raise UsageError(f"--framebuffer-png {png}: no such directory")
    esp_volume = None
    if options.get("esp"):
        esp_volume = esp.EspVolume(options["esp"], writable=bool(options.get("esp_writable")))
    elif options.get("esp_writable"):
        raise UsageError("--esp-writable needs --esp DIR")
    return {"keys": keys, "framebuffer": (*FRAMEBUFFER, png) if png else None,
            "variables": variables.VariableStore(options.get("efi_vars"), options.get("secure_boot")), "esp_volume": esp_volume,
            "legacy_bios_area": bool(options.get("legacy_bios_area"))}


def _boots_from_esp(options) -> bool:
    """``--esp`` with no kernel named: the CLI passes ``kernel`` None; API callers ask the same
    way, with ``options={"esp": DIR, "kernel": None}``."""
    return bool(options.get("esp")) and "kernel" in options and options["kernel"] is None


@hookimpl
def hvsim_setup(machine, image, config, options):
    entry = options.get("entry") or "pe"
    try:
        cmdline = config.cmdline_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise LoadError("efi: the command line is not UTF-8, so it cannot be given as UTF-16 LoadOptions") from None
    fw = Firmware(machine, **_options(options, config))
    machine.attach_pc_devices(acpi_placement=fw.place_acpi, type_keys=False)
    machine.plugin_state[ENV] = fw
    fw.build()
    load_options = (cmdline + "\0").encode("utf-16-le") if cmdline else b""
    path_name, device, booted = BOOT_PATH, None, ""
    if fw.esp is not None:
        device = (fw.esp.handle, fw.esp.device_path)
    if _boots_from_esp(options):
        choice = boot_manager.choose(fw)
        image = load_image(choice.data, name=choice.path)
        path_name, booted = choice.path, f" from the ESP ({choice.how})"
        load_options = choice.options or load_options
    layout = pe_loader.parse(image.data, image.name)
    if entry == "handover" and _handover(image) is None:
        raise LoadError(f"{image.name}: --entry handover needs a bzImage with XLF_EFI_HANDOVER_64")
    try:
        image_record = images.load(fw, layout, parent=0, options=load_options, path_name=path_name, device=device)
    except EfiError as exc:
        raise LoadError(exc.why) from None
    fw.main_image = image_record.handle
    initrd = config.initrd_bytes()
    if initrd is not None:
        images.install_initrd(fw, initrd)
    if image.bzimage is not None:
        _check_linux_slot(fw, image)
    rsp = fw.stack_top - 0x38                      # = 8 mod 16: a call's return address, shadow space above
    machine.memory.write_u64(rsp, fw.special_stubs[ENTRY_RETURNED])
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        machine.set_reg(name, 0)
    if entry == "pe":
        rip = image_record.entry
        machine.set_reg("rcx", image_record.handle)
        machine.set_reg("rdx", fw.system_table)
        text = f"pe: {image.name}{booted} at {image_record.base:#x}, entry {rip:#x}"
    else:
        rip = image_record.base + image.bzimage.pm_offset + _handover(image).address
        machine.set_reg("rdi", image_record.handle)
        machine.set_reg("rsi", fw.system_table)
        machine.set_reg("rdx", _handover_boot_params(fw, image, config))
        text = f"handover: {image.name} at {image_record.base:#x}, entry {rip:#x}"
    fw.protect_data()
    machine.start(EntryState(rip=rip, cr0=CR0, cr3=fw.page_tables.pml4, cr4=CR4, efer=EFER,
                             cs=GDT_CODE64, ds=GDT_DATA64, gdt=(fw.gdt, 8 * 8 - 1), idt=(fw.idt, IDT_VECTORS * 16 - 1),
                             rsp=rsp, rflags=RFLAGS_RESERVED | RFLAGS_IF))
    return text


def _check_linux_slot(fw, image) -> None:
    """The Linux stub decompresses to the lowest 2 MiB-aligned ConventionalMemory slot at or above
    16 MiB and, finding none, corrupts memory silently (linux-efi-on-unicorn.md §3): refuse first."""
    size = -(-max(image.bzimage.header.init_size or 0, 1) // LINUX_ALIGN) * LINUX_ALIGN
    if not fw.map.is_type(LINUX_LOAD_ADDRESS, LINUX_LOAD_ADDRESS + size, efi.CONVENTIONAL_MEMORY):
        raise LoadError(f"{image.name}: the Linux EFI stub needs {size >> 20} MiB of free memory at 16 MiB "
                        f"(init_size); {fw.m.config.memory >> 20} MiB of RAM with the firmware's own does not leave it")


def _handover_boot_params(fw, image, config) -> int:
    cmdline = config.cmdline_bytes() + b"\0"
    page = fw.map.allocate(efi.ALLOCATE_MAX_ADDRESS, efi.LOADER_DATA, 1 + -(-len(cmdline) // 0x1000),
                           FOUR_GIB - 1, by_allocate_pages=False)
    fw.m.memory.write(page + 0x1000, cmdline)
    fw.m.memory.write(page, boot_params.zero_page(header_bytes=image.bzimage.header_bytes, cmd_line_ptr=page + 0x1000,
                                                  ramdisk=None, e820=(), rsdp=None,
                                                  type_of_loader=lb.TYPE_OF_LOADER_UNDEFINED))
    return page


# -- run time -------------------------------------------------------------------------------------------
@hookimpl
def hvsim_finish(machine, result):
    fw = machine.plugin_state.get(ENV)
    if fw is None:
        return None
    extra = {
        "boot_services_exited": not fw.boot_services_active,
        "firmware_ticks": fw.ticks,
        "descriptor_size": DESCRIPTOR_SIZE,
        "memory_map": [_descriptor(r) for r in fw.map.descriptors()],
        "memory_map_at_exit_boot_services": [_descriptor(r) for r in fw.exit_map] if fw.exit_map else None,
    }
    if fw.gop is not None and fw.gop.png:
        try:
            Path(fw.gop.png).write_bytes(console.framebuffer_png(machine.memory, fw.gop))
            extra["framebuffer_png"] = fw.gop.png
        except OSError as exc:
            extra["framebuffer_png_error"] = f"{fw.gop.png}: {exc.strerror or exc}"
    return extra


def _descriptor(region) -> dict:
    return {"type": efi.MEMORY_TYPE_NAMES[region.type] if region.type < len(efi.MEMORY_TYPE_NAMES) else region.type,
            "start": region.start, "pages": region.pages, "attribute": region.attribute}
