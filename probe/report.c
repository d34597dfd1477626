/*
 * The canonical report, identical for every entry (parsed by src/hvsim/probe_report.py):
 *
 *   hvsim-probe: begin v1
 *   entry: <name>
 *   cmdline: <escaped command line>         "cmdline:" alone when the environment passed none
 *   memmap: <count, decimal>
 *   mem: 0x<start %016x> 0x<size %016x> <E820 type, decimal>      one per entry, in the given order
 *   initrd: 0x<addr> 0x<size> crc32=<%08x>   or "initrd: none"
 *   rsdp: 0x<addr>                           or "rsdp: none"
 *   acpi: <signature> ...                    or "acpi: none"   (XSDT/RSDT order, escaped, no spaces)
 *   cpus: <decimal>                          or "cpus: unknown"
 *   hypervisor: <escaped 12-byte signature>  or "hypervisor: none" (CPUID leaf 1 ECX bit 31 clear)
 *   spin: <N, decimal>                       only with probe.spin=N
 *   hvsim-probe: end
 *
 * Escaping (console.c con_escaped): printable ASCII but backslash as is, bytes >= 0x80 raw,
 * backslash as "\\", others as "\xNN"; in ACPI signatures a space is escaped too.
 */
#include "probe.h"

void report_print(const struct probe_info *info)
{
	con_puts("hvsim-probe: begin v1\n");

	con_puts("entry: ");
	con_puts(info->entry);
	con_putc('\n');

	con_puts("cmdline:");
	if (info->have_cmdline) {
		con_putc(' ');
		con_escaped(info->cmdline, info->cmdline_len, false);
	}
	con_putc('\n');

	con_puts("memmap: ");
	con_dec(info->memmap_count);
	con_putc('\n');
	for (u32 i = 0; i < info->memmap_count; i++) {
		const struct probe_mem *m = &info->memmap[i];
		con_puts("mem: ");
		con_hex_width(m->start, 16);
		con_putc(' ');
		con_hex_width(m->size, 16);
		con_putc(' ');
		con_dec(m->type);
		con_putc('\n');
	}

	if (info->have_initrd) {
		con_puts("initrd: ");
		con_hex(info->initrd_addr);
		con_putc(' ');
		con_hex(info->initrd_size);
		con_puts(" crc32=");
		con_hex_digits(crc32(phys(info->initrd_addr), info->initrd_size), 8);
		con_putc('\n');
	} else {
		con_puts("initrd: none\n");
	}

	if (info->have_rsdp) {
		con_puts("rsdp: ");
		con_hex(info->rsdp_addr);
		con_putc('\n');
	} else {
		con_puts("rsdp: none\n");
	}

	u32 tables = info->acpi_count < PROBE_MAX_ACPI_TABLES ? info->acpi_count : PROBE_MAX_ACPI_TABLES;
	con_puts("acpi:");
	if (tables == 0)
		con_puts(" none");
	for (u32 i = 0; i < tables; i++) {
		con_putc(' ');
		con_escaped((const u8 *)info->acpi_sigs[i], 4, true);
	}
	con_putc('\n');

	if (info->have_cpus) {
		con_puts("cpus: ");
		con_dec(info->cpus);
		con_putc('\n');
	} else {
		con_puts("cpus: unknown\n");
	}

	con_puts("hypervisor: ");
	if (info->have_hypervisor)
		con_escaped((const u8 *)info->hypervisor, sizeof(info->hypervisor), true);
	else
		con_puts("none");
	con_putc('\n');
	if (info->have_spin) {
		con_puts("spin: ");
		con_dec(info->spin);
		con_putc('\n');
	}

	con_puts("hvsim-probe: end\n");
}
