/*
 * hvsim probe kernel: the shared definitions.
 *
 * Every boot entry (today: linux64, pvh and pv; later: EFI) does three environment-specific jobs:
 *   1. bring the CPU into the probe's own state (stack, page tables, GDT, IDT),
 *   2. set up that environment's console (struct probe_console) and shutdown (struct probe_platform),
 *   3. parse that environment's boot information into the one canonical struct probe_info,
 * and then calls probe_main(), which is the same for every entry: it reads the command-line options,
 * walks ACPI, prints the canonical report (report.c) and powers off through the platform.
 */
#ifndef PROBE_H
#define PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define PROBE_LOAD_ADDR 0x100000ULL
/* The probe identity-maps [0, PROBE_MAP_LIMIT) with 2 MiB pages; anything above is unmapped. */
#define PROBE_MAP_LIMIT (64ULL << 30)
/* An address above PROBE_MAP_LIMIT, used by probe.fault=pf to raise a page fault on purpose. */
#define PROBE_FAULT_ADDR 0x7fff00000000ULL

#define PROBE_MAX_MEMMAP 256
#define PROBE_MAX_ACPI_TABLES 64
#define PROBE_MAX_CMDLINE 4096

/* probe.hypercall= (options.c): how the pvh and pv entries make Xen hypercalls. */
#define PROBE_HYPERCALL_PAGE 0   /* the default: call into the hypercall page */
#define PROBE_HYPERCALL_INLINE 1 /* vmcall / vmmcall (pvh) or syscall (pv) directly */

/* E820 types (Linux arch/x86/include/asm/e820/types.h); other environments convert to these. */
#define E820_TYPE_RAM 1
#define E820_TYPE_RESERVED 2
#define E820_TYPE_ACPI 3
#define E820_TYPE_NVS 4
#define E820_TYPE_UNUSABLE 5

struct probe_mem {
	u64 start;
	u64 size;
	u32 type; /* E820 type */
};

/* What the guest observed: filled by an entry's boot-info parser, then by ACPI discovery. */
struct probe_info {
	const char *entry; /* "linux64", "pvh", "pv" */

	bool have_cmdline;             /* false: the environment passed no command line at all */
	u32 cmdline_len;               /* bytes, without the terminating NUL */
	u8 cmdline[PROBE_MAX_CMDLINE]; /* a copy, NUL-terminated */

	u32 memmap_count;
	struct probe_mem memmap[PROBE_MAX_MEMMAP];

	bool have_initrd;
	u64 initrd_addr, initrd_size;

	bool have_rsdp;
	u64 rsdp_addr;

	/* Filled by acpi_discover() from rsdp_addr. */
	u32 acpi_count;
	char acpi_sigs[PROBE_MAX_ACPI_TABLES][4];
	bool have_cpus;
	u32 cpus;
	u64 fadt_addr; /* 0: none found */

	/* Filled by probe_main() from CPUID: leaf 1 ECX bit 31, then leaf 0x40000000's signature. */
	bool have_hypervisor;
	char hypervisor[12];

	/* Command-line options (options.c). */
	bool have_spin;
	u64 spin;
	bool fault_pf;
};

/* A console: one byte out. "\n" -> "\r\n" translation is the console's own business. */
struct probe_console {
	void (*putc)(char c);
};

/* How an environment ends the run. poweroff() must not return. */
struct probe_platform {
	const char *name;
	void (*poweroff)(const struct probe_info *info) __attribute__((noreturn));
};

/* main.c */
void probe_main(struct probe_info *info, const struct probe_platform *platform) __attribute__((noreturn));
/* Copy the NUL-terminated command line at physical ptr (0: none) into info, within the identity map. */
void probe_copy_cmdline(struct probe_info *info, u64 ptr);
extern const struct probe_platform *probe_platform;
extern const struct probe_info *probe_current_info; /* what is known so far, for the exception path */
void probe_halt(void) __attribute__((noreturn)); /* cli; hlt forever (cpu.S) */

/* console.c: formatted output on the current console */
void console_set(const struct probe_console *console);
void con_putc(char c);
void con_puts(const char *s);
void con_hex(u64 v);               /* 0x%x */
void con_hex_width(u64 v, int w);  /* 0x%0<w>x */
void con_hex_digits(u64 v, int w); /* %0<w>x, no 0x */
void con_dec(u64 v);
void con_escaped(const u8 *s, u32 len, bool escape_space);

