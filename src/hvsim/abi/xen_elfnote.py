"""Xen ELF note numbers and XENFEAT feature bits.

Sources:
- ``xen/include/public/elfnote.h``: the XEN_ELFNOTE_* numbers and what each descriptor holds.
- ``xen/include/public/features.h``: the XENFEAT_* bit numbers.
- ``xen/common/libelf/libelf-dominfo.c``: which notes libelf reads as strings or numbers, the feature
  names its FEATURES parser knows, the legacy ``__xen_guest`` keys, and the note count cap.
- ``xen/common/libelf/libelf-private.h``: ELF_MAX_TOTAL_NOTE_COUNT.
"""

from __future__ import annotations

#: Owner name of every Xen note (namesz 4, counting the NUL).
XEN_NOTE_OWNER = b"Xen"

# --- xen/include/public/elfnote.h -----------------------------------------------------------------
XEN_ELFNOTE_INFO = 0
XEN_ELFNOTE_ENTRY = 1
XEN_ELFNOTE_HYPERCALL_PAGE = 2
XEN_ELFNOTE_VIRT_BASE = 3
XEN_ELFNOTE_PADDR_OFFSET = 4
XEN_ELFNOTE_XEN_VERSION = 5
XEN_ELFNOTE_GUEST_OS = 6
XEN_ELFNOTE_GUEST_VERSION = 7
XEN_ELFNOTE_LOADER = 8
XEN_ELFNOTE_PAE_MODE = 9
XEN_ELFNOTE_FEATURES = 10
XEN_ELFNOTE_BSD_SYMTAB = 11
XEN_ELFNOTE_HV_START_LOW = 12
XEN_ELFNOTE_L1_MFN_VALID = 13
XEN_ELFNOTE_SUSPEND_CANCEL = 14
XEN_ELFNOTE_INIT_P2M = 15
XEN_ELFNOTE_MOD_START_PFN = 16
XEN_ELFNOTE_SUPPORTED_FEATURES = 17
XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_ELFNOTE_PHYS32_RELOC = 19
XEN_ELFNOTE_CRASH_INFO = 0x1000001
XEN_ELFNOTE_CRASH_REGS = 0x1000002
XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003

#: Note number -> name without the XEN_ELFNOTE_ prefix.
NOTE_NAMES: dict[int, str] = {
    XEN_ELFNOTE_INFO: "INFO",
    XEN_ELFNOTE_ENTRY: "ENTRY",
    XEN_ELFNOTE_HYPERCALL_PAGE: "HYPERCALL_PAGE",
    XEN_ELFNOTE_VIRT_BASE: "VIRT_BASE",
    XEN_ELFNOTE_PADDR_OFFSET: "PADDR_OFFSET",
    XEN_ELFNOTE_XEN_VERSION: "XEN_VERSION",
    XEN_ELFNOTE_GUEST_OS: "GUEST_OS",
    XEN_ELFNOTE_GUEST_VERSION: "GUEST_VERSION",
    XEN_ELFNOTE_LOADER: "LOADER",
    XEN_ELFNOTE_PAE_MODE: "PAE_MODE",
    XEN_ELFNOTE_FEATURES: "FEATURES",
    XEN_ELFNOTE_BSD_SYMTAB: "BSD_SYMTAB",
    XEN_ELFNOTE_HV_START_LOW: "HV_START_LOW",
    XEN_ELFNOTE_L1_MFN_VALID: "L1_MFN_VALID",
    XEN_ELFNOTE_SUSPEND_CANCEL: "SUSPEND_CANCEL",
    XEN_ELFNOTE_INIT_P2M: "INIT_P2M",
    XEN_ELFNOTE_MOD_START_PFN: "MOD_START_PFN",
    XEN_ELFNOTE_SUPPORTED_FEATURES: "SUPPORTED_FEATURES",
    XEN_ELFNOTE_PHYS32_ENTRY: "PHYS32_ENTRY",
    XEN_ELFNOTE_PHYS32_RELOC: "PHYS32_RELOC",
    XEN_ELFNOTE_CRASH_INFO: "CRASH_INFO",
    XEN_ELFNOTE_CRASH_REGS: "CRASH_REGS",
    XEN_ELFNOTE_DUMPCORE_NONE: "DUMPCORE_NONE",
    XEN_ELFNOTE_DUMPCORE_HEADER: "DUMPCORE_HEADER",
    XEN_ELFNOTE_DUMPCORE_XEN_VERSION: "DUMPCORE_XEN_VERSION",
    XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: "DUMPCORE_FORMAT_VERSION",
}

#: Notes libelf reads as NUL-terminated strings (libelf-dominfo.c note_desc[].str == 1), plus INFO.
STRING_NOTES = frozenset({
    XEN_ELFNOTE_INFO,
    XEN_ELFNOTE_XEN_VERSION,
    XEN_ELFNOTE_GUEST_OS,
    XEN_ELFNOTE_GUEST_VERSION,
    XEN_ELFNOTE_LOADER,
    XEN_ELFNOTE_PAE_MODE,
    XEN_ELFNOTE_FEATURES,
    XEN_ELFNOTE_BSD_SYMTAB,
})

#: Notes libelf reads with elf_note_numeric (1, 2, 4 or 8 bytes LE; other sizes read as 0).
NUMERIC_NOTES = frozenset({
    XEN_ELFNOTE_ENTRY,
    XEN_ELFNOTE_HYPERCALL_PAGE,
    XEN_ELFNOTE_VIRT_BASE,
    XEN_ELFNOTE_PADDR_OFFSET,
    XEN_ELFNOTE_HV_START_LOW,
    XEN_ELFNOTE_SUSPEND_CANCEL,
    XEN_ELFNOTE_INIT_P2M,
    XEN_ELFNOTE_MOD_START_PFN,
    XEN_ELFNOTE_PHYS32_ENTRY,
})

