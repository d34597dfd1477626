"""UEFI (x64): status codes, memory types, GUIDs, table layouts and the service slots of each table.

Sources: UEFI Specification 2.10 (§4 EFI System Table, §7 Boot Services, §8 Runtime Services,
§12.3-12.4 Simple Text Input/Output, §12.9 Graphics Output, §9.1 Loaded Image, §10 Device Path);
edk2 MdePkg/Include/Uefi/UefiSpec.h, UefiBaseType.h, UefiMultiPhase.h; Linux include/linux/efi.h.
Offsets are x64 (UINTN and pointers 8 bytes); ``efi-and-linux-boot.md`` §2 lists them with the
cross-checks made.
"""

from __future__ import annotations

import struct
import uuid

# --- UefiBaseType.h: EFI_STATUS -------------------------------------------------------------------
ERROR_BIT = 1 << 63
SUCCESS = 0
LOAD_ERROR = ERROR_BIT | 1
INVALID_PARAMETER = ERROR_BIT | 2
UNSUPPORTED = ERROR_BIT | 3
BAD_BUFFER_SIZE = ERROR_BIT | 4
BUFFER_TOO_SMALL = ERROR_BIT | 5
NOT_READY = ERROR_BIT | 6
DEVICE_ERROR = ERROR_BIT | 7
WRITE_PROTECTED = ERROR_BIT | 8
OUT_OF_RESOURCES = ERROR_BIT | 9
VOLUME_FULL = ERROR_BIT | 11
MEDIA_CHANGED = ERROR_BIT | 13
NOT_FOUND = ERROR_BIT | 14
NO_MAPPING = ERROR_BIT | 17
ACCESS_DENIED = ERROR_BIT | 15
TIMEOUT = ERROR_BIT | 18
NOT_STARTED = ERROR_BIT | 19
ALREADY_STARTED = ERROR_BIT | 20
ABORTED = ERROR_BIT | 21
SECURITY_VIOLATION = ERROR_BIT | 26
WARN_DELETE_FAILURE = 2            # a warning: no error bit (appendix D)
STATUS_NAMES = {
    SUCCESS: "EFI_SUCCESS", LOAD_ERROR: "EFI_LOAD_ERROR", INVALID_PARAMETER: "EFI_INVALID_PARAMETER",
    UNSUPPORTED: "EFI_UNSUPPORTED", BAD_BUFFER_SIZE: "EFI_BAD_BUFFER_SIZE",
    BUFFER_TOO_SMALL: "EFI_BUFFER_TOO_SMALL", NOT_READY: "EFI_NOT_READY", DEVICE_ERROR: "EFI_DEVICE_ERROR",
    WRITE_PROTECTED: "EFI_WRITE_PROTECTED", OUT_OF_RESOURCES: "EFI_OUT_OF_RESOURCES",
    NOT_FOUND: "EFI_NOT_FOUND", NO_MAPPING: "EFI_NO_MAPPING", ACCESS_DENIED: "EFI_ACCESS_DENIED", TIMEOUT: "EFI_TIMEOUT",
    NOT_STARTED: "EFI_NOT_STARTED", ALREADY_STARTED: "EFI_ALREADY_STARTED", ABORTED: "EFI_ABORTED",
    SECURITY_VIOLATION: "EFI_SECURITY_VIOLATION", VOLUME_FULL: "EFI_VOLUME_FULL",
    WARN_DELETE_FAILURE: "EFI_WARN_DELETE_FAILURE", MEDIA_CHANGED: "EFI_MEDIA_CHANGED",
}


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"{status:#x}")


