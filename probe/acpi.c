/*
 * ACPI as the probe reads it (ACPI 6.x, chapter 5): RSDP -> XSDT (revision >= 2) or RSDT -> tables.
 * Every table's checksum is checked; a table that fails is reported on the console (before the report)
 * and left out. From the MADT the probe counts usable CPUs, from the FADT it finds the PM1a control
 * block and the DSDT, whose \_S5_ package gives the sleep type for soft-off.
 */
#include "probe.h"

#define HDR_LEN 36 /* struct acpi_table_header */

static bool sum_ok(u64 addr, u64 len)
{
	const u8 *p = phys(addr);
	u8 sum = 0;
	for (u64 i = 0; i < len; i++)
		sum = (u8)(sum + p[i]);
	return sum == 0;
}

bool acpi_rsdp_valid(u64 addr)
{
	const u8 *p = phys(addr);

	if (!phys_ok(addr, 20) || memcmp(p, "RSD PTR ", 8) != 0 || !sum_ok(addr, 20))
		return false;
	if (p[15] >= 2) {
		u32 len = rd32(p + 20);
		if (len < 36 || !phys_ok(addr, len) || !sum_ok(addr, len))
			return false;
	}
	return true;
}

u64 acpi_find_rsdp_bios(void)
{
	for (u64 a = 0xe0000; a < 0x100000; a += 16)
		if (acpi_rsdp_valid(a))
			return a;
	return 0;
}

/* A complete table with a valid checksum at addr? */
static bool table_ok(u64 addr)
{
	if (addr == 0 || !phys_ok(addr, HDR_LEN))
		return false;
	u32 len = rd32((const u8 *)phys(addr) + 4);
	return len >= HDR_LEN && phys_ok(addr, len) && sum_ok(addr, len);
}

static bool sig_is(u64 addr, const char *sig)
{
	return memcmp(phys(addr), sig, 4) == 0;
}

static void warn_table(const char *what, u64 addr)
{
	con_puts("probe: acpi: ");
	con_puts(what);
	con_puts(" at ");
	con_hex(addr);
	con_puts(" is unreadable or fails its checksum; ignored\n");
}

/* MADT (signature "APIC"): processor local APIC (type 0) and x2APIC (type 9) entries that are enabled
 * (flags bit 0) or online-capable (bit 1). */
static u32 madt_count_cpus(u64 addr)
{
	const u8 *t = phys(addr);
	u32 len = rd32(t + 4), count = 0;

	for (u32 off = HDR_LEN + 8; off + 2 <= len;) {
		u8 type = t[off], elen = t[off + 1];
		if (elen < 2 || off + elen > len)
			break;
		if (type == 0 && elen >= 8 && (rd32(t + off + 4) & 3))
			count++;
		else if (type == 9 && elen >= 16 && (rd32(t + off + 8) & 3))
			count++;
		off += elen;
	}
	return count;
}

void acpi_discover(struct probe_info *info)
{
	const u8 *rsdp = phys(info->rsdp_addr);
	u64 root = 0;
	u32 entry_size = 0;

	if (!acpi_rsdp_valid(info->rsdp_addr)) {
		warn_table("RSDP", info->rsdp_addr);
		return;
	}
	if (rsdp[15] >= 2) {
		u64 xsdt = rd64(rsdp + 24);
		if (table_ok(xsdt) && sig_is(xsdt, "XSDT")) {
			root = xsdt;
			entry_size = 8;
		} else if (xsdt) {
			warn_table("XSDT", xsdt);
		}
	}
	if (!root) {
		u64 rsdt = rd32(rsdp + 16);
		if (table_ok(rsdt) && sig_is(rsdt, "RSDT")) {
			root = rsdt;
			entry_size = 4;
		} else {
			warn_table("RSDT", rsdt);
			return;
		}
	}

	const u8 *r = phys(root);
	u32 n = (rd32(r + 4) - HDR_LEN) / entry_size;
	for (u32 i = 0; i < n; i++) {
		const u8 *e = r + HDR_LEN + i * entry_size;
		u64 addr = entry_size == 8 ? rd64(e) : rd32(e);
		if (!table_ok(addr)) {
			warn_table("a table listed in the root table", addr);
			continue;
		}
		if (info->acpi_count < PROBE_MAX_ACPI_TABLES) {
			memcpy(info->acpi_sigs[info->acpi_count++], phys(addr), 4);
		} else if (info->acpi_count == PROBE_MAX_ACPI_TABLES) {
			con_puts("probe: acpi: more tables than the probe lists; the rest are left out\n");
			info->acpi_count++; /* warn once; report.c prints at most PROBE_MAX_ACPI_TABLES */
		}
		if (sig_is(addr, "APIC") && !info->have_cpus) {
			info->have_cpus = true;
			info->cpus = madt_count_cpus(addr);
		}
		if (sig_is(addr, "FACP") && !info->fadt_addr)
			info->fadt_addr = addr;
	}
}

