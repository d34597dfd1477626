/* hvsim's own /init: a freestanding x86-64 Linux program (no libc) that reports what userspace sees
 * of the machine, then powers it off.
 *
 * As PID 1 it mounts proc on /proc and sysfs on /sys (creating the directories when missing), builds
 * one report (the format is documented in userspace/README.md and read back by
 * hvsim.userspace_report), writes it to /dev/console (else, line by line, to /dev/kmsg), syncs and
 * calls reboot(LINUX_REBOOT_CMD_POWER_OFF); if that returns it tries HALT, then pauses forever.
 *
 * Run as any other process it refuses (exit 2), unless its first argument is --report-only: then it
 * writes the report to stdout and exits 0 without mounting anything new or calling reboot.  PID 1
 * ignores its arguments, so the kernel command line cannot turn the power-off into an exit (which
 * would panic the kernel).
 *
 * What it does not do: it reads nothing that depends on time (no counts, no timestamps), and it
 * does not wait for anything; a file it cannot read is reported as absent.
 */

typedef unsigned long u64;
typedef long s64;
typedef unsigned int u32;
typedef unsigned char u8;

/* System call numbers: arch/x86/entry/syscalls/syscall_64.tbl */
#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_pause 34
#define SYS_getpid 39
#define SYS_exit 60
#define SYS_uname 63
#define SYS_mkdir 83
#define SYS_sync 162
#define SYS_mount 165
#define SYS_reboot 169
#define SYS_getdents64 217

/* include/uapi/asm-generic/fcntl.h */
#define O_RDONLY 0
#define O_WRONLY 1
#define O_NOCTTY 0400
#define O_DIRECTORY 0200000
#define O_CLOEXEC 02000000
/* include/uapi/asm-generic/errno-base.h */
#define EINTR 4
#define EAGAIN 11
/* include/uapi/linux/reboot.h */
#define LINUX_REBOOT_MAGIC1 0xfee1dead
#define LINUX_REBOOT_MAGIC2 672274793
#define LINUX_REBOOT_CMD_HALT 0xCDEF0123
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321FEDC
/* include/linux/fs_types.h (struct linux_dirent64 d_type) */
#define DT_DIR 4
#define DT_REG 8
/* include/uapi/linux/utsname.h: struct new_utsname, six fields of 65 bytes */
#define UTS_FIELD 65

