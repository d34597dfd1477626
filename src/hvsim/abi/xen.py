"""The Xen guest ABI: hypercall numbers, sub-operations, argument layouts (x86-64), error numbers,
the HVM/PVH start info, the CPUID leaves and MSR, shared_info and the console ring.

Each group names the public header it comes from (xen/include/public/...).  Layouts are the
x86-64 ones; offsets were checked against the headers' field order and alignment.
"""

from __future__ import annotations

# --- xen.h: hypercall numbers -----------------------------------------------------------------
HYPERCALLS = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch", 4: "set_callbacks",
    5: "fpu_taskswitch", 6: "sched_op_compat", 7: "platform_op", 8: "set_debugreg", 9: "get_debugreg",
    10: "update_descriptor", 12: "memory_op", 13: "multicall", 14: "update_va_mapping",
    15: "set_timer_op", 16: "event_channel_op_compat", 17: "xen_version", 18: "console_io",
    19: "physdev_op_compat", 20: "grant_table_op", 21: "vm_assist", 22: "update_va_mapping_otherdomain",
    23: "iret", 24: "vcpu_op", 25: "set_segment_base", 26: "mmuext_op", 27: "xsm_op", 28: "nmi_op",
    29: "sched_op", 30: "callback_op", 31: "xenoprof_op", 32: "event_channel_op", 33: "physdev_op",
    34: "hvm_op", 35: "sysctl", 36: "domctl", 37: "kexec_op", 38: "tmem_op", 39: "argo_op",
    40: "xenpmu_op", 41: "dm_op", 42: "hypfs_op",
}
HYPERCALL_NUMBERS = {name: nr for nr, name in HYPERCALLS.items()}
DOMID_SELF = 0x7FF0

# --- errno.h (returned negated) ----------------------------------------------------------------
EPERM, ENOENT, ESRCH, EFAULT, EINVAL, ENOSPC, ENOSYS = 1, 2, 3, 14, 22, 28, 38
EACCES, ENOMEM = 13, 12
# sysctl.h / domctl.h of Xen 4.17 (the version hvsim reports): a struct of another version is -EACCES
XEN_SYSCTL_INTERFACE_VERSION = XEN_DOMCTL_INTERFACE_VERSION = 0x15

# --- xen.h: start_info.flags (SIF_*) -----------------------------------------------------------
SIF_PRIVILEGED = 1 << 0
SIF_INITDOMAIN = 1 << 1

# --- console.h: console_io ---------------------------------------------------------------------
CONSOLEIO_WRITE, CONSOLEIO_READ = 0, 1

# --- sched.h: sched_op and shutdown reasons ----------------------------------------------------
SCHEDOP_YIELD, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN, SCHEDOP_POLL = 0, 1, 2, 3
SCHEDOP_REMOTE_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE, SCHEDOP_WATCHDOG = 4, 5, 6
SHUTDOWN_REASONS = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog", 5: "soft_reset"}

# --- version.h: xen_version ----------------------------------------------------------------------
XENVER_VERSION, XENVER_EXTRAVERSION, XENVER_COMPILE_INFO, XENVER_CAPABILITIES = 0, 1, 2, 3
XENVER_CHANGESET, XENVER_PLATFORM_PARAMETERS, XENVER_GET_FEATURES, XENVER_PAGESIZE = 4, 5, 6, 7
XENVER_GUEST_HANDLE, XENVER_COMMANDLINE = 8, 9
XEN_EXTRAVERSION_LEN, XEN_CAPABILITIES_INFO_LEN, XEN_CHANGESET_INFO_LEN = 16, 1024, 64
XEN_COMPILE_INFO_LEN = 64 + 16 + 32 + 32
XEN_COMMANDLINE_LEN = 1024

# --- features.h: the XENFEAT_* bit numbers live with the notes that also name them -------------
from .xen_elfnote import (  # noqa: E402,F401  (re-exported: one definition of each number)
    XENFEAT_auto_translated_physmap, XENFEAT_dom0, XENFEAT_hvm_callback_vector, XENFEAT_hvm_safe_pvclock,
    XENFEAT_writable_page_tables,
)

