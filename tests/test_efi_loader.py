"""The efi environment's PE32+ loader: sections at their RVAs, BSS zero-filled, base relocations when
the image cannot have its ImageBase, sub-page section alignment; and the images firmware refuses,
each with its reason."""

from __future__ import annotations

import struct

import pytest

from hvsim import MachineConfig
from hvsim.api import Run, run
from hvsim.core.errors import HvsimError, LoadError

from efi_apps import TEXT_RVA, assemble_app, build_pe, efi_app

NOT_RAM = 0x7000_0000_0000            # an ImageBase no RAM backs: the loader must relocate


def boot(app: bytes, **config):
    prepared = Run("efi", app, MachineConfig(**config))
    return prepared, prepared.execute()


def test_sections_land_at_their_rvas_and_virtual_size_beyond_raw_is_zero():
    code, _ = assemble_app("xor %eax, %eax\njmp done")
    data = b"DATA" * 8
    after = b"\xAA" * 0x200                        # file bytes right after .data's raw part
    app = build_pe([(".text", TEXT_RVA, code, len(code)), (".data", 0x3000, data, 0x2000),
                    (".junk", 0x6000, after, len(after))])
    prepared, result = boot(app)
    assert result.exit_status == 0, result.stop
    image = prepared.machine.plugin_state["efi"].images[prepared.machine.plugin_state["efi"].main_image]
    memory = prepared.machine.memory
    assert memory.read(image.base, 2) == b"MZ"                       # the headers at the image base
    assert memory.read(image.base + TEXT_RVA, len(code)) == code
    assert memory.read(image.base + 0x3000, len(data)) == data
    assert memory.read(image.base + 0x3000 + len(data), 0x2000 - len(data)) == bytes(0x2000 - len(data))
    assert memory.read(image.base + 0x6000, 0x200) == after


def test_an_image_whose_base_is_free_is_loaded_there_unrelocated():
    app = efi_app("lea target(%rip), %rax\ncmp pointer(%rip), %rax\njne 1f\nxor %eax, %eax\njmp done\n"
                  "1: mov $1, %eax\njmp done\n.balign 8\npointer: .quad target\ntarget: .quad 0",
                  image_base=0x10000000)
    prepared, result = boot(app)
    assert result.exit_status == 0
    assert result.entry.startswith("pe: <bytes> at 0x10000000")


@pytest.mark.parametrize("relocated", [True, False])
def test_base_relocations_are_applied_when_the_image_base_is_not_ram(relocated):
    """The app compares an absolute pointer (a DIR64 relocation) with the RIP-relative address of
    its target; without the relocation entry the comparison fails and the app says so."""
    body = ("lea target(%rip), %rax\ncmp pointer(%rip), %rax\njne 1f\nxor %eax, %eax\njmp done\n"
            "1: mov $0x8000000000000001, %rax\njmp done\n.balign 8\npointer: .quad target\ntarget: .quad 0")
    app = efi_app(body, image_base=NOT_RAM, relocate=("pointer",) if relocated else ("target",))
    prepared, result = boot(app)
    assert not result.entry.startswith(f"pe: <bytes> at {NOT_RAM:#x}")
    assert result.exit_status == (0 if relocated else 1), result.stop


def test_section_alignment_below_a_page_is_accepted():
    app = efi_app("xor %eax, %eax\njmp done", text_rva=0x200, section_alignment=0x200)
    _, result = boot(app)
    assert result.exit_status == 0, result.stop


def refusal(app: bytes) -> str:
    with pytest.raises(HvsimError) as info:
        run("efi", app, MachineConfig())
    return str(info.value)


def test_wrong_machine_is_refused():
    assert "machine is arm64 (0xaa64), not x86_64" in refusal(efi_app("jmp done", machine=0xAA64))


def test_a_subsystem_that_is_not_efi_is_refused():
    message = refusal(efi_app("jmp done", subsystem=3))
    assert "subsystem 3 is not an EFI application or driver" in message


def test_a_truncated_section_is_refused():
    app = efi_app("xor %eax, %eax\njmp done\n.skip 0x800")
    message = refusal(app[:0x600])
    assert "truncated" in message or "runs past the end of the file" in message


def test_overlapping_sections_are_refused():
    code, _ = assemble_app("jmp done")
    app = build_pe([(".text", TEXT_RVA, code, 0x2000), (".data", 0x2000, b"x" * 16, 16)])
    assert "overlap" in refusal(app)


def test_a_section_beyond_size_of_image_is_refused():
    code, _ = assemble_app("jmp done")
    app = build_pe([(".text", TEXT_RVA, code, len(code))], size_of_image=0x1000)
    assert "beyond SizeOfImage" in refusal(app)


def test_an_image_with_stripped_relocations_needs_its_image_base():
    app = efi_app("jmp done", image_base=NOT_RAM, characteristics=0x0023)
    with pytest.raises(LoadError, match="relocations are stripped"):
        run("efi", app, MachineConfig())


def test_the_cli_refuses_with_one_line(tmp_path, capsys):
    from hvsim.cli import main

    path = tmp_path / "arm.efi"
    path.write_bytes(efi_app("jmp done", machine=0xAA64))
    status = main(["run", "--env", "efi", str(path)])
    err = capsys.readouterr().err
    assert status != 0 and "not x86_64" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_relocation_blocks_are_read_with_their_padding():
    """Two relocations on one page give an even count; three need an ABSOLUTE padding entry."""
    from efi_apps import reloc_section

    blob = reloc_section([0x1008, 0x1010, 0x1018])
    page, size = struct.unpack_from("<II", blob)
    assert (page, size) == (0x1000, 16) and struct.unpack_from("<H", blob, 14)[0] == 0
