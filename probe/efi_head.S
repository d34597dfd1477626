/*
 * The EFI entry ("efi"): AddressOfEntryPoint of probe.efi (the PE32+ image build.py makes from the
 * probe linked at PROBE_EFI_BASE).  UEFI x64 calling convention (UEFI 2.10 §2.3.4): RCX =
 * ImageHandle, RDX = SystemTable, long mode with the firmware's identity map, RSP = 8 mod 16.
 * The probe trusts nothing else: it clears its .bss, takes its own stack and calls efi_main
 * (System V ABI) with the two arguments.  It never returns to the firmware: it powers off through
 * ResetSystem.
 */
	.text
	.code64
	.globl	efi_entry
	.type	efi_entry, @function
efi_entry:
	cli
	cld
	movq	%rcx, %r12			/* ImageHandle and SystemTable survive rep stosq */
	movq	%rdx, %r13
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$3, %ecx			/* probe.ld aligns both ends to 16 */
	xorl	%eax, %eax
	rep stosq
	movq	$probe_stack_top, %rsp
	xorl	%ebp, %ebp
	movq	%r12, %rdi
	movq	%r13, %rsi
	call	efi_main			/* does not return */
	jmp	probe_halt
	.size	efi_entry, . - efi_entry