# --- memory.h: memory_op -----------------------------------------------------------------------
XENMEM_increase_reservation, XENMEM_decrease_reservation = 0, 1
XENMEM_maximum_ram_page, XENMEM_current_reservation, XENMEM_maximum_reservation = 2, 3, 4
XENMEM_machphys_mfn_list, XENMEM_populate_physmap, XENMEM_add_to_physmap = 5, 6, 7
XENMEM_memory_map, XENMEM_machine_memory_map, XENMEM_maximum_gpfn = 9, 10, 14
XENMAPSPACE_shared_info, XENMAPSPACE_grant_table = 0, 1
# struct xen_add_to_physmap {u16 domid; u16 size; u32 space; xen_ulong idx; xen_pfn gpfn}
ADD_TO_PHYSMAP_FORMAT = "<HHIQQ"
ADD_TO_PHYSMAP_COMPAT_FORMAT = "<HHIII"         # 32-bit caller: xen_ulong_t and xen_pfn_t are 32-bit
# struct xen_memory_map {u32 nr_entries; XEN_GUEST_HANDLE buffer}: the buffer gets packed e820 entries
MEMORY_MAP_FORMAT = "<I4xQ"
MEMORY_MAP_COMPAT_FORMAT = "<II"                # 32-bit caller: a 32-bit handle (compat/memory.h)
E820_ENTRY_FORMAT = "<QQI"                      # addr, size, type: 20 bytes

# --- hvm/hvm_op.h and hvm/params.h: hvm_op -----------------------------------------------------
HVMOP_set_param, HVMOP_get_param, HVMOP_flush_tlbs, HVMOP_pagetable_dying = 0, 1, 5, 9
HVMOP_get_time, HVMOP_set_evtchn_upcall_vector = 10, 23
HVM_PARAM_FORMAT = "<H2xIQ"                     # {u16 domid; u32 index; u64 value}
HVM_PARAM_CALLBACK_IRQ, HVM_PARAM_STORE_PFN, HVM_PARAM_STORE_EVTCHN = 0, 1, 2
HVM_PARAM_CONSOLE_PFN, HVM_PARAM_CONSOLE_EVTCHN = 17, 18
HVM_NR_PARAMS = 39
HVM_PARAM_NAMES = {0: "CALLBACK_IRQ", 1: "STORE_PFN", 2: "STORE_EVTCHN", 17: "CONSOLE_PFN",
                   18: "CONSOLE_EVTCHN"}

# --- vcpu.h: vcpu_op ---------------------------------------------------------------------------
VCPUOP_initialise, VCPUOP_up, VCPUOP_down, VCPUOP_is_up = 0, 1, 2, 3
VCPUOP_register_runstate_memory_area, VCPUOP_register_vcpu_info = 5, 10
REGISTER_VCPU_INFO_FORMAT = "<QII"              # {u64 mfn; u32 offset; u32 rsvd}

# --- event_channel.h: event_channel_op ----------------------------------------------------------
EVTCHNOP_bind_interdomain, EVTCHNOP_bind_virq, EVTCHNOP_close, EVTCHNOP_send = 0, 1, 3, 4
EVTCHNOP_alloc_unbound, EVTCHNOP_bind_ipi, EVTCHNOP_unmask, EVTCHNOP_init_control = 6, 7, 9, 11
NR_EVENT_CHANNELS_2L = 64 * 64                  # 2-level ABI on a 64-bit guest

