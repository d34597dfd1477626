/*
 * 16550 UART on COM1 (I/O port 0x3f8), programmed the way Linux's earlyprintk=serial driver does
 * (arch/x86/kernel/early_printk.c): 8N1, no interrupts, no FIFO, DTR|RTS, 115200 baud; each byte waits
 * (bounded) for LSR.THRE and "\n" goes out as "\r\n".
 */
#include "probe.h"

#define COM1 0x3f8
#define UART_THR 0 /* transmit holding register (DLAB=0) */
#define UART_DLL 0 /* divisor latch low (DLAB=1) */
#define UART_IER 1 /* interrupt enable (DLAB=0) */
#define UART_DLH 1 /* divisor latch high (DLAB=1) */
#define UART_FCR 2 /* FIFO control */
#define UART_LCR 3 /* line control */
#define UART_MCR 4 /* modem control */
#define UART_LSR 5 /* line status */

#define LCR_8N1 0x03
#define LCR_DLAB 0x80
#define MCR_DTR_RTS 0x03
#define LSR_THRE 0x20

#define THRE_POLL_LIMIT 0xffff /* as Linux: a missing UART must not hang the probe */

void uart_init(void)
{
	outb(COM1 + UART_LCR, LCR_8N1);
	outb(COM1 + UART_IER, 0);
	outb(COM1 + UART_FCR, 0);
	outb(COM1 + UART_MCR, MCR_DTR_RTS);
	outb(COM1 + UART_LCR, LCR_8N1 | LCR_DLAB);
	outb(COM1 + UART_DLL, 1); /* 115200 / 115200 */
	outb(COM1 + UART_DLH, 0);
	outb(COM1 + UART_LCR, LCR_8N1);
}

static void uart_out(u8 c)
{
	for (u32 i = 0; i < THRE_POLL_LIMIT; i++)
		if (inb(COM1 + UART_LSR) & LSR_THRE)
			break;
	outb(COM1 + UART_THR, c);
}

static void uart_putc(char c)
{
	if (c == '\n')
		uart_out('\r');
	uart_out((u8)c);
}

const struct probe_console uart_console = {.putc = uart_putc};
