"""How guest calls reach Python: a page of small stubs in RuntimeServicesCode, one per service.

Each stub is ``mov %rdx, %r10; mov $index, %eax; mov $TRAP_PORT, %dx; out %eax, %dx; ret`` (32
bytes with int3 padding; RDX, the second argument, is kept in R10 because ``out`` needs DX).  The service index travels in the instruction stream, so a stub works at any virtual
address (after SetVirtualAddressMap the kernel calls runtime services through its own mapping), and
the ``out`` reaches the firmware through the machine's port table: no code hook, no per-instruction
cost.  Arguments are read as Microsoft x64 at the ``out``: RCX, RDX, R8, R9, then the stack from
[RSP + 0x28] (the return address is at [RSP], the caller's 32-byte shadow space above it).  The
answer goes to RAX and the stub's own ``ret`` returns to the caller.

Exception stubs (the firmware's IDT points at them) end in ``hlt`` instead of ``ret``.
"""

from __future__ import annotations

import struct

TRAP_PORT = 0xEF10              # no PC device decodes it; answered by the firmware's port device
STUB_SIZE = 32
ARG_REGISTERS = ("rcx", "rdx", "r8", "r9")          # where a callee finds its first four arguments
TRAPPED_ARG_REGISTERS = ("rcx", "r10", "r8", "r9")  # where the firmware finds them at the stub's out
STACK_ARGS_OFFSET = 0x28


def stub(index: int, *, returns: bool = True, keep_rax: bool = False) -> bytes:
    """``keep_rax``: first copy RAX to R11 (a return value or the state at a fault must survive)."""
    code = ((b"\x49\x89\xC3" if keep_rax else b"")     # mov %rax, %r11
            + b"\x49\x89\xD2"                           # mov %rdx, %r10
            + b"\xB8" + struct.pack("<I", index)         # mov $index, %eax
            + b"\x66\xBA" + struct.pack("<H", TRAP_PORT)  # mov $TRAP_PORT, %dx
            + b"\xEF"                                     # out %eax, %dx
            + (b"\xC3" if returns else b"\xF4\xEB\xFD"))  # ret | hlt; jmp back to the hlt
    return code.ljust(STUB_SIZE, b"\xCC")


class TrapDevice:
    """The port device behind the stubs: an ``out`` of a stub index calls ``dispatch(index)``."""

    ports = (TRAP_PORT, TRAP_PORT + 1, TRAP_PORT + 2, TRAP_PORT + 3)

    def __init__(self, dispatch):
        self._dispatch = dispatch

    def read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, port: int, size: int, value: int) -> None:
        if port == TRAP_PORT and size == 4:
            self._dispatch(value)