#: Notes that only a PVH (HVM direct boot) loader reads; any *other* Xen note marks a PV kernel.
PVH_ONLY_NOTES = frozenset({XEN_ELFNOTE_PHYS32_ENTRY, XEN_ELFNOTE_PHYS32_RELOC})

#: Notes that belong to crash dumps and xl dump-core files, not to bootable kernels.
DUMP_NOTES = frozenset({
    XEN_ELFNOTE_CRASH_INFO,
    XEN_ELFNOTE_CRASH_REGS,
    XEN_ELFNOTE_DUMPCORE_NONE,
    XEN_ELFNOTE_DUMPCORE_HEADER,
    XEN_ELFNOTE_DUMPCORE_XEN_VERSION,
    XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION,
})

#: libelf-private.h: libelf stops and marks the image broken after this many notes (all containers).
ELF_MAX_TOTAL_NOTE_COUNT = 65536

#: elfnote.h: PHYS32_RELOC defaults [align, min start, max last byte] when a value is not given.
PHYS32_RELOC_DEFAULT_ALIGN = 0x200000
PHYS32_RELOC_DEFAULT_MIN = 0
PHYS32_RELOC_DEFAULT_MAX = 0xFFFFFFFF

# --- legacy __xen_guest section (libelf-dominfo.c elf_xen_parse_guest_info) -----------------------
XEN_GUEST_SECTION = "__xen_guest"
XEN_GUEST_MAX_KEY = 31
XEN_GUEST_MAX_VALUE = 127
#: Legacy key -> the note it stands for.  HYPERCALL_PAGE is a page number relative to VIRT_BASE.
LEGACY_KEYS: dict[str, int] = {
    "LOADER": XEN_ELFNOTE_LOADER,
    "GUEST_OS": XEN_ELFNOTE_GUEST_OS,
    "GUEST_VER": XEN_ELFNOTE_GUEST_VERSION,
    "XEN_VER": XEN_ELFNOTE_XEN_VERSION,
    "PAE": XEN_ELFNOTE_PAE_MODE,
    "BSD_SYMTAB": XEN_ELFNOTE_BSD_SYMTAB,
    "VIRT_BASE": XEN_ELFNOTE_VIRT_BASE,
    "VIRT_ENTRY": XEN_ELFNOTE_ENTRY,
    "ELF_PADDR_OFFSET": XEN_ELFNOTE_PADDR_OFFSET,
    "HYPERCALL_PAGE": XEN_ELFNOTE_HYPERCALL_PAGE,
    "FEATURES": XEN_ELFNOTE_FEATURES,
}
LEGACY_NUMERIC_KEYS = frozenset({"VIRT_BASE", "VIRT_ENTRY", "ELF_PADDR_OFFSET", "HYPERCALL_PAGE"})

# --- xen/include/public/features.h ----------------------------------------------------------------
XENFEAT_writable_page_tables = 0
XENFEAT_writable_descriptor_tables = 1
XENFEAT_auto_translated_physmap = 2
XENFEAT_supervisor_mode_kernel = 3
XENFEAT_pae_pgdir_above_4gb = 4
XENFEAT_mmu_pt_update_preserve_ad = 5
XENFEAT_highmem_assist = 6
XENFEAT_gnttab_map_avail_bits = 7
XENFEAT_hvm_callback_vector = 8
XENFEAT_hvm_safe_pvclock = 9
XENFEAT_hvm_pirqs = 10
XENFEAT_dom0 = 11
XENFEAT_grant_map_identity = 12
XENFEAT_memory_op_vnode_supported = 13
XENFEAT_ARM_SMCCC_supported = 14
XENFEAT_linux_rsdp_unrestricted = 15
XENFEAT_not_direct_mapped = 16
XENFEAT_direct_mapped = 17
XENFEAT_runstate_phys_area = 18
XENFEAT_vcpu_time_phys_area = 19
XENFEAT_dm_msix_all_writes = 20
XENFEAT_NR_SUBMAPS = 1

#: Every XENFEAT bit -> its name without the prefix.
XENFEAT_NAMES: dict[int, str] = {
    value: name[len("XENFEAT_"):]
    for name, value in dict(globals()).items()
    if name.startswith("XENFEAT_") and name != "XENFEAT_NR_SUBMAPS"
}

#: The names libelf's FEATURES parser recognises (elf_xen_feature_names); others are ignored, and an
#: unknown name marked required with "!" makes libelf refuse the image.
LIBELF_FEATURES: dict[str, int] = {
    "writable_page_tables": XENFEAT_writable_page_tables,
    "writable_descriptor_tables": XENFEAT_writable_descriptor_tables,
    "auto_translated_physmap": XENFEAT_auto_translated_physmap,
    "supervisor_mode_kernel": XENFEAT_supervisor_mode_kernel,
    "pae_pgdir_above_4gb": XENFEAT_pae_pgdir_above_4gb,
    "hvm_callback_vector": XENFEAT_hvm_callback_vector,
    "dom0": XENFEAT_dom0,
}


def note_name(note_type: int) -> str:
    """Human name of a Xen note number (``"PHYS32_ENTRY"``), or ``"0x..."`` when unknown."""
    return NOTE_NAMES.get(note_type, f"{note_type:#x}")
