/*
 * The 64-bit Linux boot-protocol entry ("linux64"): boot_params ("zero page") in, struct probe_info out.
 * Offsets: Linux arch/x86/include/uapi/asm/bootparam.h; meaning: Documentation/arch/x86/boot.rst.
 * Console: COM1 16550. Shutdown: ACPI soft-off, then the isa-debug-exit port, then halt.
 */
#include "probe.h"

#define BP_ACPI_RSDP_ADDR 0x070 /* u64 */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8 /* u8 */
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_CMD_LINE_PTR 0x228
#define BP_E820_TABLE 0x2d0 /* packed {u64 addr, u64 size, u32 type} */
#define BP_E820_ENTRY_SIZE 20
#define BP_E820_MAX 128 /* E820_MAX_ENTRIES_ZEROPAGE */
#define BP_SIZE 4096

#define ISA_DEBUG_EXIT_PORT 0x501 /* QEMU isa-debug-exit default iobase */

static u8 zero_page[BP_SIZE];
static struct probe_info info;

static void parse_boot_params(const u8 *bp)
{
	info.entry = "linux64";

	probe_copy_cmdline(&info, rd32(bp + BP_CMD_LINE_PTR) | (u64)rd32(bp + BP_EXT_CMD_LINE_PTR) << 32);

	u32 n = bp[BP_E820_ENTRIES];
	if (n > BP_E820_MAX) {
		con_puts("probe: boot_params.e820_entries ");
		con_dec(n);
		con_puts(" is more than the zero page holds; reading 128\n");
		n = BP_E820_MAX;
	}
	for (u32 i = 0; i < n; i++) {
		const u8 *e = bp + BP_E820_TABLE + i * BP_E820_ENTRY_SIZE;
		info.memmap[i].start = rd64(e);
		info.memmap[i].size = rd64(e + 8);
		info.memmap[i].type = rd32(e + 16);
	}
	info.memmap_count = n;

	u64 rd_size = rd32(bp + BP_RAMDISK_SIZE) | (u64)rd32(bp + BP_EXT_RAMDISK_SIZE) << 32;
	if (rd_size) {
		info.have_initrd = true;
		info.initrd_addr = rd32(bp + BP_RAMDISK_IMAGE) | (u64)rd32(bp + BP_EXT_RAMDISK_IMAGE) << 32;
		info.initrd_size = rd_size;
	}

	u64 rsdp = rd64(bp + BP_ACPI_RSDP_ADDR);
	if (!rsdp)
		rsdp = acpi_find_rsdp_bios();
	if (rsdp) {
		info.have_rsdp = true;
		info.rsdp_addr = rsdp;
	}
}

static void __attribute__((noreturn)) linux64_poweroff(const struct probe_info *i)
{
	acpi_poweroff(i);
	outb(ISA_DEBUG_EXIT_PORT, 0);
	probe_halt();
}

static const struct probe_platform linux64_platform = {
	.name = "linux64",
	.poweroff = linux64_poweroff,
};

/* Called from head.S with .bss cleared and the probe's stack; bp is still mapped by the loader. */
void __attribute__((noreturn)) linux64_main(const u8 *bp);
void linux64_main(const u8 *bp)
{
	/* The zero page is copied while the loader's map (which must cover it) is still in place. */
	memcpy(zero_page, bp, BP_SIZE);
	uart_init();
	console_set(&uart_console);
	probe_platform = &linux64_platform; /* so an exception from here on also powers off */
	probe_current_info = &info;
	cpu_setup();
	parse_boot_params(zero_page);
	probe_main(&info, &linux64_platform);
}
