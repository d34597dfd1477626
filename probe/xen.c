/*
 * Xen from inside a 64-bit guest (the pvh and pv entries): finding the Xen CPUID leaves (PVH),
 * choosing how to make hypercalls (probe.hypercall=page|inline), the console (console_io, or a PV
 * domU's console ring), XENMEM_memory_map and SCHEDOP_shutdown. The ABI constants are in xen.h; the
 * hypercall instructions in xen_hypercall.S. Every pointer handed to Xen is a virtual address of the
 * probe's own (PVH: identity-mapped; PV: in the bootstrap region, where virtual = pseudo-physical).
 */
#include "probe.h"
#include "xen.h"

typedef long (*xen_hypercall_fn)(u64 nr, u64 a1, u64 a2, u64 a3);

/* xen_hypercall.S */
long xen_hypercall_page_call(u64 nr, u64 a1, u64 a2, u64 a3);
long xen_hypercall_vmcall(u64 nr, u64 a1, u64 a2, u64 a3);
long xen_hypercall_vmmcall(u64 nr, u64 a1, u64 a2, u64 a3);
long xen_hypercall_syscall(u64 nr, u64 a1, u64 a2, u64 a3);
extern const u8 hypercall_page[XEN_HYPERCALL_PAGE_SIZE];

static xen_hypercall_fn hypercall_fn; /* NULL until xen_hypercall_init() succeeded */

