"""The Linux x86 boot protocol: setup header record and constants.

Sources:
- ``Documentation/arch/x86/boot.rst``: header field offsets and the protocol version that introduced
  each field (a field of a newer protocol than the kernel's reads as ``None`` here).
- ``arch/x86/include/uapi/asm/bootparam.h``: loadflags / xloadflags bits, setup_data types, the
  ``struct boot_params`` ("zero page") offsets.
- ``arch/x86/include/asm/e820/types.h``: E820 types.

Offsets are file offsets of the bzImage, which are also offsets inside ``struct boot_params``
(the header is copied from file offset 0x1F1 to zero-page offset 0x1F1).
"""

from __future__ import annotations

import struct
from typing import Optional

import attrs

SECTOR_SIZE = 512
#: boot.rst: "If this field is 0, the real value is 4."
DEFAULT_SETUP_SECTS = 4
SETUP_HEADER_OFFSET = 0x1F1
#: boot.rst: the jump at 0x200 is 0xEB + rel8; the header ends at 0x202 + that byte.
JUMP_OFFSET = 0x200
BOOT_FLAG_OFFSET = 0x1FE
BOOT_FLAG = 0xAA55
HEADER_MAGIC_OFFSET = 0x202
HEADER_MAGIC = 0x53726448  # "HdrS"
VERSION_OFFSET = 0x206
#: End of the last field we know (kernel_info_offset, 2.15).
SETUP_HEADER_END = 0x26C
#: boot.rst "64-bit BOOT PROTOCOL": startup_64 is at the protected-mode kernel's load address + 0x200.
KERNEL_64_ENTRY_OFFSET = 0x200
#: arch/x86/boot/tools/build.c: on x86_64 the 64-bit EFI handover entry is handover_offset + 0x200.
EFI_HANDOVER_64_EXTRA = 0x200
DEFAULT_CODE32_START = 0x100000
#: boot.rst initrd_addr_max: before protocol 2.03 the highest initrd byte is 0x37FFFFFF.
OLD_INITRD_ADDR_MAX = 0x37FFFFFF
#: boot.rst kernel_version: the string is at kernel_version + 0x200.
KERNEL_VERSION_BASE = 0x200
#: kernel_info header magic (2.15, boot.rst "The kernel_info").
KERNEL_INFO_MAGIC = b"LToP"

# loadflags (bootparam.h)
LOADED_HIGH = 1 << 0
KASLR_FLAG = 1 << 1
QUIET_FLAG = 1 << 5
KEEP_SEGMENTS = 1 << 6
CAN_USE_HEAP = 1 << 7

# xloadflags (bootparam.h, protocol 2.12+)
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
XLF_EFI_HANDOVER_32 = 1 << 2
XLF_EFI_HANDOVER_64 = 1 << 3
XLF_EFI_KEXEC = 1 << 4
XLF_5LEVEL = 1 << 5
XLF_5LEVEL_ENABLED = 1 << 6
XLOADFLAG_NAMES = {
    XLF_KERNEL_64: "KERNEL_64",
    XLF_CAN_BE_LOADED_ABOVE_4G: "CAN_BE_LOADED_ABOVE_4G",
    XLF_EFI_HANDOVER_32: "EFI_HANDOVER_32",
    XLF_EFI_HANDOVER_64: "EFI_HANDOVER_64",
    XLF_EFI_KEXEC: "EFI_KEXEC",
    XLF_5LEVEL: "5LEVEL",
    XLF_5LEVEL_ENABLED: "5LEVEL_ENABLED",
}
LOADFLAG_NAMES = {
    LOADED_HIGH: "LOADED_HIGH",
    KASLR_FLAG: "KASLR_FLAG",
    QUIET_FLAG: "QUIET_FLAG",
    KEEP_SEGMENTS: "KEEP_SEGMENTS",
    CAN_USE_HEAP: "CAN_USE_HEAP",
}

# hardware_subarch (boot.rst, 2.07+)
SUBARCH_PC = 0
SUBARCH_LGUEST = 1
SUBARCH_XEN = 2
SUBARCH_INTEL_MID = 3
SUBARCH_CE4100 = 4

