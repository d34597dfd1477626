/*
 * hvsim's native helper: the two Unicorn hooks that must not be Python.
 *
 * Unicorn 2.1.4 cannot stop a run asynchronously without leaving RIP stale (a stop requested from
 * another thread, or by emu_start's timeout, skips synchronize_from_tb; see
 * shared/design/ref/linux-on-unicorn.md O2).  A stop requested from inside a block hook lands at a
 * block start with the PC in sync, so resuming is exact.  A Python block hook would cost ~200x; this
 * one costs one load and one compare per translation block.
 *
 *  - hvsim_block_hook: counts executed blocks (guest time, clock.py); stops the run before the block
 *    executes when `stop_request` is raised (by the watchdog thread or a signal handler), when the
 *    block count reaches `deadline_blocks` (the guest clock's next event), or, while `want_if` is set
 *    (an interrupt waits for the guest to enable interrupts), at the first block entered with
 *    RFLAGS.IF set.
 *  - hvsim_rdtsc_hook / hvsim_rdtscp_hook: answer RDTSC / RDTSCP with guest time in nanoseconds (a
 *    1 GHz TSC) instead of the engine's host-clock TSC, so the guest's time is deterministic.
 *  - hvsim_insn_hook:  counts executed instructions exactly and stops before the one that would
 *    exceed `insn_limit` (installed only when an instruction budget is asked for: it costs ~15x).
 *  - hvsim_coverage_hook: records the start address of every executed block in a hash set
 *    (`struct hvsim_coverage`, open addressing, grown here), read once by Python at the end of the
 *    run and released with hvsim_coverage_free (installed only when coverage is asked for).
 *
 * Python owns `struct hvsim_control` (a ctypes Structure in native.py, same layout) and passes it as
 * the hook's user data, together with the address of libunicorn's uc_emu_stop, so this file needs
 * neither Unicorn's headers nor linking against it.  The module itself only publishes addresses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

typedef int (*uc_emu_stop_fn)(void *uc);
typedef int (*uc_reg_read_fn)(void *uc, int regid, void *value);
typedef int (*uc_reg_write_fn)(void *uc, int regid, const void *value);

/* Unicorn 2.1.4's register ids (unicorn/x86.h); native.py checks them against the binding. */
enum { REG_EFLAGS = 25, REG_RAX = 35, REG_RCX = 38, REG_RDX = 40, REG_MSR = 248 };
#define MSR_TSC_AUX 0xC0000103u
#define RFLAGS_IF (1u << 9)

struct uc_x86_msr {                /* unicorn/x86.h */
    uint32_t rid;
    uint64_t value;
};

struct hvsim_control {
    volatile int32_t stop_request; /* nonzero: stop at the next block start */
    int32_t stopped_by;            /* 0 none, 1 stop_request, 2 instruction limit */
    uint64_t blocks;               /* blocks entered and executed */
    uint64_t insns;                /* instructions executed (only with the instruction hook) */
    uint64_t insn_limit;           /* the instruction hook stops when insns reaches this */
    uc_emu_stop_fn emu_stop;       /* libunicorn's uc_emu_stop */
    uc_reg_read_fn reg_read;       /* libunicorn's uc_reg_read */
    uc_reg_write_fn reg_write;     /* libunicorn's uc_reg_write */
    uint64_t deadline_blocks;      /* stop before the block that would make `blocks` exceed this */
    int32_t want_if;               /* nonzero: stop at the next block entered with IF set */
    int32_t reserved;
    uint64_t ns_per_block;         /* guest time = blocks * ns_per_block + skipped_ns */
    uint64_t skipped_ns;
    uint64_t tsc_reads;            /* RDTSC/RDTSCP answered */
    uint64_t tsc_offset;           /* TSC = guest time + tsc_offset (a guest write to IA32_TSC sets it) */
};

enum { STOPPED_BY_REQUEST = 1, STOPPED_BY_INSN_LIMIT = 2, STOPPED_BY_DEADLINE = 3, STOPPED_BY_IF_WINDOW = 4 };

static void hvsim_block_hook(void *uc, uint64_t address, uint32_t size, void *user)
{
    struct hvsim_control *c = user;
    (void)address;
    (void)size;
    if (c->stop_request) {
        c->stopped_by = STOPPED_BY_REQUEST;
        c->emu_stop(uc);
        return;
    }
    if (c->blocks >= c->deadline_blocks) {
        c->stopped_by = STOPPED_BY_DEADLINE;
        c->emu_stop(uc);
        return;
    }
    if (c->want_if) {
        uint64_t rflags = 0;
        c->reg_read(uc, REG_EFLAGS, &rflags);
        if (rflags & RFLAGS_IF) {
            c->stopped_by = STOPPED_BY_IF_WINDOW;
            c->emu_stop(uc);
            return;
        }
    }
    c->blocks++;
}

static uint64_t guest_tsc(struct hvsim_control *c)
{
    return c->blocks * c->ns_per_block + c->skipped_ns + c->tsc_offset;
}

static void put_tsc(void *uc, struct hvsim_control *c, uint64_t tsc)
{
    uint64_t lo = tsc & 0xFFFFFFFFu, hi = tsc >> 32;   /* RAX/RDX zero-extended, as RDTSC does */
    c->reg_write(uc, REG_RAX, &lo);
    c->reg_write(uc, REG_RDX, &hi);
    c->tsc_reads++;
}

