/*
 * Xen hypercalls from 64-bit mode (xen/include/public/arch-x86/xen-x86_64.h): RAX = hypercall number,
 * arguments in RDI, RSI, RDX, R10, R8, result in RAX (a negative errno on error). The hypervisor may
 * clobber the argument registers. The probe needs at most three arguments.
 *
 * Each function below has the C signature
 *     long f(u64 nr, u64 a1, u64 a2, u64 a3);
 * so the SysV calling convention already treats every register the hypercall may clobber
 * (RAX, RDI, RSI, RDX, R10, R8, R11, RCX) as clobbered.
 *
 * Two ways in (xen.c picks one; probe.hypercall=page|inline on the command line):
 *   - page: call hypercall_page + nr * 32. Under PVH the page is filled by the hypervisor when its
 *     physical address is written to the MSR that CPUID leaf base+2 names (EBX); under PV the domain
 *     builder fills it before boot (XEN_ELFNOTE_HYPERCALL_PAGE, pv_head.S). Until then it holds int3.
 *   - inline: under PVH vmcall (Intel, 0f 01 c1) or vmmcall (AMD and Hygon, 0f 01 d9) with RAX = nr,
 *     as Linux (>= 6.13) does before it has a hypercall page; under PV syscall (0f 05), which is
 *     what Xen's own PV stubs execute and what Linux inlines.
 */
#include "xen.h"

	.text
	.code64

/* long xen_hypercall_page_call(u64 nr, u64 a1, u64 a2, u64 a3) */
	.globl	xen_hypercall_page_call
	.type	xen_hypercall_page_call, @function
xen_hypercall_page_call:
	cmpq	$XEN_HYPERCALL_MAX, %rdi
	jae	1f
	movq	%rdi, %r11
	shlq	$5, %r11			/* nr * XEN_HYPERCALL_STUB_SIZE */
	addq	$hypercall_page, %r11
	movq	%rdi, %rax			/* the stub sets EAX itself; harmless */
	movq	%rsi, %rdi
	movq	%rdx, %rsi
	movq	%rcx, %rdx
	call	*%r11
	ret
1:	movq	$-XEN_ENOSYS, %rax
	ret
	.size	xen_hypercall_page_call, . - xen_hypercall_page_call

/* long xen_hypercall_vmcall(u64 nr, u64 a1, u64 a2, u64 a3): Intel VMX */
	.globl	xen_hypercall_vmcall
	.type	xen_hypercall_vmcall, @function
xen_hypercall_vmcall:
	movq	%rdi, %rax
	movq	%rsi, %rdi
	movq	%rdx, %rsi
	movq	%rcx, %rdx
	vmcall					/* 0f 01 c1 */
	ret
	.size	xen_hypercall_vmcall, . - xen_hypercall_vmcall

/* long xen_hypercall_vmmcall(u64 nr, u64 a1, u64 a2, u64 a3): AMD SVM (AMD, Hygon) */
	.globl	xen_hypercall_vmmcall
	.type	xen_hypercall_vmmcall, @function
xen_hypercall_vmmcall:
	movq	%rdi, %rax
	movq	%rsi, %rdi
	movq	%rdx, %rsi
	movq	%rcx, %rdx
	vmmcall					/* 0f 01 d9 */
	ret
	.size	xen_hypercall_vmmcall, . - xen_hypercall_vmmcall

/* long xen_hypercall_syscall(u64 nr, u64 a1, u64 a2, u64 a3): a 64-bit PV guest. syscall clobbers
 * RCX and R11, which the calling convention lets us clobber anyway. */
	.globl	xen_hypercall_syscall
	.type	xen_hypercall_syscall, @function
xen_hypercall_syscall:
	movq	%rdi, %rax
	movq	%rsi, %rdi
	movq	%rdx, %rsi
	movq	%rcx, %rdx
	syscall					/* 0f 05 */
	ret
	.size	xen_hypercall_syscall, . - xen_hypercall_syscall

/*
 * The hypercall page: one page-aligned, executable page inside the text PT_LOAD (probe.ld places the
 * .hypercall_page section), int3 until the hypervisor fills it with 32-byte stubs.
 */
	.section .hypercall_page, "ax", @progbits
	.balign	XEN_HYPERCALL_PAGE_SIZE
	.globl	hypercall_page
	.type	hypercall_page, @object
hypercall_page:
	.fill	XEN_HYPERCALL_PAGE_SIZE, 1, 0xcc
	.size	hypercall_page, . - hypercall_page
