/*
 * The Xen PVH entry ("pvh"): struct hvm_start_info in, struct probe_info out.
 * Layout: xen/include/public/arch-x86/hvm/start_info.h (offsets in xen.h); meaning: Xen
 * docs/misc/pvh.pandoc; Linux arch/x86/platform/pvh/enlighten.c does the same parse.
 *
 * Under Xen (the Xen CPUID leaves are present): console = console_io hypercalls, memory map from
 * start_info v1 or else XENMEM_memory_map, shutdown = SCHEDOP_shutdown(poweroff).
 * Without them (QEMU's or Firecracker's PVH loader, a KVM-like environment): console = COM1, memory
 * map from start_info only. Either way, a shutdown that returns falls back to the linux64 order:
 * ACPI soft-off, the isa-debug-exit port, halt.
 */
#include "probe.h"
#include "xen.h"

#define ISA_DEBUG_EXIT_PORT 0x501 /* QEMU isa-debug-exit default iobase */

static u8 start_info[HVM_START_INFO_V1_SIZE]; /* the copy: 40 bytes of a version 0, 56 of a version >= 1 */
static u64 start_info_paddr;
static struct probe_info info;
static bool on_xen; /* Xen CPUID leaves found and hypercalls set up */

static void memmap_from_start_info(u64 addr, u32 n)
{
	if (n > PROBE_MAX_MEMMAP) {
		con_puts("probe: hvm_start_info.memmap_entries ");
		con_dec(n);
		con_puts(" is more than the probe holds; reading ");
		con_dec(PROBE_MAX_MEMMAP);
		con_putc('\n');
		n = PROBE_MAX_MEMMAP;
	}
	if (!phys_ok(addr, (u64)n * HVM_MEMMAP_ENTRY_SIZE)) {
		con_puts("probe: hvm_start_info.memmap_paddr ");
		con_hex(addr);
		con_puts(" is outside the probe's map; the memory map is empty\n");
		return;
	}
	for (u32 i = 0; i < n; i++) {
		const u8 *e = (const u8 *)phys(addr) + (u64)i * HVM_MEMMAP_ENTRY_SIZE;
		info.memmap[i].start = rd64(e + HVM_MEMMAP_ADDR);
		info.memmap[i].size = rd64(e + HVM_MEMMAP_SIZE);
		info.memmap[i].type = rd32(e + HVM_MEMMAP_TYPE); /* XEN_HVM_MEMMAP_TYPE_* are the E820 types */
	}
	info.memmap_count = n;
}

static void memmap_from_xen(void)
{
	u32 n;
	long rc = xen_memory_map(XENMEM_memory_map, info.memmap, PROBE_MAX_MEMMAP, &n);
	if (rc < 0) {
		con_puts("probe: XENMEM_memory_map failed: ");
		con_xen_rc(rc);
		con_putc('\n');
		return;
	}
	info.memmap_count = n;
}

static void parse_start_info(const u8 *si)
{
	u32 version = rd32(si + HVM_START_INFO_VERSION);

	/* The command line was read before the console existed (for probe.hypercall). */

	if (version >= 1 && rd32(si + HVM_START_INFO_MEMMAP_ENTRIES) != 0)
		memmap_from_start_info(rd64(si + HVM_START_INFO_MEMMAP_PADDR),
				       rd32(si + HVM_START_INFO_MEMMAP_ENTRIES));
	else if (on_xen)
		memmap_from_xen();
	else
		con_puts("probe: hvm_start_info has no memory map and there is no Xen to ask; the map is empty\n");

	u32 nr_modules = rd32(si + HVM_START_INFO_NR_MODULES);
	u64 modlist = rd64(si + HVM_START_INFO_MODLIST_PADDR);
	if (nr_modules >= 1 && modlist != 0) {
		if (phys_ok(modlist, HVM_MODLIST_ENTRY_SIZE)) {
			const u8 *m = phys(modlist); /* module 0 is the initrd by convention */
			info.have_initrd = true;
			info.initrd_addr = rd64(m + HVM_MODLIST_PADDR);
			info.initrd_size = rd64(m + HVM_MODLIST_SIZE);
		} else {
			con_puts("probe: hvm_start_info.modlist_paddr ");
			con_hex(modlist);
			con_puts(" is outside the probe's map; no initrd\n");
		}
	}

	u64 rsdp = rd64(si + HVM_START_INFO_RSDP_PADDR);
	if (!rsdp)
		rsdp = acpi_find_rsdp_bios();
	if (rsdp) {
		info.have_rsdp = true;
		info.rsdp_addr = rsdp;
	}
}

