/*
 * The EFI entry ("efi"): the firmware's tables in, struct probe_info out, the report through ConOut.
 * Layouts and numbers: UEFI 2.10 (§4.3 EFI_SYSTEM_TABLE, §4.4 boot services, §4.5 runtime services,
 * §7.2 GetMemoryMap, §9.1 EFI_LOADED_IMAGE_PROTOCOL, §12.4 SIMPLE_TEXT_OUTPUT); the E820 types each
 * EFI memory type becomes are Linux's (arch/x86/boot/compressed/... x86-stub.c setup_e820).
 *   - memory map: BootServices->GetMemoryMap (descriptor size as reported), converted to E820 types
 *     and adjacent ranges of one type merged;
 *   - command line: LoadedImage->LoadOptions (UTF-16) as UTF-8;
 *   - initrd: the LoadFile2 protocol on Linux's LINUX_EFI_INITRD_MEDIA device path, loaded into
 *     pages from AllocatePages, as the Linux EFI stub loads it;
 *   - RSDP: the ACPI 2.0 configuration table (else ACPI 1.0).
 * Console: ConOut->OutputString, a line at a time (UTF-8 decoded to UTF-16, "\n" sent as "\r\n").
 * Power off: GetMemoryMap + ExitBootServices, then RuntimeServices->ResetSystem(EfiResetShutdown).
 */
#include "probe.h"

#define EFIAPI __attribute__((ms_abi))
typedef u64 efi_status;
#define EFI_SUCCESS 0ULL
#define EFI_BUFFER_TOO_SMALL (0x8000000000000000ULL | 5)

#define ST_CON_OUT 0x40
#define ST_RUNTIME 0x58
#define ST_BOOT 0x60
#define ST_NTABLES 0x68
#define ST_TABLES 0x70
#define BS_ALLOCATE_PAGES 0x28
#define BS_GET_MEMORY_MAP 0x38
#define BS_HANDLE_PROTOCOL 0x98
#define BS_LOCATE_DEVICE_PATH 0xb8
#define BS_EXIT_BOOT_SERVICES 0xe8
#define RT_RESET_SYSTEM 0x68
#define LI_LOAD_OPTIONS_SIZE 0x30
#define LI_LOAD_OPTIONS 0x38
#define RESET_SHUTDOWN 2
#define ALLOCATE_ANY_PAGES 0
#define LOADER_DATA 2

typedef efi_status(EFIAPI *efi_fn2)(u64, u64);
typedef efi_status(EFIAPI *efi_fn3)(u64, u64, u64);
typedef efi_status(EFIAPI *efi_fn4)(u64, u64, u64, u64);
typedef efi_status(EFIAPI *efi_fn5)(u64, u64, u64, u64, u64);

struct guid {
	u32 a;
	u16 b, c;
	u8 d[8];
};
static const struct guid loaded_image_guid = {0x5b1b31a1, 0x9562, 0x11d2, {0x8e, 0x3f, 0x00, 0xa0, 0xc9, 0x69, 0x72, 0x3b}};
static const struct guid acpi20_guid = {0x8868e871, 0xe4f1, 0x11d3, {0xbc, 0x22, 0x00, 0x80, 0xc7, 0x3c, 0x88, 0x81}};
static const struct guid acpi10_guid = {0xeb9d2d30, 0x2d88, 0x11d3, {0x9a, 0x16, 0x00, 0x90, 0x27, 0x3f, 0xc1, 0x4d}};
static const struct guid load_file2_guid = {0x4006c0c1, 0xfcb3, 0x403e, {0x99, 0x6d, 0x4a, 0x6c, 0x87, 0x24, 0xe0, 0x6d}};
/* VenMedia(LINUX_EFI_INITRD_MEDIA_GUID) followed by the end node */
static const u8 initrd_path[24] = {0x04, 0x03, 20, 0, 0x27, 0xe4, 0x68, 0x55, 0xfc, 0x68, 0x3d, 0x4f,
				   0xac, 0x74, 0xca, 0x55, 0x52, 0x31, 0xcc, 0x68, 0x7f, 0xff, 4, 0};

static u64 image_handle, systab, boot, runtime;
static struct probe_info info;

#define MAP_BUFFER 16384
static u8 map_buffer[MAP_BUFFER] __attribute__((aligned(8)));
static u64 map_key;

static u64 field(u64 base, u32 offset)
{
	return rd64(phys(base + offset));
}

/* --- ConOut ----------------------------------------------------------------------------------- */
static u8 line[256];
static u32 line_len;