# --- grant_table.h: grant_table_op ---------------------------------------------------------------
GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref, GNTTABOP_setup_table, GNTTABOP_dump_table = 0, 1, 2, 3
GNTTABOP_transfer, GNTTABOP_copy, GNTTABOP_query_size, GNTTABOP_unmap_and_replace = 4, 5, 6, 7
GNTTABOP_set_version, GNTTABOP_get_status_frames, GNTTABOP_get_version = 8, 9, 10
GNTTABOP_swap_grant_ref, GNTTABOP_cache_flush = 11, 12
GNTTAB_QUERY_SIZE_FORMAT = "<H2xIIh"            # {u16 dom; u32 nr_frames; u32 max_nr_frames; i16 status}
# struct gnttab_setup_table {domid_t dom; u32 nr_frames; i16 status (out); XEN_GUEST_HANDLE(xen_pfn_t)
# frame_list}: the handle is 8-byte aligned (at 16) for a 64-bit caller, a 32-bit one at 12 (compat)
GNTTAB_SETUP_TABLE_FORMAT = "<H2xIh6xQ"
GNTTAB_SETUP_TABLE_COMPAT_FORMAT = "<H2xIh2xI"
GNTTAB_SETUP_TABLE_STATUS = 8
# struct gnttab_get_status_frames {u32 nr_frames; domid_t dom; i16 status (out); XEN_GUEST_HANDLE(u64)
# frame_list}: the list holds uint64_t frame numbers for every caller
GNTTAB_GET_STATUS_FRAMES_FORMAT = "<IHhQ"
GNTTAB_GET_STATUS_FRAMES_COMPAT_FORMAT = "<IHhI"
GNTTAB_GET_STATUS_FRAMES_STATUS = 6
GNTTAB_GET_VERSION_FORMAT = "<H2xI"             # {domid_t dom; u16 pad; u32 version (out)}
# grant_table.h GNTST_*: the per-operation status a grant_table_op writes back (the call itself returns 0)
GNTST_okay, GNTST_general_error, GNTST_bad_domain = 0, -1, -2
# grant_table.h: the version-1 entry is 8 bytes, version-2 16; version 2 keeps a u16 status per entry
# in separate frames (grant_to_status_frames in common/grant_table.c)
GRANT_ENTRY_V1_SIZE, GRANT_ENTRY_V2_SIZE, GRANT_STATUS_SIZE = 8, 16, 2
# memory.h: XENMAPIDX_grant_table_status -- an add_to_physmap index of a grant status frame
XENMAPIDX_grant_table_status = 1 << 31
# libxl_types.idl / xl.cfg max_grant_frames: the toolstack's default limit for a domU
MAX_GRANT_FRAMES = 32

# --- every sub-operation's name, by hypercall: the trace and the matrix name a call "hypercall.op" ---
# (console.h, sched.h, version.h, memory.h, hvm/hvm_op.h, vcpu.h, event_channel.h, grant_table.h,
# physdev.h, callback.h, pmu.h, xen.h VMASST_CMD_*)
CONSOLEIO_NAMES = {0: "write", 1: "read"}
SCHEDOP_NAMES = {0: "yield", 1: "block", 2: "shutdown", 3: "poll", 4: "remote_shutdown", 5: "shutdown_code",
                 6: "watchdog", 7: "pin_override"}
XENVER_NAMES = {0: "version", 1: "extraversion", 2: "compile_info", 3: "capabilities", 4: "changeset",
                5: "platform_parameters", 6: "get_features", 7: "pagesize", 8: "guest_handle",
                9: "commandline", 10: "build_id", 11: "extraversion2", 12: "capabilities2",
                13: "changeset2", 14: "commandline2"}
XENMEM_NAMES = {     # memory.h (8, translate_gpfn_list, is retired)
    0: "increase_reservation", 1: "decrease_reservation", 2: "maximum_ram_page", 3: "current_reservation",
    4: "maximum_reservation", 5: "machphys_mfn_list", 6: "populate_physmap", 7: "add_to_physmap",
    9: "memory_map", 10: "machine_memory_map", 11: "exchange", 12: "machphys_mapping", 13: "set_memory_map",
    14: "maximum_gpfn", 15: "remove_from_physmap", 16: "set_pod_target", 17: "get_pod_target",
    18: "get_sharing_freed_pages", 19: "get_sharing_shared_pages", 20: "paging_op", 21: "access_op",
    22: "sharing_op", 23: "add_to_physmap_batch", 24: "claim_pages", 25: "machphys_compat_mfn_list",
    26: "get_vnumainfo", 27: "reserved_device_memory_map", 28: "acquire_resource",
}
MEMOP_CMD_MASK = (1 << 6) - 1                   # memory.h: MEMOP_EXTENT_SHIFT; bits above: a start extent
HVMOP_NAMES = {0: "set_param", 1: "get_param", 4: "set_pci_intx_level", 5: "flush_tlbs",
               6: "set_isa_irq_level", 7: "set_pci_link_route", 9: "pagetable_dying", 10: "get_time",
               12: "set_mem_type", 14: "xentrace", 15: "get_mem_type", 16: "inject_trap",
               17: "altp2m", 20: "guest_request_vm_event", 23: "set_evtchn_upcall_vector", 24: "inject_msi"}
