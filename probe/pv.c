/*
 * The Xen PV entry ("pv"): start_info_t in, struct probe_info out.
 * Layout: xen/include/public/xen.h start_info (x86-64; offsets in xen.h); Linux
 * arch/x86/xen/enlighten_pv.c and setup.c read the same fields.
 *
 * A PV guest always runs on Xen, so there is no detection and no fallback: hypercalls are syscall or
 * the builder-filled hypercall page (probe.hypercall=inline|page), exceptions go to a trap table
 * (set_trap_table), and:
 *   - console: console_io for the initial domain (SIF_INITDOMAIN); a domU is not the console domain
 *     (Xen refuses its console_io), so it writes the console ring whose machine frame and event
 *     channel start_info gives (xen.c);
 *   - memory map: the initial domain asks for the machine's map (XENMEM_machine_memory_map, as
 *     Linux's dom0 does); a domU for its own, pseudo-physical one (XENMEM_memory_map);
 *   - initrd: mod_start (a virtual address in the bootstrap region; this image has no MOD_START_PFN
 *     note) and mod_len;
 *   - CPUs: the vCPUs that exist, counted with VCPUOP_is_up (Linux xen_fill_possible_map): ids from 0
 *     until Xen answers -ENOENT;
 *   - ACPI: none. A domU has none, and the initial domain's tables lie in machine memory that the
 *     bootstrap region does not map; the probe keeps the builder's page tables, so it reads neither
 *     the RSDP nor the BIOS area (which would be pseudo-physical RAM here);
 *   - power off: SCHEDOP_shutdown(poweroff).
 * Every address the probe reads is a virtual address in [0, v_end), where virtual = pseudo-physical
 * (VIRT_BASE 0, see probe.h's phys()).
 */
#include "probe.h"
#include "xen.h"

#define PV_MAX_VCPUS 4096 /* more than Xen allows a domain: the count stops at the first -ENOENT anyway */

extern const u8 pv_trap_entries[]; /* pv_head.S: 32 handlers, 16 bytes apart */

static u8 start_info[PV_START_INFO_SIZE]; /* the copy */
static u64 start_info_va;
static struct probe_info info;
static struct trap_info trap_table[33]; /* vectors 0..31, then the terminating zero entry */

static bool is_initial_domain(void)
{
	return rd32(start_info + PV_START_INFO_FLAGS) & SIF_INITDOMAIN;
}

static long install_trap_table(void)
{
	for (u32 v = 0; v < 32; v++) {
		trap_table[v].vector = (u8)v;
		trap_table[v].flags = 0; /* DPL 0: no int n from user mode (there is none) */
		trap_table[v].cs = FLAT_KERNEL_CS64;
		trap_table[v].address = (u64)(uintptr_t)pv_trap_entries + v * 16;
	}
	return xen_hypercall3(__HYPERVISOR_set_trap_table, (u64)(uintptr_t)trap_table, 0, 0);
}

/* A domU's console ring: start_info names a machine frame; the M2P gives its pseudo-physical frame,
 * which is its virtual page (VIRT_BASE 0). NULL (and a reason) if that frame is not the domain's. */
static void *console_ring(const char **why)
{
	u64 mfn = rd64(start_info + PV_START_INFO_CONSOLE_MFN);
	u64 pfn = ((const volatile u64 *)MACH2PHYS_VIRT_START)[mfn];
	if (pfn >= rd64(start_info + PV_START_INFO_NR_PAGES)) {
		*why = "the console frame is not one of the domain's pages in the M2P";
		return NULL;
	}
	*why = NULL;
	return (void *)(uintptr_t)(pfn << 12);
}

static void memmap_from_xen(void)
{
	bool machine = is_initial_domain();
	u32 n;
	long rc = xen_memory_map(machine ? XENMEM_machine_memory_map : XENMEM_memory_map, info.memmap,
				 PROBE_MAX_MEMMAP, &n);
	if (rc < 0) {
		con_puts(machine ? "probe: XENMEM_machine_memory_map failed: " : "probe: XENMEM_memory_map failed: ");
		con_xen_rc(rc);
		con_putc('\n');
		return;
	}
	info.memmap_count = n;
}