/* Send line[0, n) through OutputString (UTF-8 decoded to UTF-16, "\n" as "\r\n") and keep the rest. */
static void conout_send(u32 n_bytes)
{
	u16 text[2 * sizeof(line) + 1];
	u32 n = 0;
	for (u32 i = 0; i < n_bytes;) {
		u8 c = line[i];
		u32 cp = c, more = 0;
		if (c >= 0xf0)
			cp = c & 0x07, more = 3;
		else if (c >= 0xe0)
			cp = c & 0x0f, more = 2;
		else if (c >= 0xc0)
			cp = c & 0x1f, more = 1;
		if (i + more >= n_bytes + !more) {
			cp = 0xfffd; /* a sequence cut off by the end: only a malformed string does that */
			more = n_bytes - i - 1;
		}
		for (u32 k = 1; k <= more && cp != 0xfffd; k++)
			cp = cp << 6 | (line[i + k] & 0x3f);
		i += 1 + more;
		if (cp == '\n')
			text[n++] = '\r';
		if (cp >= 0x10000) {
			cp -= 0x10000;
			text[n++] = (u16)(0xd800 | cp >> 10);
			text[n++] = (u16)(0xdc00 | (cp & 0x3ff));
		} else {
			text[n++] = (u16)cp;
		}
	}
	text[n] = 0;
	memcpy(line, line + n_bytes, line_len - n_bytes);
	line_len -= n_bytes;
	u64 con_out = field(systab, ST_CON_OUT);
	if (n && con_out)
		((efi_fn2)field(con_out, 8))(con_out, (u64)(uintptr_t)text);
}

static void conout_flush(void)
{
	conout_send(line_len);
}

static void conout_putc(char c)
{
	line[line_len++] = (u8)c;
	if (c == '\n') {
		conout_flush();
	} else if (line_len >= sizeof(line) - 4) {
		/* full: send up to the start of the last UTF-8 sequence unless it is complete */
		u32 start = line_len - 1;
		while (start && (line[start] & 0xc0) == 0x80)
			start--;
		u8 lead = line[start];
		u32 need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
		conout_send(line_len - start >= need ? line_len : start);
	}
}

static const struct probe_console conout_console = {.putc = conout_putc};

/* --- boot information ------------------------------------------------------------------------ */
static u32 e820_type(u32 efi_type)
{
	switch (efi_type) {
	case 1: case 2: case 3: case 4: case 7: /* loader, boot services, conventional */
		return E820_TYPE_RAM;
	case 8:
		return E820_TYPE_UNUSABLE;
	case 9:
		return E820_TYPE_ACPI;
	case 10:
		return E820_TYPE_NVS;
	case 14:
		return 7; /* persistent memory */
	default: /* reserved, runtime code/data, MMIO, PAL code */
		return E820_TYPE_RESERVED;
	}
}

static bool get_memory_map(u64 *size, u64 *desc_size)
{
	u32 version;
	*size = MAP_BUFFER;
	efi_status rc = ((efi_fn5)field(boot, BS_GET_MEMORY_MAP))((u64)(uintptr_t)size, (u64)(uintptr_t)map_buffer,
								  (u64)(uintptr_t)&map_key, (u64)(uintptr_t)desc_size,
								  (u64)(uintptr_t)&version);
	if (rc != EFI_SUCCESS) {
		con_puts("probe: GetMemoryMap failed: ");
		con_hex(rc);
		con_puts("\n");
		return false;
	}
	return true;
}

static void read_memory_map(void)
{
	u64 size, desc_size;
	if (!get_memory_map(&size, &desc_size) || desc_size < 40)
		return;
	u32 n = 0;
	for (u64 off = 0; off + 40 <= size; off += desc_size) {
		const u8 *d = map_buffer + off;
		u32 type = e820_type(rd32(d));
		u64 start = rd64(d + 8), len = rd64(d + 24) << 12;
		if (n && info.memmap[n - 1].type == type && info.memmap[n - 1].start + info.memmap[n - 1].size == start) {
			info.memmap[n - 1].size += len;
			continue;
		}
		if (n == PROBE_MAX_MEMMAP)
			break;
		info.memmap[n].start = start;
		info.memmap[n].size = len;
		info.memmap[n].type = type;
		n++;
	}
	info.memmap_count = n;
}

static void read_cmdline(u64 loaded_image)
{
	u32 size = (u32)field(loaded_image, LI_LOAD_OPTIONS_SIZE);
	u64 options = field(loaded_image, LI_LOAD_OPTIONS);
	if (!options)
		return;
	info.have_cmdline = true;
	u32 n = 0;
	for (u32 i = 0; i + 1 < size; i += 2) {
		u32 cp = rd16(phys(options + i));
		if (cp == 0)
			break;
		if (cp >= 0xd800 && cp < 0xdc00 && i + 3 < size) {
			u32 low = rd16(phys(options + i + 2));
			cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
			i += 2;
		}
		u8 out[4];
		u32 k = 0;
		if (cp < 0x80) {
			out[k++] = (u8)cp;
		} else if (cp < 0x800) {
			out[k++] = (u8)(0xc0 | cp >> 6);
			out[k++] = (u8)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			out[k++] = (u8)(0xe0 | cp >> 12);
			out[k++] = (u8)(0x80 | (cp >> 6 & 0x3f));
			out[k++] = (u8)(0x80 | (cp & 0x3f));
		} else {
			out[k++] = (u8)(0xf0 | cp >> 18);
			out[k++] = (u8)(0x80 | (cp >> 12 & 0x3f));
			out[k++] = (u8)(0x80 | (cp >> 6 & 0x3f));
			out[k++] = (u8)(0x80 | (cp & 0x3f));
		}
		if (n + k >= PROBE_MAX_CMDLINE)
			break;
		memcpy(info.cmdline + n, out, k);
		n += k;
	}
	info.cmdline[n] = 0;
	info.cmdline_len = n;
}

