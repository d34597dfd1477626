"""How hvsim opens a Unicorn engine: 64-bit mode, with a CPU model that implements SVM.

The model is AMD EPYC.  hvsim needs SVM to trap MSR accesses (svm.py), which rules out Unicorn's
default (Haswell); of the models with SVM, EPYC is the one whose TCG-supported features come
closest to that default (SSE4.2, POPCNT, AES, XSAVE, FSGSBASE, SMEP, SMAP, 1 GiB pages).  The
guest never sees SVM: the CPUID answers hide it (cpuid.py).  Every engine hvsim opens, including
the scratch engines that probe CPUID and calibrate context offsets, goes through here so they
all agree.
"""

from __future__ import annotations

import ctypes

from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_EXEC, Uc
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_CPU_X86_EPYC, UC_X86_REG_CR2

CPU_MODEL = UC_CPU_X86_EPYC


def new_engine() -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_cpu_model(CPU_MODEL)
    return uc


def fetch_physical(uc: Uc, linear: int) -> int | None:
    """The guest-physical address the engine itself fetches an instruction at ``linear`` from, or
    None when that fetch would fault.

    The engine answers from its TLB first, so this is the translation the CPU *used*: after the
    host rewrote guest page tables without a TLB flush (as hardware, the engine keeps running on
    the cached mapping until ``invlpg``/a CR3 load) it still finds code that a fresh walk of the
    page tables no longer reaches.  ``uc_vmem_translate`` (unicorn 2.1, not wrapped by the 2.1.4
    Python binding) probes without raising, but a probe that misses the TLB and faults sets CR2 as
    a #PF would (CR2 is put back here) and leaves that #PF as the engine's pending exception: ask
    only when a None answer ends the run (the run loop's ``hlt`` check).
    """
    cr2 = uc.reg_read(UC_X86_REG_CR2)
    physical = ctypes.c_uint64()
    status = uclib.uc_vmem_translate(uc._uch, ctypes.c_uint64(linear), UC_PROT_EXEC, ctypes.byref(physical))
    if uc.reg_read(UC_X86_REG_CR2) != cr2:
        uc.reg_write(UC_X86_REG_CR2, cr2)
    return physical.value if status == 0 else None
