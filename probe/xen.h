/*
 * The Xen ABI the probe uses (the pvh and pv entries), in one place. Each group names the Xen public header
 * (xen/include/public/...) it comes from. This header is included by C and by assembly.
 */
#ifndef PROBE_XEN_H
#define PROBE_XEN_H

/* elfnote.h */
#define XEN_ELFNOTE_ENTRY 1           /* desc: the virtual address of the PV entry */
#define XEN_ELFNOTE_HYPERCALL_PAGE 2  /* desc: the virtual address of the page Xen fills with stubs */
#define XEN_ELFNOTE_VIRT_BASE 3       /* desc: where the image is mapped (virtual - p_paddr + PADDR_OFFSET) */
#define XEN_ELFNOTE_PADDR_OFFSET 4    /* desc: subtracted from p_paddr */
#define XEN_ELFNOTE_XEN_VERSION 5     /* string: must start with "xen-3.0" */
#define XEN_ELFNOTE_GUEST_OS 6        /* string */
#define XEN_ELFNOTE_LOADER 8          /* string: "generic" (or GUEST_OS "linux") for a PV image */
#define XEN_ELFNOTE_PHYS32_ENTRY 18   /* desc: the 32-bit physical PVH entry address */

/* arch-x86/cpuid.h: the Xen leaves are at the first base 0x40000000 + 0x100*i whose signature matches.
 * Linux (arch/x86/include/asm/xen/hypervisor.h, xen_cpuid_base) scans 0x40000000..0x4000ff00 and
 * wants at least 2 leaves after the base (EAX - base >= 2). */
#define XEN_CPUID_FIRST_LEAF 0x40000000U
#define XEN_CPUID_LAST_BASE 0x4000ff00U /* the last base the scan tries (Linux: base < 0x40010000) */
#define XEN_CPUID_BASE_STEP 0x100U
#define XEN_CPUID_SIGNATURE_EBX 0x566e6558U /* "XenV" */
#define XEN_CPUID_SIGNATURE_ECX 0x65584d4dU /* "MMXe" */
#define XEN_CPUID_SIGNATURE_EDX 0x4d4d566eU /* "nVMM" */
#define XEN_CPUID_MIN_LEAVES 2              /* base+2 (hypercall page MSR) must exist */
#define XEN_CPUID_LEAF_HYPERCALL 2          /* base+2: EAX = number of pages, EBX = MSR index */

/* xen.h: hypercall numbers (64-bit ABI: RAX = number, args RDI RSI RDX R10 R8, result in RAX) */
#define __HYPERVISOR_set_trap_table 0 /* PV only */
#define __HYPERVISOR_memory_op 12
#define __HYPERVISOR_console_io 18
#define __HYPERVISOR_vcpu_op 24
#define __HYPERVISOR_sched_op 29
#define __HYPERVISOR_event_channel_op 32
#define XEN_HYPERCALL_STUB_SIZE 32 /* hypercall page: hypercall N at page + N * 32 */
#define XEN_HYPERCALL_PAGE_SIZE 4096
#define XEN_HYPERCALL_MAX (XEN_HYPERCALL_PAGE_SIZE / XEN_HYPERCALL_STUB_SIZE) /* 128 stubs */

/* xen.h: console_io(cmd, count, buffer) */
#define CONSOLEIO_write 0

/* memory.h: memory_op(XENMEM_memory_map, struct xen_memory_map *) */
#define XENMEM_memory_map 9          /* the caller's own (pseudo-physical for PV) map */
#define XENMEM_machine_memory_map 10 /* the machine's map: the initial domain only */
#define XEN_E820_ENTRY_SIZE 20 /* the buffer gets packed {u64 addr, u64 size, u32 type} (E820 types) */

/* sched.h: sched_op(SCHEDOP_shutdown, struct sched_shutdown *) */
#define SCHEDOP_shutdown 2
#define SHUTDOWN_poweroff 0

/* vcpu.h: vcpu_op(VCPUOP_is_up, vcpu id, NULL) = 1 up, 0 down, -ENOENT for an id past the last vCPU */
#define VCPUOP_is_up 3

/* event_channel.h: event_channel_op(EVTCHNOP_send, struct evtchn_send { u32 port; } *) */
#define EVTCHNOP_send 4

/* io/console.h: struct xencons_interface, the console ring page of a PV domU */
#define XENCONS_OUT 1024       /* char out[2048] */
#define XENCONS_OUT_SIZE 2048  /* a power of two: out[prod & (size - 1)] */
#define XENCONS_OUT_CONS 3080  /* u32, advanced by the backend */
#define XENCONS_OUT_PROD 3084  /* u32, advanced by the guest */