static void read_rsdp(void)
{
	u64 count = field(systab, ST_NTABLES), tables = field(systab, ST_TABLES);
	u64 acpi10 = 0;
	for (u64 i = 0; i < count; i++) {
		const void *guid = phys(tables + i * 24);
		u64 table = field(tables + i * 24, 16);
		if (!memcmp(guid, &acpi20_guid, 16)) {
			info.have_rsdp = true;
			info.rsdp_addr = table;
			return;
		}
		if (!memcmp(guid, &acpi10_guid, 16))
			acpi10 = table;
	}
	if (acpi10) {
		info.have_rsdp = true;
		info.rsdp_addr = acpi10;
	}
}

static void read_initrd(void)
{
	u64 path = (u64)(uintptr_t)initrd_path, device = 0, load_file = 0, size = 0, pages_at = 0;
	if (((efi_fn3)field(boot, BS_LOCATE_DEVICE_PATH))((u64)(uintptr_t)&load_file2_guid, (u64)(uintptr_t)&path,
							  (u64)(uintptr_t)&device) != EFI_SUCCESS)
		return; /* NOT_FOUND: no initrd */
	efi_status rc = ((efi_fn3)field(boot, BS_HANDLE_PROTOCOL))(device, (u64)(uintptr_t)&load_file2_guid,
								   (u64)(uintptr_t)&load_file);
	efi_fn5 load = rc == EFI_SUCCESS ? (efi_fn5)field(load_file, 0) : 0;
	if (load)
		rc = load(load_file, path, 0, (u64)(uintptr_t)&size, 0);
	if (rc == EFI_BUFFER_TOO_SMALL)
		rc = ((efi_fn4)field(boot, BS_ALLOCATE_PAGES))(ALLOCATE_ANY_PAGES, LOADER_DATA, (size + 4095) >> 12,
							      (u64)(uintptr_t)&pages_at);
	if (rc == EFI_SUCCESS && load)
		rc = load(load_file, path, 0, (u64)(uintptr_t)&size, pages_at);
	if (rc != EFI_SUCCESS || !load) {
		con_puts("probe: the initrd's LoadFile2 failed: ");
		con_hex(rc);
		con_puts("\n");
		return;
	}
	info.have_initrd = true;
	info.initrd_addr = pages_at;
	info.initrd_size = size;
}

static void __attribute__((noreturn)) efi_poweroff(const struct probe_info *i)
{
	(void)i;
	conout_flush();
	u64 size, desc_size;
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!get_memory_map(&size, &desc_size))
			break;
		efi_status rc = ((efi_fn2)field(boot, BS_EXIT_BOOT_SERVICES))(image_handle, map_key);
		if (rc == EFI_SUCCESS)
			break;
		con_puts("probe: ExitBootServices failed: ");
		con_hex(rc);
		con_puts("\n");
		conout_flush();
	}
	console_set(0); /* ConOut is a boot service */
	((efi_fn4)field(runtime, RT_RESET_SYSTEM))(RESET_SHUTDOWN, EFI_SUCCESS, 0, 0);
	probe_halt();
}

static const struct probe_platform efi_platform = {
	.name = "efi",
	.poweroff = efi_poweroff,
};

void __attribute__((noreturn)) efi_main(u64 handle, u64 system_table);
void efi_main(u64 handle, u64 system_table)
{
	image_handle = handle;
	systab = system_table;
	boot = field(systab, ST_BOOT);
	runtime = field(systab, ST_RUNTIME);
	console_set(&conout_console);
	probe_platform = &efi_platform;
	probe_current_info = &info;
	info.entry = "efi";
	/* No cpu_setup(): while boot services run, the firmware owns the GDT, the IDT and the page
	 * tables (UEFI 2.10 §2.3.4.1: it identity-maps all memory and takes its timer interrupt
	 * through its own IDT whenever RestoreTPL re-enables interrupts).  Replacing them here made
	 * the first firmware tick fault under OVMF. */

	u64 loaded_image = 0;
	efi_status rc = ((efi_fn3)field(boot, BS_HANDLE_PROTOCOL))(handle, (u64)(uintptr_t)&loaded_image_guid,
								   (u64)(uintptr_t)&loaded_image);
	if (rc == EFI_SUCCESS)
		read_cmdline(loaded_image);
	else {
		con_puts("probe: HandleProtocol(LOADED_IMAGE) failed: ");
		con_hex(rc);
		con_puts("\n");
	}
	read_rsdp();
	read_initrd();
	read_memory_map(); /* last: the initrd's pages are in it */
	probe_main(&info, &efi_platform);
}
