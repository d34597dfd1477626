"""How guest calls reach Python: a page of small stubs in RuntimeServicesCode, one per service.

Each stub is ``mov %rdx, %r10; mov $index, %eax; mov $TRAP_PORT, %dx; out %eax, %dx; ret`` (32
bytes with int3 padding; RDX, the second argument, is kept in R10 because ``out`` needs DX).  The service index travels in the instruction stream, so a stub works at any virtual
address (after SetVirtualAddressMap the kernel calls runtime services through its own mapping), and
the ``out`` reaches the firmware through the machine's port table: no code hook, no per-instruction
cost.  Arguments are read as Microsoft x64 at the ``out``: RCX, RDX, R8, R9, then the stack from
[RSP + 0x28] (the return address is at [RSP], the caller's 32-byte shadow space above it).  The
answer goes to RAX and the stub's own ``ret`` returns to the caller.

Exception stubs (the firmware's IDT points at them) end in ``hlt`` instead of ``ret``.  The timer
interrupt enters ``interrupt_entry``, guest code that saves what the interrupted code needs kept and
calls an ordinary stub; a service that must wait returns into ``idle_retry`` (``sti; hlt``, call
again).
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


# The firmware's interrupt entry (its IDT gate for the timer vector points here).  The interrupted
# code is not at a call boundary, so everything a called function may change is saved first: the
# volatile registers (Microsoft x64) on the stack and the x87/SSE state with FXSAVE (CR4.OSFXSR is
# set at entry).  The CPU aligned RSP to 16 and pushed 5 words, the 7 pushes make it 16-aligned again
# for FXSAVE's 512-byte area; the ``call`` then enters a trap stub with RSP = 8 mod 16, as any call.
_ENTRY_SAVE = (b"\x50\x51\x52\x41\x50\x41\x51\x41\x52\x41\x53"   # push rax rcx rdx r8 r9 r10 r11
               + b"\xFC"                                          # cld (called code expects DF = 0)
               + b"\x48\x81\xEC\x00\x02\x00\x00"                  # sub $0x200, %rsp
               + b"\x0F\xAE\x04\x24")                             # fxsave (%rsp)
_ENTRY_RESTORE = (b"\x0F\xAE\x0C\x24"                             # fxrstor (%rsp)
                  + b"\x48\x81\xC4\x00\x02\x00\x00"               # add $0x200, %rsp
                  + b"\x41\x5B\x41\x5A\x41\x59\x41\x58\x5A\x59\x58"   # pop r11 r10 r9 r8 rdx rcx rax
                  + b"\x48\xCF")                                  # iretq
CALL_REL32, JMP_REL32 = b"\xE8", b"\xE9"


def interrupt_entry(at: int, handler_stub: int) -> bytes:
    """The interrupt handler placed at ``at``: save, ``call handler_stub`` (a trap stub), restore,
    ``iretq`` to the interrupted code."""
    call_end = at + len(_ENTRY_SAVE) + 5
    return (_ENTRY_SAVE + CALL_REL32 + struct.pack("<i", handler_stub - call_end) + _ENTRY_RESTORE).ljust(
        2 * STUB_SIZE, b"\xCC")


def idle_retry(at: int, service_stub: int) -> bytes:
    """Where a blocked service (WaitForEvent) returns to, at ``at``: ``sti; hlt`` (wait for an
    interrupt, the STI shadow keeps one from slipping in between), then ``jmp service_stub``: the
    call again, with the caller's arguments and return address as they were."""
    jmp_end = at + 2 + 5
    return (b"\xFB\xF4" + JMP_REL32 + struct.pack("<i", service_stub - jmp_end)).ljust(STUB_SIZE, b"\xCC")