static s64 syscall6(s64 n, s64 a, s64 b, s64 c, s64 d, s64 e, s64 f)
{
    register s64 r10 __asm__("r10") = d;
    register s64 r8 __asm__("r8") = e;
    register s64 r9 __asm__("r9") = f;
    s64 ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

#define sys0(n) syscall6((n), 0, 0, 0, 0, 0, 0)
#define sys1(n, a) syscall6((n), (s64)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) syscall6((n), (s64)(a), (s64)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) syscall6((n), (s64)(a), (s64)(b), (s64)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) syscall6((n), (s64)(a), (s64)(b), (s64)(c), (s64)(d), 0, 0)
#define sys5(n, a, b, c, d, e) syscall6((n), (s64)(a), (s64)(b), (s64)(c), (s64)(d), (s64)(e), 0)

/* gcc may emit calls to these for struct copies and clears even when freestanding. */
void *memset(void *dst, int c, u64 n)
{
    u8 *d = dst;
    while (n--)
        *d++ = (u8)c;
    return dst;
}

void *memcpy(void *dst, const void *src, u64 n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

static u64 str_len(const char *s)
{
    u64 n = 0;
    while (s[n])
        n++;
    return n;
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static int starts_with(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* ---- the report, built in one buffer and written at the end ---- */

#define OUT_SIZE (128 * 1024)
static char out[OUT_SIZE];
static u64 out_len;
static int out_overflow;

static void put_char(char c)
{
    if (out_len < OUT_SIZE - 64)
        out[out_len++] = c;
    else
        out_overflow = 1;
}

static void put(const char *s)
{
    while (*s)
        put_char(*s++);
}

static const char HEX[] = "0123456789abcdef";

/* Escaped so that one value stays one line: printable ASCII other than the backslash as is, bytes
 * 0x80 and above raw, a backslash as \\, any other byte as \xNN (the probe report's rule). */
static void put_escaped_n(const char *s, u64 n)
{
    for (u64 i = 0; i < n; i++) {
        u8 c = (u8)s[i];
        if (c == '\\') {
            put("\\\\");
        } else if ((c >= 0x20 && c < 0x7f) || c >= 0x80) {
            put_char((char)c);
        } else {
            put("\\x");
            put_char(HEX[c >> 4]);
            put_char(HEX[c & 15]);
        }
    }
}

static void put_dec(u64 v)
{
    char buf[24];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        put_char(buf[--n]);
}

static void key(const char *k)
{
    put(k);
    put(": ");
}

static void end_line(void) { put_char('\n'); }

static void put_line(const char *k, const char *v)
{
    key(k);
    put_escaped_n(v, str_len(v));
    end_line();
}

/* ---- files ---- */

#define FILE_SIZE (128 * 1024)
static char file[FILE_SIZE];

/* The whole file in `file` (NUL-terminated, at most FILE_SIZE - 1 bytes); -1 when it cannot be opened. */
static s64 read_file(const char *path)
{
    s64 fd = sys3(SYS_open, path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    u64 n = 0;
    while (n < FILE_SIZE - 1) {
        s64 got = sys3(SYS_read, fd, file + n, FILE_SIZE - 1 - n);
        if (got == -EINTR)
            continue;
        if (got <= 0)
            break;
        n += (u64)got;
    }
    sys1(SYS_close, fd);
    file[n] = 0;
    return (s64)n;
}

/* The file's first line without its newline and trailing blanks, or NULL when it cannot be read. */
static const char *first_line(const char *path)
{
    if (read_file(path) < 0)
        return 0;
    char *p = file;
    while (*p && *p != '\n')
        p++;
    while (p > file && is_space(p[-1]))
        p--;
    *p = 0;
    return file;
}

static int exists(const char *path)
{
    s64 fd = sys3(SYS_open, path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    sys1(SYS_close, fd);
    return 1;
}

/* `key: <first line of path>`, or `key: <absent>` when it cannot be read. */
static void report_file_line(const char *k, const char *path, const char *absent)
{
    const char *line = first_line(path);
    put_line(k, line ? line : absent);
}

/* Whitespace-separated words of a line, written separated by single spaces. */
static void put_words(const char *s, u64 n)
{
    int first = 1;
    u64 i = 0;
    while (i < n) {
        while (i < n && is_space(s[i]))
            i++;
        u64 start = i;
        while (i < n && !is_space(s[i]))
            i++;
        if (i > start) {
            if (!first)
                put_char(' ');
            put_escaped_n(s + start, i - start);
            first = 0;
        }
    }
}

/* ---- directories ---- */

#define MAX_NAMES 256
#define NAME_MAX_LEN 64
static char names[MAX_NAMES][NAME_MAX_LEN];
static int name_count;
static char dents[16 * 1024];

struct linux_dirent64 {
    u64 d_ino;
    s64 d_off;
    unsigned short d_reclen;
    u8 d_type;
    char d_name[];
};

/* The names in directory `path` (without . and ..) whose d_type is `type` (0: any) into `names`;
 * -1 when the directory cannot be opened. */
static int list_dir(const char *path, int type)
{
    name_count = 0;
    s64 fd = sys3(SYS_open, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    for (;;) {
        s64 n = sys3(SYS_getdents64, fd, dents, sizeof dents);
        if (n <= 0)
            break;
        for (s64 off = 0; off < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(dents + off);
            off += d->d_reclen;
            if (str_eq(d->d_name, ".") || str_eq(d->d_name, ".."))
                continue;
            if (type && d->d_type != type)
                continue;
            if (name_count < MAX_NAMES && str_len(d->d_name) < NAME_MAX_LEN) {
                memcpy(names[name_count], d->d_name, str_len(d->d_name) + 1);
                name_count++;
            }
        }
    }
    sys1(SYS_close, fd);
    return name_count;
}

static u64 dec_value(const char *s)
{
    u64 v = 0;
    while (is_digit(*s))
        v = v * 10 + (u64)(*s++ - '0');
    return v;
}

/* Sort `names`: numerically when `numeric`, else bytewise (insertion sort; the lists are short). */
static int name_before(const char *a, const char *b, int numeric)
{
    if (numeric)
        return dec_value(a) < dec_value(b);
    while (*a && *a == *b)
        a++, b++;
    return (u8)*a < (u8)*b;
}

static void sort_names(int numeric)
{
    static char tmp[NAME_MAX_LEN];
    for (int i = 1; i < name_count; i++) {
        memcpy(tmp, names[i], NAME_MAX_LEN);
        int j = i;
        while (j > 0 && name_before(tmp, names[j - 1], numeric)) {
            memcpy(names[j], names[j - 1], NAME_MAX_LEN);
            j--;
        }
        memcpy(names[j], tmp, NAME_MAX_LEN);
    }
}

static void path_join(char *dst, u64 size, const char *a, const char *b, const char *c)
{
    u64 n = 0;
    const char *parts[3] = {a, b, c};
    for (int p = 0; p < 3; p++)
        for (const char *s = parts[p]; s && *s && n < size - 1; s++)
            dst[n++] = *s;
    dst[n] = 0;
}

/* ---- the report's sections ---- */

static void report_uname(void)
{
    static char uts[6 * UTS_FIELD];
    if (sys1(SYS_uname, uts) < 0) {
        put_line("kernel", "unknown");
        return;
    }
    put_line("kernel", uts + 2 * UTS_FIELD);    /* release, as uname -r */
    put_line("kernel_version", uts + 3 * UTS_FIELD);
    put_line("machine", uts + 4 * UTS_FIELD);
}

static void report_cmdline(void)
{
    s64 n = read_file("/proc/cmdline");
    if (n < 0) {
        put_line("cmdline", "<unreadable>");
        return;
    }
    if (n > 0 && file[n - 1] == '\n')
        n--;
    key("cmdline");
    put_escaped_n(file, (u64)n);
    end_line();
}

/* Top-level ranges of /proc/iomem ("start-end : name" without indentation): System RAM, Reserved,
 * ROMs, PCI windows, the APICs... (nested ones, like the kernel's own code, depend on KASLR). */
static void report_iomem(void)
{
    s64 n = read_file("/proc/iomem");
    if (n < 0) {
        put_line("iomem", "<unreadable>");
        return;
    }
    for (char *line = file; *line;) {
        char *eol = line;
        while (*eol && *eol != '\n')
            eol++;
        char *sep = line;
        while (sep + 3 <= eol && !(sep[0] == ' ' && sep[1] == ':' && sep[2] == ' '))
            sep++;
        if (line < eol && !is_space(*line) && sep + 3 <= eol) {
            char *dash = line;
            while (dash < sep && *dash != '-')
                dash++;
            key("iomem");
            put("0x");
            put_escaped_n(line, (u64)(dash - line));
            put(" 0x");
            if (dash < sep)
                put_escaped_n(dash + 1, (u64)(sep - dash - 1));
            put_char(' ');
            put_escaped_n(sep + 3, (u64)(eol - sep - 3));
            end_line();
        }
        line = *eol ? eol + 1 : eol;
    }
}

/* /sys/firmware/memmap/N/{start,end,type}: the firmware's map as the kernel got it, N ascending. */
static void report_firmware_memmap(void)
{
    static char path[128];
    static char start[32], end[32];
    if (list_dir("/sys/firmware/memmap", DT_DIR) < 0) {
        put_line("memmap", "none");
        return;
    }
    sort_names(1);
    for (int i = 0; i < name_count; i++) {
        const char *line;
        path_join(path, sizeof path, "/sys/firmware/memmap/", names[i], "/start");
        line = first_line(path);
        path_join(start, sizeof start, line ? line : "?", 0, 0);
        path_join(path, sizeof path, "/sys/firmware/memmap/", names[i], "/end");
        line = first_line(path);
        path_join(end, sizeof end, line ? line : "?", 0, 0);
        path_join(path, sizeof path, "/sys/firmware/memmap/", names[i], "/type");
        line = first_line(path);
        key("memmap");
        put_escaped_n(start, str_len(start));
        put_char(' ');
        put_escaped_n(end, str_len(end));
        put_char(' ');
        put_escaped_n(line ? line : "?", str_len(line ? line : "?"));
        end_line();
    }
}

/* The names in a sysfs directory on one line, sorted; `none` when it is absent or empty. */
static void report_dir_names(const char *k, const char *path, int type)
{
    int n = list_dir(path, type);
    sort_names(0);
    key(k);
    if (n <= 0)
        put("none");
    for (int i = 0; i < name_count; i++) {
        if (i)
            put_char(' ');
        put_escaped_n(names[i], str_len(names[i]));
    }
    end_line();
}

/* Each line of /proc/consoles, its words separated by single spaces. */
static void report_consoles(void)
{
    if (read_file("/proc/consoles") <= 0) {
        put_line("console", "none");
        return;
    }
    for (char *line = file; *line;) {
        char *eol = line;
        while (*eol && *eol != '\n')
            eol++;
        if (eol > line) {
            key("console");
            put_words(line, (u64)(eol - line));
            end_line();
        }
        line = *eol ? eol + 1 : eol;
    }
}

/* CPU flags from /proc/cpuinfo (the first CPU's) that tell environments apart, in this order. */
static const char *const FLAGS_OF_INTEREST[] = {
    "fpu", "tsc", "msr", "pae", "apic", "pge", "pat", "pse36", "nx", "pdpe1gb", "rdtscp", "lm",
    "constant_tsc", "nonstop_tsc", "tsc_known_freq", "pni", "x2apic", "tsc_deadline_timer", "xsave",
    "avx", "rdrand", "hypervisor", "arat", "smep", "smap", "pcid", "invpcid", "tsc_adjust",
};

static void report_cpuinfo(void)
{
    if (read_file("/proc/cpuinfo") <= 0) {
        put_line("cpu_model", "unknown");
        put_line("cpu_flags", "unknown");
        return;
    }
    const char *model = 0, *flags = 0;
    u64 model_len = 0, flags_len = 0;
    for (char *line = file; *line;) {
        char *eol = line;
        while (*eol && *eol != '\n')
            eol++;
        char *colon = line;
        while (colon < eol && *colon != ':')
            colon++;
        const char *value = colon + 1 < eol ? colon + 2 : eol;
        if (!model && starts_with(line, "model name") && colon < eol) {
            model = value;
            model_len = (u64)(eol - value);
        } else if (!flags && starts_with(line, "flags") && colon < eol) {
            flags = value;
            flags_len = (u64)(eol - value);
        }
        line = *eol ? eol + 1 : eol;
    }
    key("cpu_model");
    if (model)
        put_words(model, model_len);
    else
        put("unknown");
    end_line();
    key("cpu_flags");
    int any = 0;
    for (u64 f = 0; flags && f < sizeof FLAGS_OF_INTEREST / sizeof FLAGS_OF_INTEREST[0]; f++) {
        const char *want = FLAGS_OF_INTEREST[f];
        u64 want_len = str_len(want);
        for (u64 i = 0; i < flags_len;) {
            while (i < flags_len && flags[i] == ' ')
                i++;
            u64 start = i;
            while (i < flags_len && flags[i] != ' ')
                i++;
            if (i - start == want_len && starts_with(flags + start, want)) {
                if (any)
                    put_char(' ');
                put(want);
                any = 1;
                break;
            }
        }
    }
    if (!any)
        put("none");
    end_line();
}

/* Each /proc/interrupts row as `irq: LABEL DESCRIPTION`: the per-CPU counts (as many columns as the
 * header names CPUs) are left out, since they depend on timing. */
static void report_interrupts(void)
{
    if (read_file("/proc/interrupts") <= 0) {
        put_line("irq", "none");
        return;
    }
    char *line = file;
    char *eol = line;
    while (*eol && *eol != '\n')
        eol++;
    int cpus = 0;
    for (char *p = line; p + 3 <= eol; p++)
        if (p[0] == 'C' && p[1] == 'P' && p[2] == 'U')
            cpus++;
    line = *eol ? eol + 1 : eol;
    while (*line) {
        eol = line;
        while (*eol && *eol != '\n')
            eol++;
        char *p = line;
        while (p < eol && is_space(*p))
            p++;
        char *label = p;
        while (p < eol && *p != ':')
            p++;
        if (p < eol && p > label) {
            u64 label_len = (u64)(p - label);
            p++;
            for (int skipped = 0; skipped < cpus; skipped++) {
                char *q = p;
                while (q < eol && is_space(*q))
                    q++;
                char *word = q;
                while (q < eol && is_digit(*q))
                    q++;
                if (q == word || (q < eol && !is_space(*q)))
                    break;
                p = q;
            }
            key("irq");
            put_escaped_n(label, label_len);
            u64 rest_start = out_len;
            put_char(' ');
            put_words(p, (u64)(eol - p));
            if (out_len == rest_start + 1)
                out_len--; /* no description: no trailing space */
            end_line();
        }
        line = *eol ? eol + 1 : eol;
    }
}

static void report_meminfo(void)
{
    if (read_file("/proc/meminfo") <= 0) {
        put_line("memtotal_kb", "unknown");
        return;
    }
    for (char *p = file; *p; p++)
        if ((p == file || p[-1] == '\n') && starts_with(p, "MemTotal:")) {
            p += 9;
            while (is_space(*p))
                p++;
            key("memtotal_kb");
            put_dec(dec_value(p));
            end_line();
            return;
        }
    put_line("memtotal_kb", "unknown");
}

#define MOUNT_SKIPPED 1 /* --report-only: the running system's proc and sysfs are read as they are */

static void report_mount(const char *k, s64 ret)
{
    key(k);
    if (ret == MOUNT_SKIPPED) {
        put("skipped");
    } else if (ret == 0) {
        put("ok");
    } else {
        put("error ");
        put_dec((u64)-ret);
    }
    end_line();
}

static s64 mount_proc_ret, mount_sys_ret;

static void mount_filesystems(void)
{
    sys2(SYS_mkdir, "/proc", 0555);
    sys2(SYS_mkdir, "/sys", 0555);
    mount_proc_ret = sys5(SYS_mount, "proc", "/proc", "proc", 0, 0);
    mount_sys_ret = sys5(SYS_mount, "sysfs", "/sys", "sysfs", 0, 0);
}

static void build_report(s64 pid)
{
    put("hvsim-userspace: begin v1\n");
    key("pid");
    put_dec((u64)pid);
    end_line();
    report_mount("mount_proc", mount_proc_ret);
    report_mount("mount_sys", mount_sys_ret);
    report_uname();
    report_cmdline();
    report_iomem();
    report_firmware_memmap();
    report_meminfo();
    report_file_line("cpus_online", "/sys/devices/system/cpu/online", "unknown");
    report_file_line("cpus_possible", "/sys/devices/system/cpu/possible", "unknown");
    report_file_line("clocksource", "/sys/devices/system/clocksource/clocksource0/current_clocksource", "none");
    report_file_line("clocksources", "/sys/devices/system/clocksource/clocksource0/available_clocksource",
                     "none");
    report_file_line("clockevent", "/sys/devices/system/clockevents/clockevent0/current_device", "none");
    report_file_line("hypervisor", "/sys/hypervisor/type", "none");
    report_file_line("hypervisor_guest_type", "/sys/hypervisor/guest_type", "none");
    put_line("efi", exists("/sys/firmware/efi") ? "yes" : "no");
    report_file_line("efi_runtime", "/sys/firmware/efi/runtime", "none");
    report_file_line("efi_platform_size", "/sys/firmware/efi/fw_platform_size", "none");
    report_dir_names("acpi_tables", "/sys/firmware/acpi/tables", DT_REG);
    put_line("dmi", exists("/sys/firmware/dmi") ? "yes" : "no");
    report_file_line("boot_params_version", "/sys/kernel/boot_params/version", "none");
    report_file_line("rtc", "/sys/class/rtc/rtc0/name", "none");
    report_file_line("tainted", "/proc/sys/kernel/tainted", "unknown");
    report_consoles();
    report_cpuinfo();
    report_interrupts();
    if (out_overflow)
        put_line("truncated", "yes");
    put("hvsim-userspace: end\n");
}

/* ---- output ---- */

static int write_all(s64 fd, const char *buf, u64 len)
{
    while (len) {
        s64 n = sys3(SYS_write, fd, buf, len);
        if (n == -EINTR || n == -EAGAIN)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (u64)n;
    }
    return 0;
}

/* /dev/kmsg: one record per line, each through a fresh open, since the kernel rate-limits each open
 * file to 10 records per 5 s (printk.devkmsg=ratelimit, the default).  "<2>" (KERN_CRIT) keeps the
 * lines on the console under "quiet". */
static void write_kmsg(const char *buf, u64 len)
{
    static char record[1024];
    for (u64 i = 0; i < len;) {
        u64 j = i;
        while (j < len && buf[j] != '\n')
            j++;
        u64 n = j - i;
        if (n > sizeof record - 8)
            n = sizeof record - 8;
        record[0] = '<', record[1] = '2', record[2] = '>';
        memcpy(record + 3, buf + i, n);
        record[3 + n] = '\n';
        s64 fd = sys3(SYS_open, "/dev/kmsg", O_WRONLY | O_CLOEXEC, 0);
        if (fd >= 0) {
            write_all(fd, record, n + 4);
            sys1(SYS_close, fd);
        }
        i = j + 1;
    }
}

static void write_report(void)
{
    s64 fd = sys3(SYS_open, "/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC, 0);
    if (fd >= 0 && write_all(fd, out, out_len) == 0) {
        sys1(SYS_close, fd);
        return;
    }
    if (fd >= 0)
        sys1(SYS_close, fd);
    write_kmsg(out, out_len);
}

static void power_off(void)
{
    sys0(SYS_sync);
    sys4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, 0);
    sys4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_HALT, 0);
    for (;;)
        sys0(SYS_pause);
}

static const char USAGE[] = "hvsim init: not PID 1; run as: init --report-only (prints the report, no power-off)\n";

__attribute__((used)) void init_main(long *stack)
{
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    s64 pid = sys0(SYS_getpid);

    if (pid != 1) {
        if (argc < 2 || !str_eq(argv[1], "--report-only")) {
            write_all(2, USAGE, sizeof USAGE - 1);
            sys1(SYS_exit, 2);
        }
        mount_proc_ret = mount_sys_ret = MOUNT_SKIPPED;
        build_report(pid);
        sys1(SYS_exit, write_all(1, out, out_len) == 0 ? 0 : 1);
    }
    mount_filesystems();
    build_report(pid);
    write_report();
    power_off();
}

/* The entry: the stack holds argc, argv[], NULL, envp[]; align it and call init_main. */
__asm__(".text\n"
        ".globl _start\n"
        ".type _start, @function\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call init_main\n"
        "    hlt\n"
        ".size _start, . - _start\n");