static void count_vcpus(void)
{
	u32 n = 0;
	for (; n < PV_MAX_VCPUS; n++) {
		long rc = xen_hypercall3(__HYPERVISOR_vcpu_op, VCPUOP_is_up, n, 0);
		if (rc == -XEN_ENOENT)
			break;
		if (rc < 0) {
			con_puts("probe: VCPUOP_is_up(");
			con_dec(n);
			con_puts(") failed: ");
			con_xen_rc(rc);
			con_puts("; the CPU count is unknown\n");
			return;
		}
	}
	info.have_cpus = true;
	info.cpus = n;
}

static void parse_start_info(void)
{
	/* The command line was read before the console existed (for probe.hypercall). */
	memmap_from_xen();

	u64 mod_start = rd64(start_info + PV_START_INFO_MOD_START);
	u64 mod_len = rd64(start_info + PV_START_INFO_MOD_LEN);
	if (mod_start && mod_len) {
		if (rd32(start_info + PV_START_INFO_FLAGS) & SIF_MOD_START_PFN) {
			/* Only for an image with a MOD_START_PFN note: the initrd is then not mapped. */
			con_puts("probe: start_info.mod_start is a pfn (SIF_MOD_START_PFN) the probe did not ask "
				 "for; no initrd\n");
		} else {
			info.have_initrd = true;
			info.initrd_addr = mod_start;
			info.initrd_size = mod_len;
		}
	}
	count_vcpus();
}

static void __attribute__((noreturn)) pv_poweroff(const struct probe_info *i)
{
	(void)i;
	xen_console_flush();
	long rc = xen_shutdown_poweroff();
	con_puts("probe: SCHEDOP_shutdown returned ");
	con_xen_rc(rc);
	con_puts("; halting\n");
	xen_console_flush();
	probe_halt(); /* on Xen, hlt outside ring 0 faults, and with it the domain crashes: an end too */
}

static const struct probe_platform pv_platform = {
	.name = "pv",
	.poweroff = pv_poweroff,
};

/* Called from pv_head.S with .bss cleared and the probe's stack, on the builder's page tables. */
void __attribute__((noreturn)) pv_main(u64 si_va);
void pv_main(u64 si_va)
{
	/* start_info lies outside the probe image: copy it first. cmd_line may lack its NUL. */
	start_info_va = si_va;
	memcpy(start_info, phys(si_va), PV_START_INFO_SIZE);
	start_info[PV_START_INFO_CMD_LINE + MAX_GUEST_CMDLINE - 1] = 0;
	info.entry = "pv";
	probe_platform = &pv_platform; /* so an exception from here on also powers off */
	probe_current_info = &info;

	/* The command line says how to make hypercalls, so it is read before there is a console. A bad
	 * magic means the fields cannot be trusted: then the defaults apply. */
	bool magic_ok = memcmp(start_info, PV_START_INFO_MAGIC, PV_START_INFO_MAGIC_LEN + 1) == 0;
	if (magic_ok)
		probe_copy_cmdline(&info, (u64)(uintptr_t)(start_info + PV_START_INFO_CMD_LINE));
	const char *page_why_not = xen_hypercall_init_pv(options_hypercall(&info));
	long traps_rc = install_trap_table();

	const char *ring_why_not = NULL;
	if (magic_ok && !is_initial_domain()) {
		void *ring = console_ring(&ring_why_not);
		if (ring)
			xen_console_use_ring(ring, rd32(start_info + PV_START_INFO_CONSOLE_EVTCHN));
	}
	console_set(&xen_console);

	if (page_why_not) {
		con_puts("probe: ");
		con_puts(page_why_not);
		con_puts("; using syscall\n");
	}
	if (traps_rc < 0) {
		con_puts("probe: set_trap_table failed: ");
		con_xen_rc(traps_rc);
		con_puts("; an exception will crash the domain\n");
	}
	if (ring_why_not) {
		con_puts("probe: ");
		con_puts(ring_why_not);
		con_puts("; trying console_io\n");
	}
	if (!magic_ok) {
		con_puts("probe: no PV start: start_info at ");
		con_hex(start_info_va);
		con_puts(" does not begin with \"" PV_START_INFO_MAGIC "\"\n");
		pv_poweroff(&info);
	}

	parse_start_info();
	probe_main(&info, &pv_platform);
}