# --- UefiMultiPhase.h: EFI_MEMORY_TYPE, attributes ------------------------------------------------
RESERVED_MEMORY, LOADER_CODE, LOADER_DATA, BOOT_SERVICES_CODE, BOOT_SERVICES_DATA = 0, 1, 2, 3, 4
RUNTIME_SERVICES_CODE, RUNTIME_SERVICES_DATA, CONVENTIONAL_MEMORY, UNUSABLE_MEMORY = 5, 6, 7, 8
ACPI_RECLAIM_MEMORY, ACPI_MEMORY_NVS, MEMORY_MAPPED_IO, MEMORY_MAPPED_IO_PORT_SPACE = 9, 10, 11, 12
PAL_CODE, PERSISTENT_MEMORY, UNACCEPTED_MEMORY = 13, 14, 15
MAX_MEMORY_TYPE = 16
MEMORY_TYPE_NAMES = (
    "Reserved", "LoaderCode", "LoaderData", "BootServicesCode", "BootServicesData",
    "RuntimeServicesCode", "RuntimeServicesData", "Conventional", "Unusable", "ACPIReclaim",
    "ACPIMemoryNVS", "MemoryMappedIO", "MemoryMappedIOPortSpace", "PalCode", "Persistent", "Unaccepted",
)
# OEM (0x70000000-0x7fffffff) and OS (0x80000000-0xffffffff) types are valid for allocations too.
OEM_TYPE_START, OS_TYPE_START = 0x7000_0000, 0x8000_0000

MEMORY_UC, MEMORY_WC, MEMORY_WT, MEMORY_WB = 0x1, 0x2, 0x4, 0x8
MEMORY_RUNTIME = 1 << 63
MEMORY_DESCRIPTOR_VERSION = 1
# EFI_MEMORY_DESCRIPTOR {u32 Type; u32 pad; u64 PhysicalStart, VirtualStart, NumberOfPages, Attribute}
MEMORY_DESCRIPTOR_FORMAT = "<I4xQQQQ"
MEMORY_DESCRIPTOR_SIZE = struct.calcsize(MEMORY_DESCRIPTOR_FORMAT)   # 40
PAGE_SIZE = 0x1000

# Linux arch/x86/boot/compressed: EFI memory type -> E820 type (x86-stub.c setup_e820).
E820_OF_EFI_TYPE = {
    RESERVED_MEMORY: 2, RUNTIME_SERVICES_CODE: 2, RUNTIME_SERVICES_DATA: 2, MEMORY_MAPPED_IO: 2,
    MEMORY_MAPPED_IO_PORT_SPACE: 2, PAL_CODE: 2, UNUSABLE_MEMORY: 5, ACPI_RECLAIM_MEMORY: 3,
    LOADER_CODE: 1, LOADER_DATA: 1, BOOT_SERVICES_CODE: 1, BOOT_SERVICES_DATA: 1, CONVENTIONAL_MEMORY: 1,
    ACPI_MEMORY_NVS: 4, PERSISTENT_MEMORY: 7,
}

# --- UefiSpec.h: EFI_ALLOCATE_TYPE, EFI_LOCATE_SEARCH_TYPE, TPL, events, OpenProtocol attributes --
ALLOCATE_ANY_PAGES, ALLOCATE_MAX_ADDRESS, ALLOCATE_ADDRESS = 0, 1, 2
ALL_HANDLES, BY_REGISTER_NOTIFY, BY_PROTOCOL = 0, 1, 2
TPL_APPLICATION, TPL_CALLBACK, TPL_NOTIFY, TPL_HIGH_LEVEL = 4, 8, 16, 31
EVT_TIMER, EVT_RUNTIME, EVT_NOTIFY_WAIT, EVT_NOTIFY_SIGNAL = 0x8000_0000, 0x4000_0000, 0x100, 0x200
EVT_SIGNAL_EXIT_BOOT_SERVICES, EVT_SIGNAL_VIRTUAL_ADDRESS_CHANGE = 0x201, 0x6000_0202
TIMER_CANCEL, TIMER_PERIODIC, TIMER_RELATIVE = 0, 1, 2
OPEN_PROTOCOL_BY_HANDLE_PROTOCOL, OPEN_PROTOCOL_GET_PROTOCOL, OPEN_PROTOCOL_TEST_PROTOCOL = 0x1, 0x2, 0x4
OPEN_PROTOCOL_BY_CHILD_CONTROLLER, OPEN_PROTOCOL_BY_DRIVER, OPEN_PROTOCOL_EXCLUSIVE = 0x8, 0x10, 0x20
RESET_COLD, RESET_WARM, RESET_SHUTDOWN, RESET_PLATFORM_SPECIFIC = 0, 1, 2, 3
RESET_TYPE_NAMES = {RESET_COLD: "EfiResetCold", RESET_WARM: "EfiResetWarm",
                    RESET_SHUTDOWN: "EfiResetShutdown", RESET_PLATFORM_SPECIFIC: "EfiResetPlatformSpecific"}
