/*
 * The Xen PV entry ("pv"): a 64-bit paravirtualised guest (Xen xen/include/public/xen.h start_info,
 * elfnote.h; the loader is tools/libs/guest/xg_dom_x86.c; Linux arch/x86/xen/xen-head.S does the same).
 *
 * The image advertises the entry with ELF notes in .note.Xen (beside pvh_head.S's PHYS32_ENTRY), laid
 * out as Linux's ELFNOTE(): GUEST_OS, LOADER "generic" and XEN_VERSION "xen-3.0" (what libelf needs to
 * accept a PV image), VIRT_BASE 0 and PADDR_OFFSET 0 (so virtual = pseudo-physical = p_paddr: the
 * probe stays linked at 0x100000), ENTRY = pv_entry and HYPERCALL_PAGE = hypercall_page (virtual
 * addresses; the builder fills the page with Xen's syscall stubs). No FEATURES note: the probe never
 * writes a page table or a descriptor table, so it needs no optional Xen feature.
 *
 * Entry state: 64-bit mode with paging on the builder's tables, which map the bootstrap region
 * [0, v_end) with 4 KiB pages (the kernel with its .bss, the p2m list, start_info, the console and
 * xenstore pages of a domU, the page tables read-only, a boot stack); RSI = virtual address of
 * start_info; RSP = top of the boot stack. A PV guest may not load CR3, a GDT or an IDT, and (on Xen,
 * which runs it outside ring 0) not execute cli: exceptions go to the trap table that pv_main
 * installs with set_trap_table (pv_trap_entries below).
 *
 * pv_entry clears .bss, takes the probe's stack and calls pv_main(start_info) in pv.c. RSI is kept in
 * RBX, which nothing here writes.
 */
#include "xen.h"

/* Linux's ELFNOTE(): namesz, descsz, type, "Xen\0", desc padded to 4. Section alignment 4. */
	.macro	xen_note type, desc:vararg
	.section .note.Xen, "a", @note
	.balign	4
	.long	2f - 1f				/* namesz: 4 */
	.long	4f - 3f				/* descsz */
	.long	\type
1:	.asciz	"Xen"
2:	.balign	4
3:	\desc
4:	.balign	4
	.endm

	xen_note XEN_ELFNOTE_GUEST_OS, .asciz "hvsim-probe"
	xen_note XEN_ELFNOTE_LOADER, .asciz "generic"
	xen_note XEN_ELFNOTE_XEN_VERSION, .asciz "xen-3.0"
	xen_note XEN_ELFNOTE_VIRT_BASE, .quad 0
	xen_note XEN_ELFNOTE_PADDR_OFFSET, .quad 0
	xen_note XEN_ELFNOTE_ENTRY, .quad pv_entry
	xen_note XEN_ELFNOTE_HYPERCALL_PAGE, .quad hypercall_page

	.text
	.code64
	.balign	16
	.globl	pv_entry
	.type	pv_entry, @function
pv_entry:
	cld
	movq	%rsi, %rbx			/* start_info */

	/* Clear .bss (probe.ld aligns both ends to 16): rep stosq uses RAX, RCX, RDI only. */
	movq	$__bss_start, %rdi
	movq	$__bss_end, %rcx
	subq	%rdi, %rcx
	shrq	$3, %rcx
	xorl	%eax, %eax
	rep stosq
	movq	$probe_stack_top, %rsp
	xorl	%ebp, %ebp
	movq	%rbx, %rdi
	call	pv_main				/* does not return */
	jmp	probe_halt
	.size	pv_entry, . - pv_entry

/*
 * The trap-table handlers for vectors 0..31, 16 bytes apart. Xen bounces an exception onto the
 * kernel stack as RCX, R11, [error code], RIP, CS, RFLAGS, RSP, SS (xen-abi.md §3.5; Linux
 * xen_xenpv_exc_*: pop %rcx; pop %r11): after the two pops the frame is the hardware's, so each
 * handler continues at the probe's IDT entry for the same vector (isr_entries, cpu.S, 16 bytes
 * apart = ISR_ENTRY_SIZE in probe.h), which reports the exception and powers off.
 */
	.macro	pv_trap vector
	.balign	16
	popq	%rcx
	popq	%r11
	jmp	isr_entries + \vector * 16
	.endm

	.balign	16
	.globl	pv_trap_entries
	.type	pv_trap_entries, @object
pv_trap_entries:
	.irp	v, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	pv_trap	\v
	.endr
	.balign	16
	.size	pv_trap_entries, . - pv_trap_entries