VCPUOP_NAMES = {0: "initialise", 1: "up", 2: "down", 3: "is_up", 4: "get_runstate_info",
                5: "register_runstate_memory_area", 6: "set_periodic_timer", 7: "stop_periodic_timer",
                8: "set_singleshot_timer", 9: "stop_singleshot_timer", 10: "register_vcpu_info",
                11: "send_nmi", 12: "get_physical_id", 13: "register_vcpu_time_memory_area"}
EVTCHNOP_NAMES = {
    0: "bind_interdomain", 1: "bind_virq", 2: "bind_pirq", 3: "close", 4: "send", 5: "status",
    6: "alloc_unbound", 7: "bind_ipi", 8: "bind_vcpu", 9: "unmask", 10: "reset", 11: "init_control",
    12: "expand_array", 13: "set_priority", 14: "reset_cont",
}
GNTTABOP_NAMES = {0: "map_grant_ref", 1: "unmap_grant_ref", 2: "setup_table", 3: "dump_table", 4: "transfer",
                  5: "copy", 6: "query_size", 7: "unmap_and_replace", 8: "set_version",
                  9: "get_status_frames", 10: "get_version", 11: "swap_grant_ref", 12: "cache_flush"}
PHYSDEVOP_NAMES = {
    5: "irq_status_query", 6: "set_iopl", 7: "set_iobitmap", 8: "apic_read", 9: "apic_write",
    10: "alloc_irq_vector", 11: "free_irq_vector", 12: "eoi", 13: "map_pirq", 14: "unmap_pirq",
    15: "manage_pci_add", 16: "manage_pci_remove", 17: "pirq_eoi_gmfn_v1", 19: "restore_msi",
    20: "manage_pci_add_ext", 21: "setup_gsi", 22: "get_nr_pirqs", 23: "get_free_pirq",
    24: "pci_mmcfg_reserved", 25: "pci_device_add", 26: "pci_device_remove", 27: "restore_msi_ext",
    28: "pirq_eoi_gmfn_v2", 29: "dbgp_op", 30: "prepare_msix", 31: "release_msix", 32: "pci_device_reset",
}
CALLBACKOP_NAMES = {0: "register", 1: "unregister"}
XENPMU_NAMES = {0: "mode_get", 1: "mode_set", 2: "feature_get", 3: "feature_set", 4: "init", 5: "finish",
                6: "lvtpc_set", 7: "flush"}
VMASST_CMD_NAMES = {0: "enable", 1: "disable"}
# hypercall name -> (its sub-operation table, the mask of the command argument)
SUB_OPS = {
    "console_io": (CONSOLEIO_NAMES, 0xFFFF_FFFF), "sched_op": (SCHEDOP_NAMES, 0xFFFF_FFFF),
    "xen_version": (XENVER_NAMES, 0xFFFF_FFFF), "memory_op": (XENMEM_NAMES, MEMOP_CMD_MASK),
    "hvm_op": (HVMOP_NAMES, 0xFFFF_FFFF), "vcpu_op": (VCPUOP_NAMES, 0xFFFF_FFFF),
    "event_channel_op": (EVTCHNOP_NAMES, 0xFFFF_FFFF), "grant_table_op": (GNTTABOP_NAMES, 0xFFFF_FFFF),
    "physdev_op": (PHYSDEVOP_NAMES, 0xFFFF_FFFF), "callback_op": (CALLBACKOP_NAMES, 0xFFFF_FFFF),
    "vm_assist": (VMASST_CMD_NAMES, 0xFFFF_FFFF), "xenpmu_op": (XENPMU_NAMES, 0xFFFF_FFFF),
}