# Variable attributes (UefiMultiPhase.h)
VARIABLE_NON_VOLATILE, VARIABLE_BOOTSERVICE_ACCESS, VARIABLE_RUNTIME_ACCESS = 0x1, 0x2, 0x4
VARIABLE_KNOWN_ATTRIBUTES = 0x7F

# --- table headers (§4.2) --------------------------------------------------------------------------
SYSTEM_TABLE_SIGNATURE = 0x5453595320494249      # "IBI SYST"
BOOT_SERVICES_SIGNATURE = 0x56524553544F4F42     # "BOOTSERV"
RUNTIME_SERVICES_SIGNATURE = 0x56524553544E5552  # "RUNTSERV"
SPECIFICATION_REVISION = (2 << 16) | 70          # 2.70, the revision Linux prints as "EFI v2.7"
TABLE_HEADER_FORMAT = "<QIIII"                   # Signature, Revision, HeaderSize, CRC32, Reserved
TABLE_HEADER_SIZE = 24
CRC32_OFFSET = 0x10

# EFI_SYSTEM_TABLE (0x78 bytes)
SYSTEM_TABLE_SIZE = 0x78
ST_FIRMWARE_VENDOR, ST_FIRMWARE_REVISION = 0x18, 0x20
ST_CONSOLE_IN_HANDLE, ST_CON_IN, ST_CONSOLE_OUT_HANDLE, ST_CON_OUT = 0x28, 0x30, 0x38, 0x40
ST_STANDARD_ERROR_HANDLE, ST_STD_ERR, ST_RUNTIME_SERVICES, ST_BOOT_SERVICES = 0x48, 0x50, 0x58, 0x60
ST_NUMBER_OF_TABLE_ENTRIES, ST_CONFIGURATION_TABLE = 0x68, 0x70
CONFIGURATION_TABLE_ENTRY_SIZE = 0x18            # {EFI_GUID VendorGuid; VOID *VendorTable}

# Service slots of each table, in order from the first slot's offset.
BOOT_SERVICES = (
    "RaiseTPL", "RestoreTPL", "AllocatePages", "FreePages", "GetMemoryMap", "AllocatePool", "FreePool",
    "CreateEvent", "SetTimer", "WaitForEvent", "SignalEvent", "CloseEvent", "CheckEvent",
    "InstallProtocolInterface", "ReinstallProtocolInterface", "UninstallProtocolInterface",
    "HandleProtocol", "Reserved", "RegisterProtocolNotify", "LocateHandle", "LocateDevicePath",
    "InstallConfigurationTable", "LoadImage", "StartImage", "Exit", "UnloadImage", "ExitBootServices",
    "GetNextMonotonicCount", "Stall", "SetWatchdogTimer", "ConnectController", "DisconnectController",
    "OpenProtocol", "CloseProtocol", "OpenProtocolInformation", "ProtocolsPerHandle",
    "LocateHandleBuffer", "LocateProtocol", "InstallMultipleProtocolInterfaces",
    "UninstallMultipleProtocolInterfaces", "CalculateCrc32", "CopyMem", "SetMem", "CreateEventEx",
)
BOOT_SERVICES_FIRST_SLOT = 0x18
BOOT_SERVICES_SIZE = BOOT_SERVICES_FIRST_SLOT + 8 * len(BOOT_SERVICES)       # 0x178
RUNTIME_SERVICES = (
    "GetTime", "SetTime", "GetWakeupTime", "SetWakeupTime", "SetVirtualAddressMap", "ConvertPointer",
    "GetVariable", "GetNextVariableName", "SetVariable", "GetNextHighMonotonicCount", "ResetSystem",
    "UpdateCapsule", "QueryCapsuleCapabilities", "QueryVariableInfo",
)
RUNTIME_SERVICES_FIRST_SLOT = 0x18
RUNTIME_SERVICES_SIZE = RUNTIME_SERVICES_FIRST_SLOT + 8 * len(RUNTIME_SERVICES)  # 0x88
# EFI_SIMPLE_TEXT_OUTPUT_PROTOCOL: 9 functions then Mode*; mode = 5 x INT32 + BOOLEAN
TEXT_OUTPUT_SERVICES = ("Reset", "OutputString", "TestString", "QueryMode", "SetMode", "SetAttribute",
                        "ClearScreen", "SetCursorPosition", "EnableCursor")
