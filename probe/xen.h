/*
 * The Xen ABI the probe uses (the pvh entry), in one place. Each group names the Xen public header
 * (xen/include/public/...) it comes from. This header is included by C and by assembly.
 */
#ifndef PROBE_XEN_H
#define PROBE_XEN_H

/* elfnote.h */
#define XEN_ELFNOTE_PHYS32_ENTRY 18 /* desc: the 32-bit physical PVH entry address */

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
#define __HYPERVISOR_memory_op 12
#define __HYPERVISOR_console_io 18
#define __HYPERVISOR_sched_op 29
#define XEN_HYPERCALL_STUB_SIZE 32 /* hypercall page: hypercall N at page + N * 32 */
#define XEN_HYPERCALL_PAGE_SIZE 4096
#define XEN_HYPERCALL_MAX (XEN_HYPERCALL_PAGE_SIZE / XEN_HYPERCALL_STUB_SIZE) /* 128 stubs */

/* xen.h: console_io(cmd, count, buffer) */
#define CONSOLEIO_write 0

/* memory.h: memory_op(XENMEM_memory_map, struct xen_memory_map *) */
#define XENMEM_memory_map 9
#define XEN_E820_ENTRY_SIZE 20 /* the buffer gets packed {u64 addr, u64 size, u32 type} (E820 types) */

/* sched.h: sched_op(SCHEDOP_shutdown, struct sched_shutdown *) */
#define SCHEDOP_shutdown 2
#define SHUTDOWN_poweroff 0

/* errno.h: Xen's errno values (returned negated) */
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

#ifndef __ASSEMBLER__
#include <stdint.h>

/* memory.h, x86-64 layout: XEN_GUEST_HANDLE(void) is a 64-bit pointer, so it sits at offset 8. */
struct xen_memory_map {
	uint32_t nr_entries; /* in: capacity of buffer, in entries; out: entries written */
	uint32_t pad;
	uint64_t buffer; /* guest (here: identity-mapped) address of the e820 entries */
};
_Static_assert(sizeof(struct xen_memory_map) == 16, "struct xen_memory_map is 16 bytes on x86-64");

/* sched.h */
struct sched_shutdown {
	uint32_t reason; /* SHUTDOWN_* */
};
#endif

#endif
