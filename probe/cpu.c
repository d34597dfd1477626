/*
 * The probe's own CPU state, independent of whatever the loader left behind:
 *   - 4-level identity page tables with 2 MiB pages covering [0, PROBE_MAP_LIMIT) = 64 GiB, so boot
 *     information, the initrd and ACPI tables can be read wherever the environment put them
 *     (no 1 GiB pages: Unicorn's default CPU model does not offer them);
 *   - a GDT with the Linux boot selectors (0x10 64-bit code, 0x18 data);
 *   - an IDT for vectors 0..31 whose handlers print
 *       probe: exception <vector decimal> err=0x<code> rip=0x<rip> cr2=0x<cr2>
 *     and power off through the platform.
 */
#include "probe.h"

#define PTE_P 0x001ULL
#define PTE_RW 0x002ULL
#define PTE_PS 0x080ULL

#define MAP_GIB (PROBE_MAP_LIMIT >> 30)

static u64 pml4[512] __attribute__((aligned(4096)));
static u64 pdpt[512] __attribute__((aligned(4096)));
static u64 pd[MAP_GIB][512] __attribute__((aligned(4096)));

#define SEL_CODE64 0x10
#define SEL_DATA 0x18

static const u64 gdt[4] __attribute__((aligned(16))) = {
	0,                     /* null */
	0,                     /* 0x08: unused, as in Linux's boot GDT */
	0x00af9a000000ffffULL, /* 0x10: 64-bit code, DPL0 */
	0x00cf92000000ffffULL, /* 0x18: flat data, DPL0 */
};

struct __attribute__((packed)) desc_ptr {
	u16 limit;
	u64 base;
};

struct idt_gate {
	u16 offset_low;
	u16 selector;
	u8 ist;
	u8 type_attr;
	u16 offset_mid;
	u32 offset_high;
	u32 reserved;
};

static struct idt_gate idt[32] __attribute__((aligned(16)));

static void paging_setup(void)
{
	for (u64 g = 0; g < MAP_GIB; g++) {
		for (u64 i = 0; i < 512; i++)
			pd[g][i] = ((g << 30) | (i << 21)) | PTE_P | PTE_RW | PTE_PS;
		pdpt[g] = (u64)(uintptr_t)pd[g] | PTE_P | PTE_RW;
	}
	pml4[0] = (u64)(uintptr_t)pdpt | PTE_P | PTE_RW;
	__asm__ volatile("mov %0, %%cr3" : : "r"((u64)(uintptr_t)pml4) : "memory");
}

static void gdt_setup(void)
{
	struct desc_ptr gdtr = {sizeof(gdt) - 1, (u64)(uintptr_t)gdt};
	cpu_load_gdt(&gdtr, SEL_CODE64, SEL_DATA);
}

static void idt_setup(void)
{
	for (int v = 0; v < 32; v++) {
		u64 handler = (u64)(uintptr_t)isr_entries + (u64)v * ISR_ENTRY_SIZE;
		idt[v].offset_low = (u16)handler;
		idt[v].selector = SEL_CODE64;
		idt[v].ist = 0;
		idt[v].type_attr = 0x8e; /* present, DPL0, 64-bit interrupt gate */
		idt[v].offset_mid = (u16)(handler >> 16);
		idt[v].offset_high = (u32)(handler >> 32);
		idt[v].reserved = 0;
	}
	struct desc_ptr idtr = {sizeof(idt) - 1, (u64)(uintptr_t)idt};
	__asm__ volatile("lidt %0" : : "m"(idtr));
}

void cpu_setup(void)
{
	paging_setup();
	gdt_setup();
	idt_setup();
}

/* frame: vector, error code, rip, cs, rflags, rsp, ss (see cpu.S). */
void probe_exception(u64 *frame)
{
	static bool busy;
	u64 cr2;

	if (busy) /* an exception while reporting one: nothing sane is left to do */
		probe_halt();
	busy = true;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	con_puts("probe: exception ");
	con_dec(frame[0]);
	con_puts(" err=");
	con_hex(frame[1]);
	con_puts(" rip=");
	con_hex(frame[2]);
	con_puts(" cr2=");
	con_hex(cr2);
	con_putc('\n');
	if (probe_platform)
		probe_platform->poweroff(probe_current_info);
	probe_halt();
}
