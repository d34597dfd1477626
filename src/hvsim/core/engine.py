"""How hvsim opens a Unicorn engine: 64-bit mode, with a CPU model that implements SVM.

The model is AMD EPYC.  hvsim needs SVM to trap MSR accesses (svm.py), which rules out Unicorn's
default (Haswell); of the models with SVM, EPYC is the one whose TCG-supported features come
closest to that default (SSE4.2, POPCNT, AES, XSAVE, FSGSBASE, SMEP, SMAP, 1 GiB pages).  The
guest never sees SVM: the CPUID answers hide it (cpuid.py).  Every engine hvsim opens, including
the scratch engines that probe CPUID and calibrate context offsets, goes through here so they
all agree.
"""

from __future__ import annotations

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn.x86_const import UC_CPU_X86_EPYC

CPU_MODEL = UC_CPU_X86_EPYC


def new_engine() -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_cpu_model(CPU_MODEL)
    return uc
