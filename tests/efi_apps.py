"""Tiny EFI applications for the efi tests: GNU as source linked at ImageBase + 0x1000 and wrapped
into a PE32+ file by ``build_pe`` (headers in the first 0x200 bytes, one section per part given).

The code is entered as an EFI image: RCX = ImageHandle, RDX = SystemTable, RSP = 8 mod 16.  The
prelude below saves both in callee-saved registers (RBX = SystemTable, R12 = ImageHandle) and keeps
the stack aligned for calls; ``ret`` through the epilogue returns RAX as the image's status.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
from pathlib import Path

from hvsim import MachineConfig
from hvsim.abi import efi
from hvsim.api import Run

TEXT_RVA = 0x1000
PRELUDE = """
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    sub $0x60, %rsp
    mov %rdx, %rbx
    mov %rcx, %r12
"""
EPILOGUE = """
done:
    add $0x60, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    ret
"""
# Offsets for the source: EFI_SYSTEM_TABLE and EFI_BOOT_SERVICES slots (hvsim.abi.efi).
EQUATES = """
.set ST_CONOUT, 0x40
.set ST_RT, 0x58
.set ST_BS, 0x60
.set ST_NTABLES, 0x68
.set ST_TABLES, 0x70
"""


def ucs2(text: str) -> str:
    """A NUL-terminated CHAR16 string as an assembler directive."""
    return ".word " + ", ".join(str(ord(c)) for c in text + "\0")


def assemble_app(body: str, *, image_base: int = 0x10000000, text_rva: int = TEXT_RVA) -> tuple[bytes, dict[str, int]]:
    """The flat image bytes from ``text_rva`` and the symbols (absolute, for ``image_base``)."""
    source = f"{EQUATES}\n.text\n.globl _start\n_start:\n{PRELUDE}\n{body}\n{EPILOGUE}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, elf, flat = (Path(tmp) / n for n in ("a.S", "a.o", "a.elf", "a.bin"))
        src.write_text(source)
        subprocess.run(["as", "--64", "-o", obj, src], check=True, capture_output=True)
        subprocess.run(["ld", "-m", "elf_x86_64", "-N", f"-Ttext={image_base + text_rva:#x}", "-o", elf, obj],
                       check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", elf, flat], check=True, capture_output=True)
        nm = subprocess.run(["nm", elf], check=True, capture_output=True, text=True).stdout
        symbols = {p[2]: int(p[0], 16) for p in (line.split() for line in nm.splitlines()) if len(p) == 3}
        return flat.read_bytes(), symbols


def reloc_section(rvas: list[int]) -> bytes:
    """A .reloc directory of DIR64 entries at ``rvas``, one block per 4 KiB page."""
    out = bytearray()
    for page in sorted({r & ~0xFFF for r in rvas}):
        entries = [0xA000 | (r & 0xFFF) for r in sorted(rvas) if r & ~0xFFF == page]
        if len(entries) % 2:
            entries.append(0)                   # IMAGE_REL_BASED_ABSOLUTE padding
        out += struct.pack("<II", page, 8 + 2 * len(entries)) + struct.pack(f"<{len(entries)}H", *entries)
    return bytes(out)


def build_pe(sections: list[tuple[str, int, bytes, int]], *, entry_rva: int = TEXT_RVA, image_base: int = 0x10000000,
             machine: int = 0x8664, subsystem: int = 10, characteristics: int = 0x0022,
             section_alignment: int = 0x1000, file_alignment: int = 0x200, reloc: tuple[int, int] | None = None,
             size_of_image: int | None = None, truncate: int | None = None) -> bytes:
    """A PE32+ file.  ``sections``: (name, rva, raw bytes, virtual size); ``reloc``: (rva, size) of
    the base-relocation directory."""
    headers_size = 0x200
    raw_at, table, body = headers_size, b"", b""
    for name, rva, data, vsize in sections:
        raw = data + bytes(-len(data) % file_alignment)
        table += struct.pack("<8sIIIIIIHHI", name.encode(), vsize, rva, len(raw), raw_at if raw else 0,
                             0, 0, 0, 0, 0xE0000020)
        body += raw
        raw_at += len(raw)
    end = max(rva + max(vsize, len(data)) for _, rva, data, vsize in sections)
    if size_of_image is None:
        size_of_image = -(-end // section_alignment) * section_alignment
    directories = [(0, 0)] * 16
    if reloc is not None:
        directories[5] = reloc
    opt = struct.pack("<HBBIIIII", 0x20B, 2, 40, 0, 0, 0, entry_rva, TEXT_RVA)
    opt += struct.pack("<QIIHHHHHHIIIIHH", image_base, section_alignment, file_alignment, 0, 0, 0, 0, 2, 0, 0,
                       size_of_image, headers_size, 0, subsystem, 0)
    opt += struct.pack("<QQQQII", 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    opt += b"".join(struct.pack("<II", *d) for d in directories)
    coff = struct.pack("<HHIIIHH", machine, len(sections), 0, 0, 0, len(opt), characteristics)
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    head = (bytes(dos) + b"PE\0\0" + coff + opt + table).ljust(headers_size, b"\0")
    image = head + body
    return image[:truncate] if truncate is not None else image


def efi_app(body: str, *, image_base: int = 0x10000000, bss: int = 0, relocate: tuple[str, ...] = (),
            text_rva: int = TEXT_RVA, **pe_options) -> bytes:
    """An EFI application from ``body`` (runs between the prelude and the epilogue; jump to
    ``done`` with the status in RAX).  ``relocate`` names symbols holding a ``.quad`` absolute
    address that the loader must fix up; ``bss`` zero bytes follow the code."""
    return efi_app_and_symbols(body, image_base=image_base, bss=bss, relocate=relocate, text_rva=text_rva,
                               **pe_options)[0]


def efi_app_and_symbols(body: str, *, image_base: int = 0x10000000, bss: int = 0, relocate: tuple[str, ...] = (),
                        text_rva: int = TEXT_RVA, **pe_options) -> tuple[bytes, dict[str, int]]:
    """``efi_app`` and the symbols' addresses (for an image loaded at its ImageBase)."""
    flat, symbols = assemble_app(body, image_base=image_base, text_rva=text_rva)
    sections = [(".text", text_rva, flat, len(flat) + bss)]
    reloc = None
    if relocate:
        rvas = [symbols[name] - image_base for name in relocate]
        blob = reloc_section(rvas)
        reloc_rva = -(-(TEXT_RVA + len(flat) + bss) // 0x1000) * 0x1000
        sections.append((".reloc", reloc_rva, blob, len(blob)))
        reloc = (reloc_rva, len(blob))
    return build_pe(sections, image_base=image_base, reloc=reloc, entry_rva=text_rva, **pe_options), symbols


# -- a scripted caller of firmware services ------------------------------------------------------------
# Table selectors: the offset of the table's pointer in the system table, BS_AT_ENTRY (the boot
# services pointer saved at entry, still usable after ExitBootServices cleared the system table's),
# or interface_at(offset): the protocol interface an earlier call stored in the scratch area.
BS, RT, CON_OUT, CON_IN, BS_AT_ENTRY = 0x60, 0x58, 0x40, 0x30, 0x1000


def interface_at(offset: int) -> int:
    return 0x2000 + offset
SCRATCH_SIZE = 0x20000
MAX_ARGS = 10


def scratch(offset: int) -> int:
    """An argument: the address of byte ``offset`` of the app's scratch area."""
    return 0xFEED << 48 | offset


def scratch_value(offset: int) -> int:
    """An argument: the u64 stored at byte ``offset`` of the scratch area (a result of an earlier call)."""
    return 0xFEEE << 48 | offset


THIS = 0xFEEF << 48          # an argument: the table (protocol) the call goes through
IMAGE_HANDLE = 0xFEEC << 48  # an argument: the app's ImageHandle
SYSTEM_TABLE = 0xFEEB << 48  # an argument: the system table

SCRIPT_BODY = """
    mov ST_BS(%rbx), %rax
    mov %rax, bs_saved(%rip)
    lea records(%rip), %r13
next:
    mov (%r13), %rax
    cmp $-1, %rax
    je finish
    cmp $0x1000, %rax
    jne 1f
    mov bs_saved(%rip), %r15
    jmp 2f
1:  cmp $0x2000, %rax
    jb 4f
    lea scratch(%rip), %rdx
    mov -0x2000(%rdx,%rax), %r15
    jmp 2f
4:  mov (%rbx,%rax), %r15
2:  xor %r14d, %r14d
3:  mov 24(%r13,%r14,8), %rax
    call resolve
    lea argbuf(%rip), %rdx
    mov %rax, (%rdx,%r14,8)
    inc %r14
    cmp $10, %r14
    jb 3b
    lea argbuf(%rip), %rax
    mov 32(%rax), %rdx
    mov %rdx, 0x20(%rsp)
    mov 40(%rax), %rdx
    mov %rdx, 0x28(%rsp)
    mov 48(%rax), %rdx
    mov %rdx, 0x30(%rsp)
    mov 56(%rax), %rdx
    mov %rdx, 0x38(%rsp)
    mov 64(%rax), %rdx
    mov %rdx, 0x40(%rsp)
    mov 72(%rax), %rdx
    mov %rdx, 0x48(%rsp)
    mov 8(%r13), %r10
    mov (%r15,%r10), %r10
    mov (%rax), %rcx
    mov 8(%rax), %rdx
    mov 16(%rax), %r8
    mov 24(%rax), %r9
    call *%r10
    mov count(%rip), %rdx
    lea results(%rip), %rcx
    mov %rax, (%rcx,%rdx,8)
    incq count(%rip)
    add $104, %r13
    jmp next
finish:
    xor %eax, %eax
    jmp done

resolve:
    mov %rax, %rdx
    shr $48, %rdx
    cmp $0xFEED, %rdx
    jne 1f
    movzwl %ax, %eax
    lea scratch(%rip), %rdx
    add %rdx, %rax
    ret
1:  cmp $0xFEEE, %rdx
    jne 1f
    movzwl %ax, %eax
    lea scratch(%rip), %rdx
    mov (%rdx,%rax), %rax
    ret
1:  cmp $0xFEEF, %rdx
    jne 1f
    mov %r15, %rax
    ret
1:  cmp $0xFEEC, %rdx
    jne 1f
    mov %r12, %rax
    ret
1:  cmp $0xFEEB, %rdx
    jne 1f
    mov %rbx, %rax
1:  ret
"""


def call_script(calls, *, data: bytes = b"", **options) -> tuple[bytes, dict[str, int]]:
    """An app that makes ``calls`` in order and returns EFI_SUCCESS.  Each call is
    ``(table, slot offset, args...)`` with at most 10 arguments (see ``scratch``, ``THIS``...);
    ``data`` is copied to the start of the scratch area.  Returns the PE and its symbols
    (``scratch``, ``results``: one u64 status per call)."""
    records = []
    for table, slot, *args in calls:
        assert len(args) <= MAX_ARGS
        values = [table, slot, len(args), *args, *([0] * (MAX_ARGS - len(args)))]
        records.append(".quad " + ", ".join(str(v) for v in values))
    data_lines = ".byte " + ", ".join(str(b) for b in data) if data else ""
    body = (SCRIPT_BODY + "\n.balign 8\nrecords:\n" + "\n".join(records) + "\n.quad -1\n"
            + f".balign 8\nbs_saved: .quad 0\ncount: .quad 0\nargbuf: .skip 80\nresults: .skip {8 * (len(calls) + 1)}\n"
            + f".balign 4096\nscratch:\n{data_lines}\n.skip {SCRATCH_SIZE - len(data)}\n")
    image_base = options.pop("image_base", 0x10000000)
    flat, symbols = assemble_app(body, image_base=image_base)
    return build_pe([(".text", TEXT_RVA, flat, len(flat))], image_base=image_base, **options), symbols


# -- running a script ------------------------------------------------------------------------------
def bs(name: str) -> int:
    return efi.BOOT_SERVICES_FIRST_SLOT + 8 * efi.BOOT_SERVICES.index(name)


def rt(name: str) -> int:
    return efi.RUNTIME_SERVICES_FIRST_SLOT + 8 * efi.RUNTIME_SERVICES.index(name)


def con_out(name: str) -> int:
    return 8 * efi.TEXT_OUTPUT_SERVICES.index(name)


def script(calls, *, data: bytes = b"", config: MachineConfig | None = None, path_pointer: bool = False,
           **options):
    """Run the calls; ``path_pointer``: scratch[0x28] is set to the address of scratch[0x38]
    before the run (a pointer to a device path, as LocateDevicePath takes)."""
    app, symbols = call_script(calls, data=data)
    prepared = Run("efi", app, config or MachineConfig(), options=options)
    if path_pointer:
        prepared.machine.memory.write_u64(symbols["scratch"] + 0x28, symbols["scratch"] + 0x38)
    result = prepared.execute()
    traced = [e for e in result.events if e.kind == "Call"]
    return prepared, result, traced, symbols


def u64(prepared, symbols, offset: int) -> int:
    return prepared.machine.memory.read_u64(symbols["scratch"] + offset)
