/* Formatted output on the current console (set by the entry with console_set). */
#include "probe.h"

static const struct probe_console *current;

void console_set(const struct probe_console *console)
{
	current = console;
}

void con_putc(char c)
{
	if (current)
		current->putc(c);
}

void con_puts(const char *s)
{
	while (*s)
		con_putc(*s++);
}

static const char hexdigits[] = "0123456789abcdef";

void con_hex_digits(u64 v, int w)
{
	char buf[16];
	int n = 0;

	do {
		buf[n++] = hexdigits[v & 15];
		v >>= 4;
	} while (v && n < 16);
	while (n < w && n < 16)
		buf[n++] = '0';
	while (n)
		con_putc(buf[--n]);
}

void con_hex_width(u64 v, int w)
{
	con_puts("0x");
	con_hex_digits(v, w);
}

void con_hex(u64 v)
{
	con_hex_width(v, 1);
}

void con_dec(u64 v)
{
	char buf[20];
	int n = 0;

	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		con_putc(buf[--n]);
}

/*
 * The report's escaping: bytes 0x20..0x7e except backslash as is (space too, unless escape_space),
 * bytes >= 0x80 raw (so UTF-8 passes through), backslash as "\\", any other byte as "\xNN".
 */
void con_escaped(const u8 *s, u32 len, bool escape_space)
{
	for (u32 i = 0; i < len; i++) {
		u8 c = s[i];
		if (c == '\\') {
			con_puts("\\\\");
		} else if ((c > 0x20 && c <= 0x7e) || c >= 0x80 || (c == 0x20 && !escape_space)) {
			con_putc((char)c);
		} else {
			con_puts("\\x");
			con_hex_digits(c, 2);
		}
	}
}