/* errno.h: Xen's errno values (returned negated) */
#define XEN_ENOENT 2
#define XEN_ENOSYS 38

/* arch-x86/hvm/start_info.h: struct hvm_start_info, pointed to by EBX at the PVH entry */
#define XEN_HVM_START_MAGIC_VALUE 0x336ec578U
#define HVM_START_INFO_MAGIC 0           /* u32 */
#define HVM_START_INFO_VERSION 4         /* u32: 0 or 1 */
#define HVM_START_INFO_FLAGS 8           /* u32 */
#define HVM_START_INFO_NR_MODULES 12     /* u32 */
#define HVM_START_INFO_MODLIST_PADDR 16  /* u64: struct hvm_modlist_entry[nr_modules] */
#define HVM_START_INFO_CMDLINE_PADDR 24  /* u64: NUL-terminated, 0 = none */
#define HVM_START_INFO_RSDP_PADDR 32     /* u64: 0 = none */
#define HVM_START_INFO_MEMMAP_PADDR 40   /* u64, version >= 1 */
#define HVM_START_INFO_MEMMAP_ENTRIES 48 /* u32, version >= 1 */
#define HVM_START_INFO_V0_SIZE 40
#define HVM_START_INFO_V1_SIZE 56
#define HVM_MODLIST_ENTRY_SIZE 32 /* u64 paddr, u64 size, u64 cmdline_paddr, u64 reserved */
#define HVM_MODLIST_PADDR 0
#define HVM_MODLIST_SIZE 8
#define HVM_MEMMAP_ENTRY_SIZE 24 /* u64 addr, u64 size, u32 type (XEN_HVM_MEMMAP_TYPE_* = E820), u32 reserved */
#define HVM_MEMMAP_ADDR 0
#define HVM_MEMMAP_SIZE 8
#define HVM_MEMMAP_TYPE 16

/* xen.h: start_info_t (x86-64), pointed to by RSI at the PV entry (a virtual address) */
#define PV_START_INFO_MAGIC "xen-3.0-x86_64" /* char magic[32], NUL-padded */
#define PV_START_INFO_MAGIC_LEN 14
#define PV_START_INFO_NR_PAGES 32      /* u64: pages of the domain */
#define PV_START_INFO_FLAGS 48         /* u32: SIF_* */
#define PV_START_INFO_CONSOLE_MFN 72   /* u64: console.domU.mfn, a machine frame (domU only) */
#define PV_START_INFO_CONSOLE_EVTCHN 80 /* u32: console.domU.evtchn */
#define PV_START_INFO_MOD_START 112    /* u64: virtual address of the initrd (a pfn with SIF_MOD_START_PFN) */
#define PV_START_INFO_MOD_LEN 120      /* u64: its length, 0 = none */
#define PV_START_INFO_CMD_LINE 128     /* char cmd_line[MAX_GUEST_CMDLINE] */
#define PV_START_INFO_SIZE 1168
#define MAX_GUEST_CMDLINE 1024
#define SIF_PRIVILEGED (1 << 0)
#define SIF_INITDOMAIN (1 << 1)
#define SIF_MOD_START_PFN (1 << 3)

/* arch-x86/xen-x86_64.h: the read-only M2P (machine frame -> pseudo-physical frame, one u64 each),
 * mapped by Xen in every PV guest's page tables; and the kernel's code selector. */
#define MACH2PHYS_VIRT_START 0xffff800000000000ULL
#define FLAT_KERNEL_CS64 0xe033

#ifndef __ASSEMBLER__
#include <stdint.h>

/* memory.h, x86-64 layout: XEN_GUEST_HANDLE(void) is a 64-bit pointer, so it sits at offset 8. */
struct xen_memory_map {
	uint32_t nr_entries; /* in: capacity of buffer, in entries; out: entries written */
	uint32_t pad;
	uint64_t buffer; /* guest (here: identity-mapped) address of the e820 entries */
};
_Static_assert(sizeof(struct xen_memory_map) == 16, "struct xen_memory_map is 16 bytes on x86-64");

/* arch-x86/xen.h: one set_trap_table entry; a zero address ends the table. */
struct trap_info {
	uint8_t vector;
	uint8_t flags; /* bits 0-1: the DPL that may raise it with int n; bit 2: mask events */
	uint16_t cs;
	uint32_t pad;
	uint64_t address;
};
_Static_assert(sizeof(struct trap_info) == 16, "struct trap_info is 16 bytes on x86-64");

/* sched.h */
struct sched_shutdown {
	uint32_t reason; /* SHUTDOWN_* */
};
#endif

#endif