/* SLP_TYPa of \_S5_ from the DSDT's AML: Name(_S5_, Package(){a, b, ...}); -1 if not found. */
static int dsdt_s5_slp_typa(u64 dsdt)
{
	const u8 *t = phys(dsdt);
	u32 len = rd32(t + 4);

	for (u32 i = HDR_LEN; i + 5 <= len; i++) {
		if (memcmp(t + i, "_S5_", 4) != 0 || t[i + 4] != 0x12) /* PackageOp */
			continue;
		u32 j = i + 5;
		j += 1 + (t[j] >> 6); /* PkgLength: lead byte bits 7:6 = count of following bytes */
		j += 1;               /* NumElements */
		if (j + 1 > len)
			return -1;
		switch (t[j]) {
		case 0x00: /* ZeroOp */
			return 0;
		case 0x01: /* OneOp */
			return 1;
		case 0x0a: /* BytePrefix */
			if (j + 2 > len)
				return -1;
			return t[j + 1] & 7;
		default:
			continue;
		}
	}
	return -1;
}

#define FADT_DSDT 40
#define FADT_PM1A_CNT_BLK 64
#define FADT_X_DSDT 140
#define FADT_X_PM1A_CNT_BLK 172 /* Generic Address Structure: space, width, offset, access, u64 address */
#define GAS_SPACE_MEMORY 0
#define GAS_SPACE_IO 1
#define SLP_EN (1u << 13)

bool acpi_poweroff(const struct probe_info *info)
{
	if (!info || !info->fadt_addr)
		return false;
	const u8 *f = phys(info->fadt_addr);
	u32 len = rd32(f + 4);

	u64 dsdt = 0;
	if (len >= FADT_X_DSDT + 8)
		dsdt = rd64(f + FADT_X_DSDT);
	if (!dsdt)
		dsdt = rd32(f + FADT_DSDT);
	if (!table_ok(dsdt) || !sig_is(dsdt, "DSDT")) {
		warn_table("DSDT", dsdt);
		return false;
	}
	int slp_typ = dsdt_s5_slp_typa(dsdt);
	if (slp_typ < 0) {
		con_puts("probe: acpi: no \\_S5_ package in the DSDT; no ACPI soft-off\n");
		return false;
	}
	u16 value = (u16)((unsigned)slp_typ << 10 | SLP_EN);

	u8 space = GAS_SPACE_IO;
	u64 reg = 0;
	if (len >= FADT_X_PM1A_CNT_BLK + 12) {
		space = f[FADT_X_PM1A_CNT_BLK];
		reg = rd64(f + FADT_X_PM1A_CNT_BLK + 4);
	}
	if (!reg) {
		space = GAS_SPACE_IO;
		reg = rd32(f + FADT_PM1A_CNT_BLK);
	}
	if (!reg) {
		con_puts("probe: acpi: the FADT has no PM1a control block; no ACPI soft-off\n");
		return false;
	}
	if (space == GAS_SPACE_IO && reg <= 0xffff) {
		outw((u16)reg, value);
	} else if (space == GAS_SPACE_MEMORY && phys_ok(reg, 2)) {
		*(volatile u16 *)(uintptr_t)reg = value;
	} else {
		con_puts("probe: acpi: PM1a control block in an address space the probe cannot write\n");
		return false;
	}
	return false; /* still running: soft-off did not happen */
}