TEXT_OUTPUT_SIZE = 8 * len(TEXT_OUTPUT_SERVICES) + 8
TEXT_OUTPUT_MODE_FORMAT = "<iiiii?3x"            # MaxMode, Mode, Attribute, CursorColumn, CursorRow, CursorVisible
# EFI_SIMPLE_TEXT_INPUT_PROTOCOL: Reset, ReadKeyStroke, WaitForKey (an EFI_EVENT)
TEXT_INPUT_SERVICES = ("Reset", "ReadKeyStroke")
TEXT_INPUT_SIZE = 0x18
INPUT_KEY_FORMAT = "<HH"                         # ScanCode, UnicodeChar
# EFI_GRAPHICS_OUTPUT_PROTOCOL: QueryMode, SetMode, Blt, Mode*
GOP_SERVICES = ("QueryMode", "SetMode", "Blt")
GOP_SIZE = 0x20
GOP_MODE_FORMAT = "<IIQQQQ"                      # MaxMode, Mode, Info*, SizeOfInfo, FrameBufferBase, FrameBufferSize
GOP_MODE_INFO_FORMAT = "<IIII4II"                # Version, H, V, PixelFormat, PixelInformation[4], PixelsPerScanLine
PIXEL_BLUE_GREEN_RED_RESERVED_8BIT_PER_COLOR = 1
BLT_VIDEO_FILL, BLT_VIDEO_TO_BLT_BUFFER, BLT_BUFFER_TO_VIDEO, BLT_VIDEO_TO_VIDEO = 0, 1, 2, 3
# EFI_LOADED_IMAGE_PROTOCOL (0x60 bytes)
LOADED_IMAGE_FORMAT = "<I4xQQQQQI4xQQQIIQ"
LOADED_IMAGE_SIZE = 0x60
LOADED_IMAGE_REVISION = 0x1000
# EFI_TIME {u16 Year; u8 Month, Day, Hour, Minute, Second, Pad1; u32 Nanosecond; i16 TimeZone; u8 Daylight, Pad2}
TIME_FORMAT = "<HBBBBBxIhBx"
TIME_CAPABILITIES_FORMAT = "<II?3x"              # Resolution, Accuracy, SetsToZero
UNSPECIFIED_TIMEZONE = 0x07FF

# Scan codes (§12.3 Table 12-3) for --keys: names users can write.
SCAN_CODES = {"up": 0x01, "down": 0x02, "right": 0x03, "left": 0x04, "home": 0x05, "end": 0x06,
              "insert": 0x07, "delete": 0x08, "pageup": 0x09, "pagedown": 0x0A,
              **{f"f{n}": 0x0A + n for n in range(1, 11)}, "f11": 0x15, "f12": 0x16, "esc": 0x17}

# --- device paths (§10.3) -------------------------------------------------------------------------
END_DEVICE_PATH = bytes([0x7F, 0xFF, 4, 0])
HARDWARE_DEVICE_PATH, ACPI_DEVICE_PATH, MEDIA_DEVICE_PATH, END_DEVICE_PATH_TYPE = 0x01, 0x02, 0x04, 0x7F
MEDIA_HARDDRIVE_DP = 0x01          # §10.3.5.1 Hard Drive media device path
MEDIA_VENDOR_DP, MEDIA_FILEPATH_DP = 0x03, 0x04


# --- GUIDs -----------------------------------------------------------------------------------------
def guid_bytes(text: str) -> bytes:
    """A GUID in registry format as EFI stores it: {u32 LE, u16 LE, u16 LE, 8 bytes as written}."""
    return uuid.UUID(text).bytes_le


