"""The Xen x86-64 PV guest ABI: start_info, the start-of-day layout, the PV MMU and CPU hypercalls.

Shared numbers (hypercall numbers, errno, console, sched_op, memory_op basics) are in ``xen.py``;
this module holds what only a PV guest uses.  Sources, by group:
- ``xen/include/public/xen.h``: start_info_t, SIF_*, MMU_*/MMUEXT_*/UVMF_*, VMASST_*, trap_info,
  multicall_entry, the iret hypercall number, VIRQs;
- ``xen/include/public/arch-x86/xen-x86_64.h``: FLAT_* selectors, the hypervisor hole and the
  read-only M2P, struct iret_context, VGCF_in_syscall, SEGBASE_*;
- ``xen/include/public/arch-x86/xen.h``: struct trap_info, the forced-emulation prefix;
- ``xen/include/public/callback.h``, ``physdev.h``, ``platform.h``, ``memory.h``;
- ``xen/arch/x86/include/asm/config.h``: PERDOMAIN_VIRT_START, FIRST_RESERVED_GDT_PAGE;
- ``tools/libs/guest/xg_dom_x86.c``: the page-table entry flags of the bootstrap tables.
"""

from __future__ import annotations

# --- xen.h: start_info_t (x86-64) -----------------------------------------------------------------
START_INFO_MAGIC = b"xen-3.0-x86_64"
# magic[32], nr_pages, shared_info, flags(u32), store_mfn, store_evtchn(u32), console{mfn, evtchn(u32)}
# | console.dom0{info_off, info_size}, pt_base, nr_pt_frames, mfn_list, mod_start, mod_len,
# cmd_line[1024], first_p2m_pfn, nr_p2m_frames
START_INFO_FORMAT = "<32sQQI4xQI4xQI4xQQQQQ1024sQQ"
START_INFO_SIZE = 1168
START_INFO_DOM0_CONSOLE_FORMAT = "<II"              # at offset 72: info_off, info_size
START_INFO_DOM0_CONSOLE_OFFSET = 72
MAX_GUEST_CMDLINE = 1024
SIF_PRIVILEGED, SIF_INITDOMAIN, SIF_MULTIBOOT_MOD, SIF_MOD_START_PFN = 1 << 0, 1 << 1, 1 << 2, 1 << 3

# --- arch-x86/xen-x86_64.h: selectors, the hypervisor hole, the M2P -------------------------------
FLAT_RING3_CS32 = 0xE023          # GDT index 7172 (Xen's GDT page)
FLAT_RING3_CS64 = 0xE033          # GDT index 7174
FLAT_RING3_DS32 = 0xE02B          # GDT index 7173
FLAT_RING3_DS64 = 0x0000          # the NULL selector
FLAT_RING3_SS32 = 0xE02B
FLAT_RING3_SS64 = 0xE02B
FLAT_KERNEL_CS64 = FLAT_RING3_CS64
FLAT_KERNEL_SS64 = FLAT_RING3_SS64
FLAT_KERNEL_DS64 = FLAT_RING3_DS64
FLAT_USER_CS64, FLAT_USER_SS64 = FLAT_RING3_CS64, FLAT_RING3_SS64
FLAT_USER_CS32, FLAT_USER_SS32 = FLAT_RING3_CS32, FLAT_RING3_SS32
HYPERVISOR_VIRT_START = 0xFFFF_8000_0000_0000
HYPERVISOR_VIRT_END = 0xFFFF_8800_0000_0000
MACH2PHYS_VIRT_START = 0xFFFF_8000_0000_0000      # RO_MPT_VIRT_START: one u64 per machine frame
MACH2PHYS_VIRT_END = 0xFFFF_8040_0000_0000
INVALID_M2P_ENTRY = 0xFFFF_FFFF_FFFF_FFFF
INVALID_P2M_ENTRY = 0xFFFF_FFFF_FFFF_FFFF
# struct iret_context {rax, r11, rcx, flags, rip, cs, rflags, rsp, ss}
IRET_CONTEXT_FORMAT = "<9Q"
VGCF_IN_SYSCALL = 1 << 8
SEGBASE_FS, SEGBASE_GS_USER, SEGBASE_GS_KERNEL, SEGBASE_GS_USER_SEL = 0, 1, 2, 3
# xen.h MMUEXT_NEW_USER_BASEPTR: the user page table a 64-bit PV guest runs on in user mode (0: none)

