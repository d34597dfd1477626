"""The emulated CPU's own CPUID answers, probed once in a scratch engine before the guest runs.

A CPUID hook that wants to change a bit of the native answer needs that answer; running a second
engine from inside a hook corrupts the outer run (linux-on-unicorn.md O1), so every leaf and the
subleaves that matter are read up front.

The table is what the guest is shown when no plugin answers: the engine's answers with SVM hidden
(hvsim itself uses SVM, svm.py) and RDRAND/RDSEED hidden (the engine answers them from the host's
randomness, which would make runs differ).  OSXSAVE (leaf 1 ECX bit 27) mirrors the guest's CR4 at the time
of the instruction; ``Machine.cpuid`` applies it.
"""

from __future__ import annotations

import struct

import attrs
from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDI

from .engine import new_engine

_SUBLEAF_LEAVES = {4: 8, 7: 2, 0xB: 4, 0xD: 8, 0xF: 2, 0x10: 4, 0x12: 4, 0x14: 2, 0x17: 4, 0x18: 4}
LEAF1_ECX_OSXSAVE = 1 << 27
LEAF1_ECX_HYPERVISOR = 1 << 31     # "running under a hypervisor": clear on a bare PC, set by hypervisors
LEAF1_ECX_RDRAND = 1 << 30
LEAF7_EBX_RDSEED = 1 << 18
EXT1_ECX_SVM = 1 << 2          # leaf 0x80000001 ECX
SVM_LEAF = 0x8000_000A         # SVM revision and features
_STUB = 0x1000
_OUT = 0x2000
# cpuid; mov %eax,(%rdi); mov %ebx,4(%rdi); mov %ecx,8(%rdi); mov %edx,12(%rdi); hlt
_CODE = bytes.fromhex("0fa2 8907 895f04 894f08 89570c f4")


@attrs.frozen
class CpuidTable:
    leaves: dict[tuple[int, int], tuple[int, int, int, int]]

    @classmethod
    def probe(cls) -> "CpuidTable":
        uc = new_engine()
        uc.mem_map(0, 0x10000)
        uc.mem_write(_STUB, _CODE)

        def ask(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
            uc.reg_write(UC_X86_REG_RAX, leaf)
            uc.reg_write(UC_X86_REG_RCX, subleaf)
            uc.reg_write(UC_X86_REG_RDI, _OUT)
            uc.emu_start(_STUB, _STUB + len(_CODE) - 1)
            return struct.unpack("<4I", uc.mem_read(_OUT, 16))

        leaves = {}
        for base in (0, 0x8000_0000):
            top = ask(base, 0)[0]
            if not base <= top < base + 0x100:
                top = base
            for leaf in range(base, top + 1):
                for sub in range(_SUBLEAF_LEAVES.get(leaf, 1)):
                    leaves[(leaf, sub)] = ask(leaf, sub)
        if (0x8000_0001, 0) in leaves:
            a, b, c, d = leaves[(0x8000_0001, 0)]
            leaves[(0x8000_0001, 0)] = (a, b, c & ~EXT1_ECX_SVM, d)
        if (SVM_LEAF, 0) in leaves:
            leaves[(SVM_LEAF, 0)] = (0, 0, 0, 0)
        # RDRAND and RDSEED draw host randomness in the engine: hidden, so runs are deterministic.
        if (1, 0) in leaves:
            a, b, c, d = leaves[(1, 0)]
            leaves[(1, 0)] = (a, b, c & ~LEAF1_ECX_RDRAND, d)
        if (7, 0) in leaves:
            a, b, c, d = leaves[(7, 0)]
            leaves[(7, 0)] = (a, b & ~LEAF7_EBX_RDSEED, c, d)
        return cls(leaves)

    def lookup(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """The native answer; leaves without subleaves ignore ``subleaf``; unknown leaves are zero."""
        if (leaf, subleaf) in self.leaves:
            return self.leaves[(leaf, subleaf)]
        return self.leaves.get((leaf, 0), (0, 0, 0, 0)) if leaf not in _SUBLEAF_LEAVES else (0, 0, 0, 0)
