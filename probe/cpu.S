/*
 * CPU helpers that C cannot express: segment reload after lgdt, exception entry points, halting.
 */
	.text
	.code64

/* void probe_halt(void): interrupts off, halt forever. */
	.globl	probe_halt
	.type	probe_halt, @function
probe_halt:
	cli
1:	hlt
	jmp	1b
	.size	probe_halt, . - probe_halt

/* void cpu_load_gdt(const void *gdtr, u16 code_sel, u16 data_sel)
 * lgdt, then reload CS with a far return and DS/ES/SS/FS/GS with the data selector. */
	.globl	cpu_load_gdt
	.type	cpu_load_gdt, @function
cpu_load_gdt:
	lgdt	(%rdi)
	movzwl	%dx, %edx
	movl	%edx, %ds
	movl	%edx, %es
	movl	%edx, %ss
	movl	%edx, %fs
	movl	%edx, %gs
	popq	%rax				/* return address */
	movzwl	%si, %esi
	pushq	%rsi
	pushq	%rax
	lretq
	.size	cpu_load_gdt, . - cpu_load_gdt

/*
 * Exception entry points for vectors 0..31, ISR_ENTRY_SIZE (16) bytes apart starting at isr_entries.
 * Each pushes a zero error code where the CPU pushes none, then the vector, so isr_common always sees
 *   [rsp] vector, error code, rip, cs, rflags, rsp, ss
 * and hands a pointer to that frame to probe_exception() (cpu.c), which reports and powers off.
 */
	.macro	isr_entry vector, has_error
	.balign	16
	.if	\has_error == 0
	pushq	$0
	.endif
	pushq	$\vector
	jmp	isr_common
	.endm

	.balign	16
	.globl	isr_entries
	.type	isr_entries, @object
isr_entries:
	isr_entry 0, 0
	isr_entry 1, 0
	isr_entry 2, 0
	isr_entry 3, 0
	isr_entry 4, 0
	isr_entry 5, 0
	isr_entry 6, 0
	isr_entry 7, 0
	isr_entry 8, 1
	isr_entry 9, 0
	isr_entry 10, 1
	isr_entry 11, 1
	isr_entry 12, 1
	isr_entry 13, 1
	isr_entry 14, 1
	isr_entry 15, 0
	isr_entry 16, 0
	isr_entry 17, 1
	isr_entry 18, 0
	isr_entry 19, 0
	isr_entry 20, 0
	isr_entry 21, 1
	isr_entry 22, 0
	isr_entry 23, 0
	isr_entry 24, 0
	isr_entry 25, 0
	isr_entry 26, 0
	isr_entry 27, 0
	isr_entry 28, 0
	isr_entry 29, 1
	isr_entry 30, 1
	isr_entry 31, 0
	.balign	16
	.size	isr_entries, . - isr_entries

	.type	isr_common, @function
isr_common:
	cld
	movq	%rsp, %rdi
	andq	$-16, %rsp
	call	probe_exception			/* does not return */
	jmp	probe_halt
	.size	isr_common, . - isr_common