# --- asm/config.h: per-domain area (the GDT the CPU uses) -------------------------------------------
PERDOMAIN_VIRT_START = 0xFFFF_8200_0000_0000       # L4 slot 260
FIRST_RESERVED_GDT_PAGE = 14
FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_PAGE * 512
GDT_LIMIT = (FIRST_RESERVED_GDT_PAGE + 1) * 4096 - 1   # LAST_RESERVED_GDT_BYTE

# --- xen.h: the PV MMU ------------------------------------------------------------------------------
MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE, MMU_PT_UPDATE_PRESERVE_AD, MMU_PT_UPDATE_NO_TRANSLATE = 0, 1, 2, 3
MMU_UPDATE_FORMAT = "<QQ"                           # {u64 ptr; u64 val}
MMU_UPDATE_PREEMPTED = 1 << 31                      # count flag of a continued mmu_update/mmuext_op
MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE, MMUEXT_PIN_L4_TABLE = 0, 1, 2, 3
MMUEXT_UNPIN_TABLE, MMUEXT_NEW_BASEPTR, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL = 4, 5, 6, 7
MMUEXT_TLB_FLUSH_MULTI, MMUEXT_INVLPG_MULTI, MMUEXT_TLB_FLUSH_ALL, MMUEXT_INVLPG_ALL = 8, 9, 10, 11
MMUEXT_FLUSH_CACHE, MMUEXT_SET_LDT, MMUEXT_NEW_USER_BASEPTR = 12, 13, 15
MMUEXT_CLEAR_PAGE, MMUEXT_COPY_PAGE, MMUEXT_FLUSH_CACHE_GLOBAL = 16, 17, 18
MMUEXT_NAMES = {
    0: "pin_l1_table", 1: "pin_l2_table", 2: "pin_l3_table", 3: "pin_l4_table", 4: "unpin_table",
    5: "new_baseptr", 6: "tlb_flush_local", 7: "invlpg_local", 8: "tlb_flush_multi", 9: "invlpg_multi",
    10: "tlb_flush_all", 11: "invlpg_all", 12: "flush_cache", 13: "set_ldt", 15: "new_user_baseptr",
    16: "clear_page", 17: "copy_page", 18: "flush_cache_global",
}
MMUEXT_OP_FORMAT = "<I4xQQ"                         # {u32 cmd; arg1 (mfn | linear_addr); arg2}
UVMF_NONE, UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_FLUSHTYPE_MASK = 0, 1, 2, 3
VMASST_CMD_enable, VMASST_CMD_disable = 0, 1
VMASST_TYPES = {0: "4gb_segments", 1: "4gb_segments_notify", 2: "writable_pagetables",
                3: "pae_extended_cr3", 4: "architectural_iopl", 5: "runstate_update_flag", 32: "m2p_strict"}
VMASST_ARCHITECTURAL_IOPL = 4

# --- arch-x86/xen.h: trap table, and the forced-emulation prefix ------------------------------------
TRAP_INFO_FORMAT = "<BBH4xQ"                        # {u8 vector; u8 flags; u16 cs; unsigned long address}
TI_FLAG_CLEAR_IF = 1 << 2                           # flags bits 0-1: DPL; bit 2: mask events (like IF=0) on entry
XEN_EMULATE_PREFIX = b"\x0f\x0bxen"                 # ud2; .ascii "xen" -- then the emulated instruction
CPUID_INSN = b"\x0f\xa2"

# --- xen.h: multicall --------------------------------------------------------------------------------
MULTICALL_ENTRY_FORMAT = "<QQ6Q"                    # {op; result; args[6]}
HYPERCALL_IRET = 23