static void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static void wrmsr(u32 msr, u64 v)
{
	/* "memory": the hypervisor may write guest memory (the hypercall page) in response. */
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

u32 xen_cpuid_base(void)
{
	for (u32 base = XEN_CPUID_FIRST_LEAF; base <= XEN_CPUID_LAST_BASE; base += XEN_CPUID_BASE_STEP) {
		u32 a, b, c, d;
		cpuid(base, &a, &b, &c, &d);
		if (b == XEN_CPUID_SIGNATURE_EBX && c == XEN_CPUID_SIGNATURE_ECX && d == XEN_CPUID_SIGNATURE_EDX &&
		    a >= base && a - base >= XEN_CPUID_MIN_LEAVES)
			return base;
	}
	return 0;
}

/* CPUID leaf 0 vendor (EBX, EDX, ECX): AMD and Hygon have SVM, so vmmcall; everything else vmcall. */
static bool cpu_is_amd_like(void)
{
	u32 max, v[3];
	cpuid(0, &max, &v[0], &v[2], &v[1]);
	return memcmp(v, "AuthenticAMD", 12) == 0 || memcmp(v, "HygonGenuine", 12) == 0;
}

/* A page that still holds int3 where we would call would end in #BP, and the exception path would call
 * the same stub again: check the stubs the probe uses. */
static bool page_filled(void)
{
	static const u8 used[] = {__HYPERVISOR_set_trap_table, __HYPERVISOR_memory_op, __HYPERVISOR_console_io,
				  __HYPERVISOR_vcpu_op, __HYPERVISOR_sched_op, __HYPERVISOR_event_channel_op};
	for (u32 i = 0; i < sizeof(used); i++) {
		const volatile u8 *stub = hypercall_page + used[i] * XEN_HYPERCALL_STUB_SIZE;
		if (*stub == 0xcc)
			return false;
	}
	return true;
}

const char *xen_hypercall_init(u32 base, u32 method, u32 *msr_out)
{
	if (method == PROBE_HYPERCALL_INLINE) {
		hypercall_fn = cpu_is_amd_like() ? xen_hypercall_vmmcall : xen_hypercall_vmcall;
		return NULL;
	}

	u32 pages, msr, c, d;
	cpuid(base + XEN_CPUID_LEAF_HYPERCALL, &pages, &msr, &c, &d);
	*msr_out = msr;
	/* Page index 0 in the low 12 bits: the page's physical address is page-aligned. */
	wrmsr(msr, (u64)(uintptr_t)hypercall_page);
	if (!page_filled())
		return "the hypercall page still holds int3 after the wrmsr";
	hypercall_fn = xen_hypercall_page_call;
	return NULL;
}

const char *xen_hypercall_init_pv(u32 method)
{
	hypercall_fn = xen_hypercall_syscall;
	if (method == PROBE_HYPERCALL_INLINE)
		return NULL;
	if (!page_filled())
		return "the hypercall page still holds int3 (the domain builder did not fill it)";
	hypercall_fn = xen_hypercall_page_call;
	return NULL;
}

u64 xen_hypercall_page_addr(void)
{
	return (u64)(uintptr_t)hypercall_page;
}

long xen_hypercall3(u64 nr, u64 a1, u64 a2, u64 a3)
{
	if (!hypercall_fn)
		return -XEN_ENOSYS;
	return hypercall_fn(nr, a1, a2, a3);
}

/* A hypercall result as the console shows it: "0", "-38", ... */
void con_xen_rc(long rc)
{
	if (rc < 0) {
		con_putc('-');
		con_dec((u64)-rc);
	} else {
		con_dec((u64)rc);
	}
}

/*
 * The Xen console, about one hypercall per line: bytes collect in a buffer that goes out at '\n', when
 * full, and on xen_console_flush(). "\n" is sent as is (no "\r"). It goes out through one of:
 *   - console_io(CONSOLEIO_write, count, buffer) (PVH; a PV dom0). Xen returns 0 when it took
 *     everything; a positive count short of what was asked is taken as a partial write and the rest
 *     is sent again; an error drops the buffer (there is no other console).
 *   - the console ring (a PV domU, after xen_console_use_ring()): struct xencons_interface's out[]
 *     ring, then EVTCHNOP_send on the console's event channel so the backend drains it. When the ring
 *     is full the probe notifies and looks again; if the backend took nothing, the rest is dropped.
 */
#define XEN_CONSOLE_BUF 256
static char con_buf[XEN_CONSOLE_BUF];
static u32 con_len;
static volatile u8 *ring; /* NULL: console_io */
static u32 ring_evtchn;

void xen_console_use_ring(void *page, u32 evtchn)
{
	ring = page;
	ring_evtchn = evtchn;
}

static void ring_notify(void)
{
	static u32 port; /* struct evtchn_send */
	port = ring_evtchn;
	xen_hypercall3(__HYPERVISOR_event_channel_op, EVTCHNOP_send, (u64)(uintptr_t)&port, 0);
}

static void ring_write(const char *s, u32 n)
{
	volatile u32 *cons = (volatile u32 *)(ring + XENCONS_OUT_CONS);
	volatile u32 *prod = (volatile u32 *)(ring + XENCONS_OUT_PROD);
	bool notified = false; /* notified since the ring was last seen with room */

	while (n) {
		u32 p = *prod, used = p - *cons;
		/* x86 keeps loads in order and stores in order: a compiler barrier is enough (virt_rmb and
		 * virt_wmb in Linux's hvc_xen.c are barrier() on x86). */
		__asm__ volatile("" : : : "memory");
		if (used >= XENCONS_OUT_SIZE) { /* full (or a corrupt index): let the backend drain */
			if (notified)
				return;
			ring_notify();
			notified = true;
			continue;
		}
		u32 k = XENCONS_OUT_SIZE - used < n ? XENCONS_OUT_SIZE - used : n;
		for (u32 i = 0; i < k; i++)
			ring[XENCONS_OUT + ((p + i) & (XENCONS_OUT_SIZE - 1))] = (u8)s[i];
		__asm__ volatile("" : : : "memory"); /* the bytes before the index */
		*prod = p + k;
		s += k;
		n -= k;
		ring_notify();
		notified = false;
	}
}

void xen_console_flush(void)
{
	if (ring) {
		ring_write(con_buf, con_len);
		con_len = 0;
		return;
	}
	u32 off = 0;
	while (off < con_len) {
		long rc = xen_hypercall3(__HYPERVISOR_console_io, CONSOLEIO_write, con_len - off,
					 (u64)(uintptr_t)(con_buf + off));
		if (rc <= 0 || (u64)rc >= con_len - off)
			break;
		off += (u32)rc;
	}
	con_len = 0;
}

static void xen_console_putc(char c)
{
	con_buf[con_len++] = c;
	if (c == '\n' || con_len == XEN_CONSOLE_BUF)
		xen_console_flush();
}

const struct probe_console xen_console = {.putc = xen_console_putc};

long xen_memory_map(u32 cmd, struct probe_mem *out, u32 capacity, u32 *count)
{
	static u8 buf[PROBE_MAX_MEMMAP * XEN_E820_ENTRY_SIZE];
	static struct xen_memory_map map;

	if (capacity > PROBE_MAX_MEMMAP)
		capacity = PROBE_MAX_MEMMAP;
	map.nr_entries = capacity;
	map.pad = 0;
	map.buffer = (u64)(uintptr_t)buf;
	*count = 0;
	long rc = xen_hypercall3(__HYPERVISOR_memory_op, cmd, (u64)(uintptr_t)&map, 0);
	if (rc < 0)
		return rc;
	u32 n = map.nr_entries < capacity ? map.nr_entries : capacity;
	for (u32 i = 0; i < n; i++) {
		const u8 *e = buf + i * XEN_E820_ENTRY_SIZE;
		out[i].start = rd64(e);
		out[i].size = rd64(e + 8);
		out[i].type = rd32(e + 16);
	}
	*count = n;
	return rc;
}

long xen_shutdown_poweroff(void)
{
	static struct sched_shutdown arg;
	arg.reason = SHUTDOWN_poweroff;
	return xen_hypercall3(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (u64)(uintptr_t)&arg, 0);
}
