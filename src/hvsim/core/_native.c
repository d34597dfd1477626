/*
 * hvsim's native helper: the two Unicorn hooks that must not be Python.
 *
 * Unicorn 2.1.4 cannot stop a run asynchronously without leaving RIP stale (a stop requested from
 * another thread, or by emu_start's timeout, skips synchronize_from_tb; see
 * shared/design/ref/linux-on-unicorn.md O2).  A stop requested from inside a block hook lands at a
 * block start with the PC in sync, so resuming is exact.  A Python block hook would cost ~200x; this
 * one costs one load and one compare per translation block.
 *
 *  - hvsim_block_hook: counts executed blocks; when `stop_request` is raised (by the watchdog thread
 *    or a signal handler) it stops the run before the block executes.
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

struct hvsim_control {
    volatile int32_t stop_request; /* nonzero: stop at the next block start */
    int32_t stopped_by;            /* 0 none, 1 stop_request, 2 instruction limit */
    uint64_t blocks;               /* blocks entered and executed */
    uint64_t insns;                /* instructions executed (only with the instruction hook) */
    uint64_t insn_limit;           /* the instruction hook stops when insns reaches this */
    uc_emu_stop_fn emu_stop;       /* libunicorn's uc_emu_stop */
};

enum { STOPPED_BY_REQUEST = 1, STOPPED_BY_INSN_LIMIT = 2 };

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
    c->blocks++;
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