# --- callback.h ---------------------------------------------------------------------------------------
CALLBACKOP_register, CALLBACKOP_unregister = 0, 1
CALLBACK_REGISTER_FORMAT = "<HH4xQ"                 # {u16 type; u16 flags; xen_callback_t address}
CALLBACK_TYPES = {0: "event", 1: "failsafe", 2: "syscall", 3: "sysenter_deprecated", 4: "nmi",
                  5: "sysenter", 7: "syscall32"}
CALLBACKF_mask_events = 1

# --- physdev.h ------------------------------------------------------------------------------------------
PHYSDEVOP_set_iopl, PHYSDEVOP_set_iobitmap = 6, 7
PHYSDEV_SET_IOBITMAP_FORMAT = "<QI"                 # {handle bitmap; u32 nr_ports}

# --- platform.h (dom0) --------------------------------------------------------------------------------
XENPF_INTERFACE_VERSION = 0x0300_0001
XENPF_settime32, XENPF_settime64 = 17, 62
SETTIME32_FORMAT = "<IIQ"                           # {u32 secs; u32 nsecs; u64 system_time}
SETTIME64_FORMAT = "<QIIQ"                          # {u64 secs; u32 nsecs; u32 mbz; u64 system_time}
XENPF_firmware_info = 50
XEN_FW_DISK_INFO, XEN_FW_DISK_MBR_SIGNATURE, XEN_FW_VBEDDC_INFO = 1, 2, 3
XEN_FW_EFI_INFO, XEN_FW_KBD_SHIFT_FLAGS = 4, 5
PLATFORM_OP_HEADER_FORMAT = "<II"                   # {u32 cmd; u32 interface_version}; then the union
FIRMWARE_INFO_FORMAT = "<II"                        # {u32 type; u32 index}; then per-type data
XENPF_get_cpuinfo = 55                              # struct xenpf_pcpuinfo: {u32 xen_cpuid (in);
PCPUINFO_FORMAT = "<IIIII"                          #   u32 max_present, flags, apic_id, acpi_id (out)}
XEN_PCPU_FLAGS_ONLINE, XEN_PCPU_FLAGS_INVALID = 1, 2

# --- memory.h: PV-only memory_op commands -------------------------------------------------------------
XENMEM_machphys_mfn_list = 5
XENMEM_machphys_mapping = 12
XENMEM_exchange = 11                                # PV only: struct xen_memory_exchange {in; out; nr_exchanged}
MEMORY_RESERVATION_FORMAT = "<QQIIH6x"              # {handle extent_start; nr_extents; u32 extent_order;
MEMORY_EXCHANGE_SIZE = 72                           #  u32 mem_flags (address_bits: bits 0-7); domid_t}
MAX_EXCHANGE_ORDER = 18                             # memory.c: orders above MAX_ORDER are -EFAULT/-EINVAL
MACHPHYS_MAPPING_FORMAT = "<QQQ"                    # {v_start; v_end; max_mfn}
MACHPHYS_MFN_LIST_FORMAT = "<I4xQI"                 # {u32 max_extents; handle extent_start; u32 nr_extents}

# --- x86 page-table entry bits the PV MMU checks (and xg_dom_x86.c's bootstrap flags) ---------------
PTE_PRESENT, PTE_RW, PTE_USER, PTE_ACCESSED, PTE_DIRTY, PTE_PSE = 1, 2, 4, 0x20, 0x40, 0x80
PTE_NX = 1 << 63
PTE_GLOBAL = 0x100
# Xen's software bit for a 64-bit PV guest's kernel-only L1 entry (asm/x86_64/page.h _PAGE_GUEST_KERNEL,
# flag bit 12, i.e. PTE bit 52): set with _PAGE_USER on entries the guest wrote without _PAGE_USER.
PTE_GUEST_KERNEL = 1 << 52
PTE_ADDR_MASK = 0x000F_FFFF_FFFF_F000
L1_PROT = PTE_PRESENT | PTE_RW | PTE_ACCESSED                          # 0x23
L2_PROT = L3_PROT = L4_PROT = L1_PROT | PTE_DIRTY | PTE_USER            # 0x67
