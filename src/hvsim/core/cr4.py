"""``mov %reg, %cr4`` as the CPU checks it: a bit whose feature the guest's CPUID does not offer is
#GP(0) (Intel SDM vol. 3A, 2.5 "Control Registers" and 2.6.2.1; AMD APM vol. 2, 3.1.3).

The engine takes any value, so every CR4 write exits (svm.py) and comes here.  Modelled: the
feature each CR4 bit needs, taken from ``Machine.guest_cpuid`` (what the guest is shown, so a
hypervisor that hides a feature makes its bit #GP, as Xen's hvm_cr4_guest_valid_bits does), the
reserved bits, and bits 63:32.  Not modelled: the mode checks (PCIDE with CR3[11:0] nonzero or
outside long mode, clearing PAE in long mode), which the engine does not check either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_CR4

if TYPE_CHECKING:
    from .machine import Machine

# CR4 bit -> (CPUID leaf, register index in (eax, ebx, ecx, edx), bit) of the feature it needs;
# None: always available.  Bits not listed are reserved.
CR4_FEATURES: dict[int, tuple[int, int, int] | None] = {
    0: (1, 3, 1),        # VME          CPUID.1:EDX.VME
    1: (1, 3, 1),        # PVI          CPUID.1:EDX.VME
    2: (1, 3, 4),        # TSD          CPUID.1:EDX.TSC
    3: (1, 3, 2),        # DE           CPUID.1:EDX.DE
    4: (1, 3, 3),        # PSE          CPUID.1:EDX.PSE
    5: (1, 3, 6),        # PAE          CPUID.1:EDX.PAE
    6: (1, 3, 7),        # MCE          CPUID.1:EDX.MCE
    7: (1, 3, 13),       # PGE          CPUID.1:EDX.PGE
    8: None,             # PCE
    9: (1, 3, 24),       # OSFXSR       CPUID.1:EDX.FXSR
    10: (1, 3, 25),      # OSXMMEXCPT   CPUID.1:EDX.SSE
    11: (7, 2, 2),       # UMIP         CPUID.7.0:ECX.UMIP
    12: (7, 2, 16),      # LA57         CPUID.7.0:ECX.LA57
    13: (1, 2, 5),       # VMXE         CPUID.1:ECX.VMX
    14: (1, 2, 6),       # SMXE         CPUID.1:ECX.SMX
    16: (7, 1, 0),       # FSGSBASE     CPUID.7.0:EBX.FSGSBASE
    17: (1, 2, 17),      # PCIDE        CPUID.1:ECX.PCID
    18: (1, 2, 26),      # OSXSAVE      CPUID.1:ECX.XSAVE
    19: (7, 2, 23),      # KL           CPUID.7.0:ECX.KL
    20: (7, 1, 7),       # SMEP         CPUID.7.0:EBX.SMEP
    21: (7, 1, 20),      # SMAP         CPUID.7.0:EBX.SMAP
    22: (7, 2, 3),       # PKE          CPUID.7.0:ECX.PKU
    23: (7, 2, 7),       # CET          CPUID.7.0:ECX.CET_SS
    24: (7, 2, 31),      # PKS          CPUID.7.0:ECX.PKS
}
# The general registers in ModR/M order (REX.B adds 8).
GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
PREFIXES = frozenset(b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf2\xf3")
MOV_TO_CR = b"\x0f\x22"


def cr4_allowed(machine: "Machine") -> int:
    """The CR4 bits the guest may set, from what its CPUID says now."""
    allowed = 0
    for bit, feature in CR4_FEATURES.items():
        if feature is None:
            allowed |= 1 << bit
            continue
        leaf, reg, feature_bit = feature
        if machine.guest_cpuid(leaf, 0)[reg] >> feature_bit & 1:
            allowed |= 1 << bit
    return allowed


def cr4_write(machine: "Machine", rip: int) -> bool:
    """Carry out the ``mov %reg, %cr4`` at ``rip``: False when the CPU raises #GP(0) (nothing
    changed), else CR4 written and RIP past the instruction."""
    long_mode = machine.code_segment()[1] == 64
    code = machine.vmem.read(machine.code_address(rip), 15)
    at = 0
    while code[at] in PREFIXES:
        at += 1
    rex = code[at] if long_mode and code[at] & 0xF0 == 0x40 else 0
    at += 1 if rex else 0
    if code[at:at + 2] != MOV_TO_CR:
        raise ValueError(f"CR4-write exit at {rip:#x} on bytes {code.hex()}")
    modrm = code[at + 2]
    value = machine.reg(GPRS[(modrm & 7) | (8 if rex & 1 else 0)])
    if not long_mode:
        value &= 0xFFFF_FFFF
    if value & ~cr4_allowed(machine):
        return False
    machine.uc.reg_write(UC_X86_REG_CR4, value)
    machine.set_rip(rip + at + 3)
    return True