ACPI_20_TABLE_GUID = guid_bytes("8868e871-e4f1-11d3-bc22-0080c73c8881")
ACPI_10_TABLE_GUID = guid_bytes("eb9d2d30-2d88-11d3-9a16-0090273fc14d")
SMBIOS_TABLE_GUID = guid_bytes("eb9d2d31-2d88-11d3-9a16-0090273fc14d")
SMBIOS3_TABLE_GUID = guid_bytes("f2fd1544-9794-4a2c-992e-e5bbcf20e394")
LOADED_IMAGE_PROTOCOL_GUID = guid_bytes("5b1b31a1-9562-11d2-8e3f-00a0c969723b")
SIMPLE_FILE_SYSTEM_PROTOCOL_GUID = guid_bytes("964e5b22-6459-11d2-8e39-00a0c969723b")   # §13.4
LOADED_IMAGE_DEVICE_PATH_PROTOCOL_GUID = guid_bytes("bc62157e-3e33-4fec-9920-2d3b36d750df")
DEVICE_PATH_PROTOCOL_GUID = guid_bytes("09576e91-6d3f-11d2-8e39-00a0c969723b")
SIMPLE_TEXT_OUTPUT_PROTOCOL_GUID = guid_bytes("387477c2-69c7-11d2-8e39-00a0c969723b")
SIMPLE_TEXT_INPUT_PROTOCOL_GUID = guid_bytes("387477c1-69c7-11d2-8e39-00a0c969723b")
GRAPHICS_OUTPUT_PROTOCOL_GUID = guid_bytes("9042a9de-23dc-4a38-96fb-7aded080516a")
LOAD_FILE2_PROTOCOL_GUID = guid_bytes("4006c0c1-fcb3-403e-996d-4a6c8724e06d")
GLOBAL_VARIABLE_GUID = guid_bytes("8be4df61-93ca-11d2-aa0d-00e098032b8c")
GUID_NAMES = {
    ACPI_20_TABLE_GUID: "ACPI_20_TABLE", ACPI_10_TABLE_GUID: "ACPI_TABLE", SMBIOS_TABLE_GUID: "SMBIOS_TABLE",
    SMBIOS3_TABLE_GUID: "SMBIOS3_TABLE", LOADED_IMAGE_PROTOCOL_GUID: "LOADED_IMAGE",
    LOADED_IMAGE_DEVICE_PATH_PROTOCOL_GUID: "LOADED_IMAGE_DEVICE_PATH", DEVICE_PATH_PROTOCOL_GUID: "DEVICE_PATH",
    SIMPLE_TEXT_OUTPUT_PROTOCOL_GUID: "SIMPLE_TEXT_OUTPUT", SIMPLE_TEXT_INPUT_PROTOCOL_GUID: "SIMPLE_TEXT_INPUT",
    GRAPHICS_OUTPUT_PROTOCOL_GUID: "GRAPHICS_OUTPUT", LOAD_FILE2_PROTOCOL_GUID: "LOAD_FILE2",
    GLOBAL_VARIABLE_GUID: "EFI_GLOBAL_VARIABLE",
    guid_bytes("982c298b-f4fa-41cb-b838-77aa688fb839"): "UGA_DRAW",
    guid_bytes("4cf5b200-68b8-4ca5-9eec-b23e3f50029a"): "PCI_IO",
    guid_bytes("964e5b22-6459-11d2-8e39-00a0c969723b"): "SIMPLE_FILE_SYSTEM",
    guid_bytes("3152bca5-eade-433d-862e-c01cdc291f44"): "RNG",
    guid_bytes("607f766c-7455-42be-930b-e4d76db2720f"): "TCG2",
    guid_bytes("f4560cf6-40ec-4b4a-a192-bf1d57d0b189"): "MEMORY_ATTRIBUTE",
    guid_bytes("05ad34ba-6f02-4214-952e-4da0398e2bb9"): "DXE_SERVICES_TABLE",
    guid_bytes("605dab50-e046-4300-abb6-3dd810dd8b23"): "SHIM_LOCK",
    guid_bytes("5568e427-68fc-4f3d-ac74-ca555231cc68"): "LINUX_EFI_INITRD_MEDIA",
    guid_bytes("1ce1e5bc-7ceb-42f2-81e5-8aadf180f57b"): "LINUX_EFI_RANDOM_SEED",
    guid_bytes("800f683f-d08b-423a-a293-965c3c6fe2b4"): "LINUX_EFI_BOOT_MEMMAP",
    guid_bytes("e20939be-32d4-41be-a150-897f85d49829"): "MEMORY_OVERWRITE_REQUEST_CONTROL",
}


def guid_name(raw: bytes) -> str:
    return GUID_NAMES.get(raw) or str(uuid.UUID(bytes_le=raw))