static void __attribute__((noreturn)) pvh_poweroff(const struct probe_info *i)
{
	if (on_xen) {
		xen_console_flush();
		long rc = xen_shutdown_poweroff();
		con_puts("probe: SCHEDOP_shutdown returned ");
		con_xen_rc(rc);
		con_puts("; trying ACPI soft-off and port 0x501\n");
	}
	acpi_poweroff(i);
	outb(ISA_DEBUG_EXIT_PORT, 0);
	probe_halt();
}

static const struct probe_platform pvh_platform = {
	.name = "pvh",
	.poweroff = pvh_poweroff,
};

/*
 * Called from pvh_head.S in long mode with .bss cleared, the probe's stack and a temporary identity map
 * of [0, 4 GiB), which covers start_info (EBX is a 32-bit address).
 */
void __attribute__((noreturn)) pvh_main(u64 si_paddr);
void pvh_main(u64 si_paddr)
{
	/* start_info lies outside the probe image: copy it first. */
	start_info_paddr = si_paddr;
	memcpy(start_info, phys(si_paddr), HVM_START_INFO_V0_SIZE);
	if (rd32(start_info + HVM_START_INFO_VERSION) >= 1)
		memcpy(start_info + HVM_START_INFO_V0_SIZE, (const u8 *)phys(si_paddr) + HVM_START_INFO_V0_SIZE,
		       HVM_START_INFO_V1_SIZE - HVM_START_INFO_V0_SIZE);
	info.entry = "pvh";
	probe_platform = &pvh_platform; /* so an exception from here on also powers off */
	probe_current_info = &info;
	cpu_setup(); /* the probe's 64 GiB map, GDT and IDT */

	/* The command line says how to make hypercalls, so it is read before there is a console. A bad
	 * magic means the pointers cannot be trusted: then the defaults apply. */
	bool magic_ok = rd32(start_info + HVM_START_INFO_MAGIC) == XEN_HVM_START_MAGIC_VALUE;
	if (magic_ok)
		probe_copy_cmdline(&info, rd64(start_info + HVM_START_INFO_CMDLINE_PADDR));

	u32 base = xen_cpuid_base(), msr = 0;
	const char *why_not = NULL;
	if (base) {
		why_not = xen_hypercall_init(base, options_hypercall(&info), &msr);
		on_xen = why_not == NULL;
	}
	if (on_xen) {
		console_set(&xen_console);
	} else {
		uart_init();
		console_set(&uart_console);
	}
	if (why_not) {
		con_puts("probe: Xen CPUID leaves at ");
		con_hex(base);
		con_puts(" but no hypercalls: ");
		con_puts(why_not);
		con_puts(" (MSR ");
		con_hex(msr);
		con_puts(", page ");
		con_hex(xen_hypercall_page_addr());
		con_puts("); using COM1\n");
	}

	if (!magic_ok) {
		con_puts("probe: no PVH start: hvm_start_info at ");
		con_hex(start_info_paddr);
		con_puts(" has magic ");
		con_hex(rd32(start_info + HVM_START_INFO_MAGIC));
		con_puts(", expected ");
		con_hex(XEN_HVM_START_MAGIC_VALUE);
		con_putc('\n');
		pvh_poweroff(&info);
	}

	parse_start_info(start_info);
	probe_main(&info, &pvh_platform);
}