static uint32_t hvsim_rdtsc_hook(void *uc, void *user)
{
    struct hvsim_control *c = user;
    put_tsc(uc, c, guest_tsc(c));
    return 1;   /* skip the engine's own (host-clock) TSC */
}

static uint32_t hvsim_rdtscp_hook(void *uc, void *user)
{
    struct hvsim_control *c = user;
    struct uc_x86_msr aux = {MSR_TSC_AUX, 0};
    c->reg_read(uc, REG_MSR, &aux);
    uint64_t rcx = aux.value & 0xFFFFFFFFu;
    put_tsc(uc, c, guest_tsc(c));
    c->reg_write(uc, REG_RCX, &rcx);
    return 1;
}

static void hvsim_insn_hook(void *uc, uint64_t address, uint32_t size, void *user)
{
    struct hvsim_control *c = user;
    (void)address;
    (void)size;
    if (c->insns >= c->insn_limit) {
        c->stopped_by = STOPPED_BY_INSN_LIMIT;
        c->emu_stop(uc);
        return;
    }
    c->insns++;
}

/* Block start addresses seen; 0 marks an empty slot, so address 0 has its own flag. */
struct hvsim_coverage {
    uint64_t *slots;
    uint64_t capacity; /* a power of two, or 0 before the first block */
    uint64_t count;    /* distinct addresses in slots */
    int32_t has_zero;  /* a block started at address 0 */
    int32_t failed;    /* an allocation failed: the set is incomplete */
};

static uint64_t coverage_slot(uint64_t address, uint64_t mask)
{
    return ((address ^ (address >> 29)) * 0x9E3779B97F4A7C15ull >> 17) & mask;
}

static void coverage_insert(uint64_t *slots, uint64_t mask, uint64_t address)
{
    uint64_t i = coverage_slot(address, mask);
    while (slots[i] != 0 && slots[i] != address)
        i = (i + 1) & mask;
    slots[i] = address;
}

static int coverage_grow(struct hvsim_coverage *c)
{
    uint64_t capacity = c->capacity ? c->capacity * 2 : 1 << 14;
    uint64_t *slots = calloc(capacity, sizeof(uint64_t));
    if (slots == NULL)
        return -1;
    for (uint64_t i = 0; i < c->capacity; i++)
        if (c->slots[i] != 0)
            coverage_insert(slots, capacity - 1, c->slots[i]);
    free(c->slots);
    c->slots = slots;
    c->capacity = capacity;
    return 0;
}

static void hvsim_coverage_hook(void *uc, uint64_t address, uint32_t size, void *user)
{
    struct hvsim_coverage *c = user;
    (void)uc;
    (void)size;
    if (address == 0) {
        c->has_zero = 1;
        return;
    }
    if (c->capacity == 0 && coverage_grow(c) < 0) {
        c->failed = 1;
        return;
    }
    uint64_t mask = c->capacity - 1, i = coverage_slot(address, mask);
    while (c->slots[i] != 0) {
        if (c->slots[i] == address)
            return;
        i = (i + 1) & mask;
    }
    c->slots[i] = address;
    if (++c->count * 2 > c->capacity && coverage_grow(c) < 0)
        c->failed = 1;
}

static void hvsim_coverage_free(struct hvsim_coverage *c)
{
    free(c->slots);
    c->slots = NULL;
    c->capacity = 0;
    c->count = 0;
}

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "hvsim.core._native",
    "Addresses of hvsim's native Unicorn hooks (see _native.c).", -1, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObject(m, "block_hook", PyLong_FromVoidPtr((void *)hvsim_block_hook)) < 0 ||
        PyModule_AddObject(m, "insn_hook", PyLong_FromVoidPtr((void *)hvsim_insn_hook)) < 0 ||
        PyModule_AddObject(m, "rdtsc_hook", PyLong_FromVoidPtr((void *)hvsim_rdtsc_hook)) < 0 ||
        PyModule_AddObject(m, "rdtscp_hook", PyLong_FromVoidPtr((void *)hvsim_rdtscp_hook)) < 0 ||
        PyModule_AddIntConstant(m, "REG_EFLAGS", REG_EFLAGS) < 0 ||
        PyModule_AddIntConstant(m, "REG_RAX", REG_RAX) < 0 ||
        PyModule_AddIntConstant(m, "REG_RCX", REG_RCX) < 0 ||
        PyModule_AddIntConstant(m, "REG_RDX", REG_RDX) < 0 ||
        PyModule_AddIntConstant(m, "REG_MSR", REG_MSR) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_DEADLINE", STOPPED_BY_DEADLINE) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_IF_WINDOW", STOPPED_BY_IF_WINDOW) < 0 ||
        PyModule_AddObject(m, "coverage_hook", PyLong_FromVoidPtr((void *)hvsim_coverage_hook)) < 0 ||
        PyModule_AddObject(m, "coverage_free", PyLong_FromVoidPtr((void *)hvsim_coverage_free)) < 0 ||
        PyModule_AddIntConstant(m, "coverage_size", (long)sizeof(struct hvsim_coverage)) < 0 ||
        PyModule_AddIntConstant(m, "control_size", (long)sizeof(struct hvsim_control)) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_REQUEST", STOPPED_BY_REQUEST) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_INSN_LIMIT", STOPPED_BY_INSN_LIMIT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
