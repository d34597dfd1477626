/*
 * Command-line options the probe honours (whitespace-separated words; other words are ignored):
 *   probe.spin=N   run probe_spin(N) before the report (N decimal or 0x-hex) and report "spin: N"
 *   probe.fault=pf after the report, read PROBE_FAULT_ADDR (unmapped) so the #PF handler runs
 *   probe.hypercall=page|inline
 *                  how the pvh and pv entries make Xen hypercalls: through the hypercall page
 *                  (default) or directly (pvh: vmcall/vmmcall; pv: syscall). linux64 accepts and
 *                  ignores it. The Xen entries read it with options_hypercall() before they have a
 *                  console.
 * A malformed value is reported on the console before the report and otherwise ignored. When an
 * option is given more than once, the last valid value counts.
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

/* The value of a probe.hypercall= word: PROBE_HYPERCALL_*, or -1 if malformed. */
static int hypercall_value(const u8 *v, u32 n)
{
	if (n == 4 && memcmp(v, "page", 4) == 0)
		return PROBE_HYPERCALL_PAGE;
	if (n == 6 && memcmp(v, "inline", 6) == 0)
		return PROBE_HYPERCALL_INLINE;
	return -1;
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
	} else if (word_has_prefix(w, n, "probe.hypercall=", &pl)) {
		if (hypercall_value(w + pl, n - pl) < 0) /* options_hypercall() takes the value */
			warn_word(w, n, "the hypercall methods are page and inline");
	}
}

/* The next whitespace-separated word of s[0, len) at or after *i: its start, and its length in *n. */
static const u8 *next_word(const u8 *s, u32 len, u32 *i, u32 *n)
{
	while (*i < len && is_space(s[*i]))
		(*i)++;
	u32 start = *i;
	while (*i < len && !is_space(s[*i]))
		(*i)++;
	*n = *i - start;
	return s + start;
}

void options_parse(struct probe_info *info)
{
	u32 i = 0, n;

	while (i < info->cmdline_len) {
		const u8 *w = next_word(info->cmdline, info->cmdline_len, &i, &n);
		if (n)
			option_word(info, w, n);
	}
}

u32 options_hypercall(const struct probe_info *info)
{
	u32 i = 0, n, pl, method = PROBE_HYPERCALL_PAGE;

	while (i < info->cmdline_len) {
		const u8 *w = next_word(info->cmdline, info->cmdline_len, &i, &n);
		if (n && word_has_prefix(w, n, "probe.hypercall=", &pl)) {
			int v = hypercall_value(w + pl, n - pl);
			if (v >= 0)
				method = (u32)v;
		}
	}
	return method;
}
