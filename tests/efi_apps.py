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

TEXT_RVA = 0x1000
PRELUDE = """
    push %rbx
    push %r12
    push %r13
    sub $0x40, %rsp
    mov %rdx, %rbx
    mov %rcx, %r12
"""
EPILOGUE = """
done:
    add $0x40, %rsp
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


def assemble_app(body: str, *, image_base: int = 0x10000000) -> tuple[bytes, dict[str, int]]:
    """The flat image bytes from RVA 0x1000 and the symbols (absolute, for ``image_base``)."""
    source = f"{EQUATES}\n.text\n.globl _start\n_start:\n{PRELUDE}\n{body}\n{EPILOGUE}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, elf, flat = (Path(tmp) / n for n in ("a.S", "a.o", "a.elf", "a.bin"))
        src.write_text(source)
        subprocess.run(["as", "--64", "-o", obj, src], check=True, capture_output=True)
        subprocess.run(["ld", "-m", "elf_x86_64", "-N", f"-Ttext={image_base + TEXT_RVA:#x}", "-o", elf, obj],
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
            **pe_options) -> bytes:
    """An EFI application from ``body`` (runs between the prelude and the epilogue; jump to
    ``done`` with the status in RAX).  ``relocate`` names symbols holding a ``.quad`` absolute
    address that the loader must fix up; ``bss`` zero bytes follow the code."""
    flat, symbols = assemble_app(body, image_base=image_base)
    sections = [(".text", TEXT_RVA, flat, len(flat) + bss)]
    reloc = None
    if relocate:
        rvas = [symbols[name] - image_base for name in relocate]
        blob = reloc_section(rvas)
        reloc_rva = -(-(TEXT_RVA + len(flat) + bss) // 0x1000) * 0x1000
        sections.append((".reloc", reloc_rva, blob, len(blob)))
        reloc = (reloc_rva, len(blob))
    return build_pe(sections, image_base=image_base, reloc=reloc, **pe_options)