def sub_op_name(hypercall: str, cmd: int) -> str | None:
    """The public headers' name of sub-operation ``cmd`` of ``hypercall`` (its first argument), or
    None when the hypercall has no sub-operations or the number is not one the headers define."""
    table = SUB_OPS.get(hypercall)
    if table is None:
        return None
    names, mask = table
    return names.get(cmd & mask)


# --- xen.h: shared_info and vcpu_info (x86-64) --------------------------------------------------
VCPU_INFO_SIZE = 64                             # upcall_pending u8, upcall_mask u8, pending_sel u64 @8, arch @16, time @32
VCPU_INFO_UPCALL_MASK = 1
SHARED_INFO_VCPUS = 32                          # XEN_LEGACY_MAX_VCPUS
SHARED_INFO_EVTCHN_PENDING = 2048
SHARED_INFO_EVTCHN_MASK = 2560

# --- io/console.h: struct xencons_interface --------------------------------------------------
CONS_IN, CONS_IN_SIZE = 0, 1024
CONS_OUT, CONS_OUT_SIZE = 1024, 2048
CONS_IN_CONS, CONS_IN_PROD, CONS_OUT_CONS, CONS_OUT_PROD = 3072, 3076, 3080, 3084

# --- arch-x86/cpuid.h: the hypervisor leaves; arch-x86/hvm/start_info.h ---------------------------
CPUID_BASE = 0x4000_0000
CPUID_SIGNATURE = b"XenVMMXenVMM"
CPUID_LEAVES = 5                                # base+0 .. base+5
HYPERCALL_PAGE_MSR = 0x4000_0000                # base+2 EBX: the MSR that fills the hypercall page
HVM_START_MAGIC = 0x336E_C578
HVM_START_INFO_FORMAT = "<IIIIQQQ"              # magic, version, flags, nr_modules, modlist, cmdline, rsdp
HVM_START_INFO_V1_FORMAT = HVM_START_INFO_FORMAT + "QII"   # + memmap_paddr, memmap_entries, reserved
HVM_MODLIST_ENTRY_FORMAT = "<QQQQ"              # paddr, size, cmdline_paddr, reserved
HVM_MEMMAP_ENTRY_FORMAT = "<QQII"               # addr, size, type (E820 numbering), reserved

# Hypercall page stubs (xen/arch/x86/hvm/vmx/vmx.c, svm/svm.c): "mov $nr, %eax; vmcall|vmmcall; ret",
# 32 bytes apart; entry 23 (iret) is ud2 for HVM.  The page is first filled with int3.
VMCALL = b"\x0f\x01\xc1"
VMMCALL = b"\x0f\x01\xd9"
HYPERCALL_IRET = 23

# --- io/xs_wire.h: the xenstore ring and its messages ------------------------------------------------
XS_RING_REQ, XS_RING_RSP, XS_RING_SIZE = 0, 1024, 1024
XS_REQ_CONS, XS_REQ_PROD, XS_RSP_CONS, XS_RSP_PROD = 2048, 2052, 2056, 2060
XS_MSG_HEADER_FORMAT = "<IIII"                  # struct xsd_sockmsg {type; req_id; tx_id; len}
XENSTORE_PAYLOAD_MAX = 4096
XS_DIRECTORY, XS_READ, XS_WATCH, XS_UNWATCH = 1, 2, 4, 5
XS_TRANSACTION_START, XS_TRANSACTION_END, XS_GET_DOMAIN_PATH, XS_WRITE = 6, 7, 10, 11
XS_MKDIR, XS_RM, XS_ERROR, XS_RESET_WATCHES = 12, 13, 16, 21
XS_NAMES = {1: "directory", 2: "read", 3: "get_perms", 4: "watch", 5: "unwatch", 6: "transaction_start",
            7: "transaction_end", 10: "get_domain_path", 11: "write", 12: "mkdir", 13: "rm", 14: "set_perms",
            21: "reset_watches"}
