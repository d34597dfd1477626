/*
 * The Xen PVH entry ("pvh"): the x86/HVM direct boot ABI (Xen docs/misc/pvh.pandoc,
 * xen/include/public/arch-x86/hvm/start_info.h; Linux arch/x86/platform/pvh/head.S).
 *
 * The image advertises the entry with an ELF note, XEN_ELFNOTE_PHYS32_ENTRY = the physical address of
 * pvh_entry (a 4-byte descriptor). Xen, QEMU (-kernel <ELF>), Firecracker and hvsim's xen_pvh
 * environment read it.
 *
 * Entry state: 32-bit protected mode, paging off, CR0 = PE|ET, CR4 = 0, CS flat 32-bit code,
 * DS/ES/SS flat 32-bit data, interrupts off, EBX = physical address of struct hvm_start_info.
 * There is no stack (ESP is undefined) and the selector values are unspecified.
 *
 * pvh_entry clears .bss, takes the probe's stack, builds a temporary identity map of [0, 4 GiB) with
 * 2 MiB pages, loads its own GDT, enters long mode (CR4.PAE, CR3, EFER.LME, CR0.PG, far jump) and calls
 * pvh_main(start_info) in pvh.c, which installs the probe's own tables with cpu_setup(). EBX is kept
 * in EBX throughout: nothing here writes it.
 */
#include "xen.h"

#define PVH_SEL_CODE64 0x10 /* the same selectors as cpu.c's GDT */
#define PVH_SEL_DATA 0x18

#define X86_CR0_PG 0x80000000
#define X86_CR4_PAE 0x00000020
#define MSR_EFER 0xc0000080
#define EFER_LME 0x00000100

#define PTE_P_RW 0x003      /* present, writable */
#define PTE_P_RW_PS 0x083   /* present, writable, 2 MiB page */
#define PVH_MAP_PDS 4       /* 4 page directories of 512 2 MiB pages: [0, 4 GiB) */

/* The PHYS32_ENTRY note, laid out as Linux's ELFNOTE() does: namesz, descsz, type, "Xen\0", desc.
 * Section alignment 4, so the PT_NOTE's p_align is 4 (QEMU pads the name to p_align). */
	.section .note.Xen, "a", @note
	.balign	4
	.long	2f - 1f				/* namesz: 4 */
	.long	4f - 3f				/* descsz: 4 */
	.long	XEN_ELFNOTE_PHYS32_ENTRY
1:	.asciz	"Xen"
2:	.balign	4
3:	.long	pvh_entry
4:	.balign	4

	.text
	.code32
	.balign	16
	.globl	pvh_entry
	.type	pvh_entry, @function
pvh_entry:
	cli
	cld

	/* Clear .bss (probe.ld aligns both ends to 16). rep stosl uses EAX, ECX, EDI only. */
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$2, %ecx
	xorl	%eax, %eax
	rep stosl
	movl	$probe_stack_top, %esp

	/* pvh_pd: 2048 entries mapping 2 MiB each, identity over [0, 4 GiB). The upper dwords stay 0. */
	movl	$pvh_pd, %edi
	movl	$PTE_P_RW_PS, %eax
	movl	$(PVH_MAP_PDS * 512), %ecx
1:	movl	%eax, (%edi)
	addl	$0x200000, %eax
	addl	$8, %edi
	decl	%ecx
	jnz	1b

	/* pvh_pdpt[0..3] -> the 4 page directories; pvh_pml4[0] -> pvh_pdpt. */
	movl	$pvh_pdpt, %edi
	movl	$(pvh_pd + PTE_P_RW), %eax
	movl	$PVH_MAP_PDS, %ecx
2:	movl	%eax, (%edi)
	addl	$4096, %eax
	addl	$8, %edi
	decl	%ecx
	jnz	2b
	movl	$(pvh_pdpt + PTE_P_RW), pvh_pml4

	/* Our own GDT: the loader's selector values are unspecified. */
	lgdt	pvh_gdt_desc
	movl	$PVH_SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs

	/* Long mode: PAE, CR3, EFER.LME, then paging (we are in identity-mapped memory). */
	movl	%cr4, %eax
	orl	$X86_CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pvh_pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$X86_CR0_PG, %eax
	movl	%eax, %cr0
	ljmpl	$PVH_SEL_CODE64, $pvh_entry64

	.code64
pvh_entry64:					/* DS..GS still hold the flat data segment loaded above */
	movq	$probe_stack_top, %rsp		/* the upper halves are undefined after the mode switch */
	xorl	%ebp, %ebp
	movl	%ebx, %edi			/* start_info, zero-extended */
	call	pvh_main			/* does not return */
	jmp	probe_halt
	.size	pvh_entry, . - pvh_entry

	.section .rodata.pvh_gdt, "a"
	.balign	16
pvh_gdt:
	.quad	0				/* null */
	.quad	0				/* 0x08: unused, as in cpu.c and Linux's boot GDT */
	.quad	0x00af9b000000ffff		/* 0x10: 64-bit code, DPL0, accessed */
	.quad	0x00cf93000000ffff		/* 0x18: flat data, DPL0, accessed */
pvh_gdt_end:
	.balign	8
pvh_gdt_desc:
	.word	pvh_gdt_end - pvh_gdt - 1
	.quad	pvh_gdt				/* lgdt in 32-bit mode reads the low 4 bytes */

	/* The temporary page tables: page-aligned .bss, filled above after .bss is cleared. */
	.section .bss.pvh_pagetables, "aw", @nobits
	.balign	4096
pvh_pml4:
	.skip	4096
pvh_pdpt:
	.skip	4096
pvh_pd:
	.skip	PVH_MAP_PDS * 4096