# setup_data types (bootparam.h)
SETUP_NONE = 0
SETUP_E820_EXT = 1
SETUP_DTB = 2
SETUP_PCI = 3
SETUP_EFI = 4
SETUP_APPLE_PROPERTIES = 5
SETUP_JAILHOUSE = 6
SETUP_INDIRECT = 1 << 31

TYPE_OF_LOADER_UNDEFINED = 0xFF

# struct boot_params ("zero page") offsets (bootparam.h)
BOOT_PARAMS_SIZE = 4096
BP_ACPI_RSDP_ADDR = 0x070
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_EFI_INFO = 0x1C0
BP_ALT_MEM_K = 0x1E0
BP_E820_ENTRIES = 0x1E8
BP_SENTINEL = 0x1EF
BP_HDR = SETUP_HEADER_OFFSET
BP_E820_TABLE = 0x2D0
BP_E820_MAX_ENTRIES = 128
BP_E820_ENTRY_SIZE = 20

# E820 types (asm/e820/types.h)
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3
E820_NVS = 4
E820_UNUSABLE = 5
E820_PMEM = 7


def version_str(version: int) -> str:
    """Protocol version 0x020F as ``"2.15"`` (boot.rst: (major << 8) + minor)."""
    return f"{version >> 8}.{version & 0xFF:02d}"


#: (field, file offset, struct format, first protocol version that has it); boot.rst's header table.
#: ``None`` as version means "ALL" (present even before the "HdrS" header existed).
SETUP_HEADER_FIELDS: tuple[tuple[str, int, str, Optional[int]], ...] = (
    ("setup_sects", 0x1F1, "B", None),
    ("root_flags", 0x1F2, "H", None),
    ("syssize", 0x1F4, "I", None),  # only 16 bits wide before 2.04
    ("ram_size", 0x1F8, "H", None),
    ("vid_mode", 0x1FA, "H", None),
    ("root_dev", 0x1FC, "H", None),
    ("boot_flag", 0x1FE, "H", None),
    ("jump", 0x200, "H", 0x0200),
    ("header", 0x202, "I", 0x0200),
    ("version", 0x206, "H", 0x0200),
    ("realmode_swtch", 0x208, "I", 0x0200),
    ("start_sys_seg", 0x20C, "H", 0x0200),
    ("kernel_version", 0x20E, "H", 0x0200),
    ("type_of_loader", 0x210, "B", 0x0200),
    ("loadflags", 0x211, "B", 0x0200),
    ("setup_move_size", 0x212, "H", 0x0200),
    ("code32_start", 0x214, "I", 0x0200),
    ("ramdisk_image", 0x218, "I", 0x0200),
    ("ramdisk_size", 0x21C, "I", 0x0200),
    ("bootsect_kludge", 0x220, "I", 0x0200),
    ("heap_end_ptr", 0x224, "H", 0x0201),
    ("ext_loader_ver", 0x226, "B", 0x0202),
    ("ext_loader_type", 0x227, "B", 0x0202),
    ("cmd_line_ptr", 0x228, "I", 0x0202),
    ("initrd_addr_max", 0x22C, "I", 0x0203),
    ("kernel_alignment", 0x230, "I", 0x0205),
    ("relocatable_kernel", 0x234, "B", 0x0205),
    ("min_alignment", 0x235, "B", 0x020A),
    ("xloadflags", 0x236, "H", 0x020C),
    ("cmdline_size", 0x238, "I", 0x0206),
    ("hardware_subarch", 0x23C, "I", 0x0207),
    ("hardware_subarch_data", 0x240, "Q", 0x0207),
    ("payload_offset", 0x248, "I", 0x0208),
    ("payload_length", 0x24C, "I", 0x0208),
    ("setup_data", 0x250, "Q", 0x0209),
    ("pref_address", 0x258, "Q", 0x020A),
    ("init_size", 0x260, "I", 0x020A),
    ("handover_offset", 0x264, "I", 0x020B),
    ("kernel_info_offset", 0x268, "I", 0x020F),
)
FIELD_OFFSETS = {name: offset for name, offset, _, _ in SETUP_HEADER_FIELDS}

