/*
 * The first bytes of the probe image, at physical (= virtual) 0x100000.
 *
 * Layout, fixed by the Linux boot protocol so that the flat image is also a bzImage protected-mode part:
 *   +0x000  code32_start: the 32-bit boot-protocol entry. The probe does not offer that entry, so the
 *           bytes here only stop the CPU (cli; hlt loop: the same bytes mean the same in 16/32/64-bit).
 *   +0x200  linux64_entry: the 64-bit boot-protocol entry (xloadflags XLF_KERNEL_64).
 *
 * linux64 entry state (Documentation/arch/x86/boot.rst, "64-bit boot protocol"): long mode, paging on,
 * an identity map covering at least [load address, +init_size), boot_params and the command line;
 * interrupts off; RSI = physical address of boot_params. The probe trusts nothing else: it clears its
 * own .bss (which init_size covers), sets its own stack and then, in C, its own page tables, GDT and IDT.
 *
 * The other entries, pvh (32-bit, Xen PVH) and pv (64-bit, Xen PV), are in pvh_head.S and pv_head.S;
 * their addresses are in the ELF notes they add.
 */
	.section .head.text, "ax"

	.code32
	.globl	probe_entry32_unsupported
	.type	probe_entry32_unsupported, @function
probe_entry32_unsupported:
	cli
1:	hlt
	jmp	1b
	.size	probe_entry32_unsupported, . - probe_entry32_unsupported

	.org	0x200, 0xcc

	.code64
	.globl	linux64_entry
	.type	linux64_entry, @function
linux64_entry:
	cli
	cld
	movq	%rsi, %r12			/* boot_params; r12 survives rep stosb */
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$3, %ecx			/* probe.ld aligns both ends to 16 */
	xorl	%eax, %eax
	rep stosq
	movq	$probe_stack_top, %rsp
	xorl	%ebp, %ebp
	movq	%r12, %rdi
	call	linux64_main			/* does not return */
	jmp	probe_halt
	.size	linux64_entry, . - linux64_entry

	.section .bss.stack, "aw", @nobits
	.balign	16
probe_stack:
	.skip	16384
	.globl	probe_stack_top
probe_stack_top:
