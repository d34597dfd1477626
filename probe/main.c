/* What every entry does once its boot information is in struct probe_info. */
#include "probe.h"

const struct probe_platform *probe_platform;
const struct probe_info *probe_current_info;

/* A read of an address the probe's page tables do not map: the IDT's #PF handler takes over. */
static void fault_pf(void)
{
	u64 v;
	__asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(PROBE_FAULT_ADDR) : "memory");
	(void)v;
}

void probe_copy_cmdline(struct probe_info *info, u64 ptr)
{
	if (!ptr)
		return;
	const u8 *s = phys(ptr);
	u32 n = 0;
	while (n < PROBE_MAX_CMDLINE - 1 && phys_ok(ptr + n, 1) && s[n])
		n++;
	memcpy(info->cmdline, s, n);
	info->cmdline[n] = 0;
	info->cmdline_len = n;
	info->have_cmdline = true;
}

/*
 * The hypervisor the CPU reports: CPUID leaf 1 ECX bit 31 says one is present (a bare PC clears it),
 * and leaf 0x40000000 EBX, ECX, EDX hold its 12-byte signature ("XenVMMXenVMM", "KVMKVMKVM\0\0\0").
 */
static void detect_hypervisor(struct probe_info *info)
{
	u32 a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
	if (!(c & (1U << 31)))
		return;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000), "c"(0));
	memcpy(info->hypervisor, &b, 4);
	memcpy(info->hypervisor + 4, &c, 4);
	memcpy(info->hypervisor + 8, &d, 4);
	info->have_hypervisor = true;
}

void probe_main(struct probe_info *info, const struct probe_platform *platform)
{
	probe_platform = platform;
	probe_current_info = info;

	options_parse(info);
	detect_hypervisor(info);
	if (info->have_rsdp)
		acpi_discover(info);
	if (info->have_spin)
		probe_spin(info->spin);

	report_print(info);

	if (info->fault_pf)
		fault_pf(); /* the handler prints the exception line and powers off */
	platform->poweroff(info);
}