@attrs.frozen
class SetupHeader:
    """``struct setup_header`` as the kernel file declares it.

    A field the kernel's protocol version predates is ``None``, so ``hdr.handover_offset is None``
    means "this kernel has no handover entry" rather than "handover at offset 0".
    """

    setup_sects: int
    root_flags: int
    syssize: int
    ram_size: int
    vid_mode: int
    root_dev: int
    boot_flag: int
    jump: Optional[int] = None
    header: Optional[int] = None
    version: int = 0  # 0 when there is no "HdrS" header (an "old" zImage)
    realmode_swtch: Optional[int] = None
    start_sys_seg: Optional[int] = None
    kernel_version: Optional[int] = None
    type_of_loader: Optional[int] = None
    loadflags: Optional[int] = None
    setup_move_size: Optional[int] = None
    code32_start: Optional[int] = None
    ramdisk_image: Optional[int] = None
    ramdisk_size: Optional[int] = None
    bootsect_kludge: Optional[int] = None
    heap_end_ptr: Optional[int] = None
    ext_loader_ver: Optional[int] = None
    ext_loader_type: Optional[int] = None
    cmd_line_ptr: Optional[int] = None
    initrd_addr_max: Optional[int] = None
    kernel_alignment: Optional[int] = None
    relocatable_kernel: Optional[int] = None
    min_alignment: Optional[int] = None
    xloadflags: Optional[int] = None
    cmdline_size: Optional[int] = None
    hardware_subarch: Optional[int] = None
    hardware_subarch_data: Optional[int] = None
    payload_offset: Optional[int] = None
    payload_length: Optional[int] = None
    setup_data: Optional[int] = None
    pref_address: Optional[int] = None
    init_size: Optional[int] = None
    handover_offset: Optional[int] = None
    kernel_info_offset: Optional[int] = None

    @classmethod
    def parse(cls, image: bytes) -> "SetupHeader":
        """Read the header from the first bytes of a kernel file (needs ``SETUP_HEADER_END`` bytes).

        Raises ``ValueError`` if ``image`` is too short; callers turn that into an ImageError.
        """
        if len(image) < SETUP_HEADER_END:
            raise ValueError(f"setup header needs {SETUP_HEADER_END:#x} bytes, got {len(image):#x}")
        has_hdrs = struct.unpack_from("<I", image, HEADER_MAGIC_OFFSET)[0] == HEADER_MAGIC
        version = struct.unpack_from("<H", image, VERSION_OFFSET)[0] if has_hdrs else 0
        values: dict[str, Optional[int]] = {}
        for name, offset, fmt, since in SETUP_HEADER_FIELDS:
            if since is not None and version < since:
                values[name] = None
                continue
            values[name] = struct.unpack_from("<" + fmt, image, offset)[0]
        if version < 0x0204:
            values["syssize"] = values["syssize"] & 0xFFFF  # type: ignore[operator]
        values["version"] = version
        return cls(**values)

    def pack_into(self, buffer: bytearray, base: int = 0) -> None:
        """Write every present field at ``base`` + its offset (``base`` 0 for a zero page or file)."""
        for name, offset, fmt, _ in SETUP_HEADER_FIELDS:
            value = getattr(self, name)
            if value is not None:
                struct.pack_into("<" + fmt, buffer, base + offset, value)

    @property
    def version_str(self) -> str:
        return version_str(self.version)

    @property
    def effective_setup_sects(self) -> int:
        return self.setup_sects or DEFAULT_SETUP_SECTS

    def has_xloadflag(self, flag: int) -> bool:
        return bool((self.xloadflags or 0) & flag)

    def present_fields(self) -> dict[str, int]:
        """The fields this protocol version has, in header order (for JSON summaries)."""
        return {name: getattr(self, name) for name, *_ in SETUP_HEADER_FIELDS
                if getattr(self, name) is not None}


def flag_names(value: int, names: dict[int, str]) -> list[str]:
    """Names of the bits set in ``value`` (unknown bits as hex)."""
    found = [name for bit, name in sorted(names.items()) if value & bit]
    unknown = value & ~sum(names)
    if unknown:
        found.append(f"{unknown:#x}")
    return found
