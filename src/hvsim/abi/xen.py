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
GNTTABOP_query_size = 6
GNTTAB_QUERY_SIZE_FORMAT = "<H2xIIh"            # {u16 dom; u32 nr_frames; u32 max_nr_frames; i16 status}

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
