"""Tiny hand-assembled 64-bit guests for run tests, wrapped in an ELF by ``imagegen.build_elf``.

Each program is loaded at ``LOAD`` (a physical address in RAM for every config the tests use) and
entered there in long mode by ``bare_metal``, with interrupts off and no IDT.  The machine code is
spelled out byte by byte, each instruction commented, so a test reads what its guest does::

    from guests import SPIN, elf_guest
    kernel_file.write_bytes(elf_guest(SPIN))
"""

from __future__ import annotations

import struct

from imagegen import Load, build_elf

LOAD = 0x200000                       # 2 MiB: RAM, clear of every boot structure
UNMAPPED_VIRTUAL = 0x7FFF_0000_0000   # no page table maps it: reading it raises #PF
NO_RAM_PHYSICAL = 0x3000_0000         # identity-mapped but above 512 MiB of RAM: nothing backs it
EXIT_PORT = 0x501
DEBUGCON_PORT = 0xE9


def elf_guest(code: bytes, at: int = LOAD) -> bytes:
    """An ELF64 kernel whose only PT_LOAD is ``code`` at physical ``at``, entered at its first byte."""
    return build_elf(bits=64, entry=at, loads=[Load(at, code)])


def mov_rax(value: int) -> bytes:
    return b"\x48\xb8" + struct.pack("<Q", value)          # mov rax, imm64


def debugcon_print(text: bytes) -> bytes:
    """out 0xE9 of each byte of ``text``."""
    return b"".join(b"\xb0" + bytes([c]) + b"\xe6\xe9" for c in text)   # mov al, c; out 0xe9, al


SPIN = b"\xeb\xfe"                                          # jmp .
HALT = b"\xfa\xf4"                                          # cli; hlt
UD2 = b"\x0f\x0b"                                           # ud2
MARKER = 0x12345678
EXIT_CODE = 3
EXIT_OUT_OFFSET = 6                                         # where the out instruction starts
EXIT_WITH_CODE = (b"\x66\xba" + struct.pack("<H", EXIT_PORT)   # mov dx, 0x501
                  + b"\xb0" + bytes([EXIT_CODE])                # mov al, 3
                  + b"\xee"                                     # out dx, al   <- the guest exits here
                  + b"\xb8" + struct.pack("<I", MARKER)         # mov eax, 0x12345678 (must not run)
                  + b"\xf4")                                    # hlt
READ_UNMAPPED_VIRTUAL = mov_rax(UNMAPPED_VIRTUAL) + b"\x48\x8b\x00" + b"\xf4"  # mov rax, [rax]; hlt
READ_NO_RAM = mov_rax(NO_RAM_PHYSICAL) + b"\x48\x8b\x00" + b"\xf4"            # mov rax, [rax]; hlt
WRITE_NO_RAM = mov_rax(NO_RAM_PHYSICAL) + b"\x48\x89\x00" + b"\xf4"           # mov [rax], rax; hlt
PRINT_THEN_SPIN = debugcon_print(b"go\n") + SPIN
