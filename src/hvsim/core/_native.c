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
 *
 * Python owns `struct hvsim_control` (a ctypes Structure in native.py, same layout) and passes it as
 * the hook's user data, together with the address of libunicorn's uc_emu_stop, so this file needs
 * neither Unicorn's headers nor linking against it.  The module itself only publishes addresses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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
        PyModule_AddIntConstant(m, "control_size", (long)sizeof(struct hvsim_control)) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_REQUEST", STOPPED_BY_REQUEST) < 0 ||
        PyModule_AddIntConstant(m, "STOPPED_BY_INSN_LIMIT", STOPPED_BY_INSN_LIMIT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
