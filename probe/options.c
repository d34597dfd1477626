/*
 * Command-line options the probe honours (whitespace-separated words; other words are ignored):
 *   probe.spin=N   run probe_spin(N) before the report (N decimal or 0x-hex) and report "spin: N"
 *   probe.fault=pf after the report, read PROBE_FAULT_ADDR (unmapped) so the #PF handler runs
 * A malformed value is reported on the console before the report and otherwise ignored.
 */
#include "probe.h"

static bool is_space(u8 c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool word_has_prefix(const u8 *w, u32 n, const char *prefix, u32 *plen)
{
	u32 pl = (u32)strlen(prefix);
	*plen = pl;
	return n >= pl && memcmp(w, prefix, pl) == 0;
}

static bool parse_u64(const u8 *s, u32 n, u64 *out)
{
	u64 v = 0;
	u32 base = 10, i = 0;

	if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		i = 2;
	}
	if (i == n)
		return false;
	for (; i < n; i++) {
		u8 c = s[i];
		u32 d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return false;
		if (v > (~0ULL - d) / base)
			return false; /* overflow */
		v = v * base + d;
	}
	*out = v;
	return true;
}

static void warn_word(const u8 *w, u32 n, const char *why)
{
	con_puts("probe: ignoring option \"");
	con_escaped(w, n, false);
	con_puts("\": ");
	con_puts(why);
	con_putc('\n');
}

static void option_word(struct probe_info *info, const u8 *w, u32 n)
{
	u32 pl;

	if (word_has_prefix(w, n, "probe.spin=", &pl)) {
		if (parse_u64(w + pl, n - pl, &info->spin))
			info->have_spin = true;
		else
			warn_word(w, n, "not a decimal or 0x-hex 64-bit number");
	} else if (word_has_prefix(w, n, "probe.fault=", &pl)) {
		if (n - pl == 2 && memcmp(w + pl, "pf", 2) == 0)
			info->fault_pf = true;
		else
			warn_word(w, n, "the only fault the probe knows is pf");
	}
}

void options_parse(struct probe_info *info)
{
	const u8 *s = info->cmdline;
	u32 len = info->cmdline_len, i = 0;

	while (i < len) {
		while (i < len && is_space(s[i]))
			i++;
		u32 start = i;
		while (i < len && !is_space(s[i]))
			i++;
		if (i > start)
			option_word(info, s + start, i - start);
	}
}