/* uart16550.c */
extern const struct probe_console uart_console; /* COM1, 0x3f8 */
void uart_init(void);

/* cpu.c / cpu.S */
void cpu_setup(void); /* own page tables, GDT, IDT */
void cpu_load_gdt(const void *gdtr, u16 code_sel, u16 data_sel);
extern const u8 isr_entries[]; /* 32 exception entry points, ISR_ENTRY_SIZE bytes apart */
#define ISR_ENTRY_SIZE 16
void probe_exception(u64 *frame) __attribute__((noreturn));

/* options.c */
void options_parse(struct probe_info *info);
/* probe.hypercall: PROBE_HYPERCALL_* (the last valid value; default page). Prints nothing: the Xen entries
 * need it before they have a console, and options_parse() reports a malformed value later. */
u32 options_hypercall(const struct probe_info *info);

/* xen.c: Xen from a 64-bit PVH or PV guest (constants in xen.h) */
u32 xen_cpuid_base(void); /* the Xen CPUID leaves' base, or 0 without Xen */
/* Sets up hypercalls for method PROBE_HYPERCALL_*; NULL on success, else why not (*msr: the MSR used). */
const char *xen_hypercall_init(u32 base, u32 method, u32 *msr);
/* PV: page = the builder-filled hypercall page, inline = syscall. NULL on success, else why the page
 * cannot be used (syscall is used then). */
const char *xen_hypercall_init_pv(u32 method);
u64 xen_hypercall_page_addr(void);
long xen_hypercall3(u64 nr, u64 a1, u64 a2, u64 a3); /* -ENOSYS before xen_hypercall_init */
extern const struct probe_console xen_console; /* console_io or the ring, buffered per line */
void xen_console_use_ring(void *page, u32 evtchn); /* a PV domU: the console ring, not console_io */
void xen_console_flush(void);
/* XENMEM_memory_map or XENMEM_machine_memory_map, as E820 entries */
long xen_memory_map(u32 cmd, struct probe_mem *out, u32 capacity, u32 *count);
long xen_shutdown_poweroff(void); /* SCHEDOP_shutdown(SHUTDOWN_poweroff); returns only if it failed */
void con_xen_rc(long rc);         /* a hypercall result, signed decimal */

/* acpi.c */
bool acpi_rsdp_valid(u64 addr);
u64 acpi_find_rsdp_bios(void); /* scan 0xE0000-0xFFFFF; 0 if not found */
void acpi_discover(struct probe_info *info);
bool acpi_poweroff(const struct probe_info *info); /* returns only if it could not (or did not) work */

/* report.c */
void report_print(const struct probe_info *info);

/* crc32.c */
u32 crc32(const u8 *p, u64 len);

/* spin.S: 4 instructions per iteration (add, xor, dec, jnz), returns a checksum in rax. */
u64 probe_spin(u64 n);

/* lib.c: what gcc may call even in freestanding code */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/*
 * phys(addr): the pointer through which the probe reads physical address addr, i.e. the identity map.
 * Under linux64 and pvh that is cpu_setup()'s 64 GiB map. Under pv the probe keeps the domain
 * builder's tables: virtual = pseudo-physical over the bootstrap region [0, v_end) (VIRT_BASE 0,
 * PADDR_OFFSET 0), and the start_info pointers the pv entry passes here (mod_start, the console page
 * found through the M2P) are such virtual addresses; nothing above v_end is mapped, so the pv entry
 * never reads ACPI or the BIOS area. phys_ok() only checks the 64 GiB bound; under pv an address
 * outside the bootstrap region faults and the trap table reports it.
 *
 * Is [addr, addr+len) inside the probe's identity map?
 */
static inline bool phys_ok(u64 addr, u64 len)
{
	return addr < PROBE_MAP_LIMIT && len <= PROBE_MAP_LIMIT - addr;
}

static inline const void *phys(u64 addr)
{
	return (const void *)(uintptr_t)addr;
}

static inline u16 rd16(const void *p)
{
	u16 v;
	__builtin_memcpy(&v, p, 2);
	return v;
}
static inline u32 rd32(const void *p)
{
	u32 v;
	__builtin_memcpy(&v, p, 4);
	return v;
}
static inline u64 rd64(const void *p)
{
	u64 v;
	__builtin_memcpy(&v, p, 8);
	return v;
}

static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outw(u16 port, u16 v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

#endif
