/*
 * struct kernel_info (Linux boot protocol 2.15, Documentation/arch/x86/boot.rst "The kernel_info"):
 * found through the setup header's kernel_info_offset, relative to the protected-mode part (0x100000).
 * The probe reads no setup_data, so it declares setup_type_max 0.
 */
	.section .rodata.kernel_info, "a"
	.balign	4
	.globl	kernel_info
	.type	kernel_info, @object
kernel_info:
	.ascii	"LToP"			/* header */
	.long	kernel_info_end - kernel_info	/* size: fixed part */
	.long	kernel_info_end - kernel_info	/* size_total: no variable-length data */
	.long	0			/* setup_type_max */
kernel_info_end:
	.size	kernel_info, . - kernel_info
