/*
 * u64 probe_spin(u64 n): a compute loop of exactly 4 instructions per iteration (add, xor, dec, jnz),
 * run n times. Used by probe.spin=N, and copied byte for byte out of probe.elf by the hvsim benchmark,
 * which runs it in bare Unicorn. So it must stay self-contained and position-independent: no memory
 * accesses, no calls, no relocations, one ret at the end (its ELF symbol has the exact size).
 *
 * Instructions executed: 3 + 4*n + 1 for n > 0 (xor, test, jz, loop, ret); 4 for n == 0.
 * Returns a checksum of the loop in rax so the work has a result.
 */
	.section .text.probe_spin, "ax"
	.code64
	.balign	16
	.globl	probe_spin
	.type	probe_spin, @function
probe_spin:
	xorl	%eax, %eax
	testq	%rdi, %rdi
	jz	2f
1:	addq	%rdi, %rax
	xorq	$0x5a5a, %rax
	decq	%rdi
	jnz	1b
2:	ret
	.size	probe_spin, . - probe_spin
