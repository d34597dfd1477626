"""Regenerate the committed corpus in fuzz/corpus/ (needs GNU as/ld/objcopy and the test helpers in
tests/).  The runner itself needs neither: it reads the files written here.

- ``image/``: the base images of tests/test_image_fuzz.py plus the probe kernels.
- ``xen-hypercall/guest.elf``: a xen_pv guest that runs a table of ``ROWS`` (number, 5 arguments)
  rows with ``syscall``; the table is filled with a marker the runner overwrites (meta.json says where).
- ``efi-service/app.efi``: tests/efi_apps.py's call-script app with ``ROWS`` records, likewise.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

ROWS = 16
MARK = 0x5A5A_F022_5A5A_F022


def _image_corpus(out: Path) -> None:
    from test_image_fuzz import BASES
    from hvsim.kernels import probe_path
    bases = dict(BASES)
    for kind in ("bzImage", "elf", "efi"):
        bases[f"probe.{kind}"] = probe_path(kind).read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(bases.items()):
        (out / f"{name}.bin").write_bytes(data)


def _xen_corpus(out: Path) -> None:
    from test_xen_pv_bad_input import DATA, PROLOGUE, pv_image
    from test_xen_pv_fuzz import LOOP
    row = struct.pack("<6Q", *([MARK] * 6))
    table = row * ROWS + struct.pack("<q", -1)
    source = PROLOGUE + LOOP + ".byte " + ", ".join(str(b) for b in table) + "\n"
    image, symbols = pv_image(source.replace(DATA, ""))
    at = image.find(row * ROWS)
    assert at >= 0 and image.find(row * ROWS, at + 1) < 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "guest.elf").write_bytes(image)
    (out / "meta.json").write_text(json.dumps({
        "table_offset": at, "rows": ROWS, "row_size": 48, "end_marker": -1,
        "image_start": 0x10_0000, "scratch": symbols["scratch"], "table": symbols["table"],
    }, indent=1) + "\n")


def _efi_corpus(out: Path) -> None:
    from efi_apps import MAX_ARGS, call_script
    calls = [(MARK, MARK, *([MARK] * MAX_ARGS))] * ROWS
    app, symbols = call_script(calls)
    record = struct.pack(f"<{3 + MAX_ARGS}Q", MARK, MARK, MAX_ARGS, *([MARK] * MAX_ARGS))
    at = app.find(record * ROWS)
    assert at >= 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "app.efi").write_bytes(app)
    (out / "meta.json").write_text(json.dumps({
        "records_offset": at, "rows": ROWS, "record_size": len(record), "max_args": MAX_ARGS,
        "scratch": symbols["scratch"], "scratch_size": 0x20000,
    }, indent=1) + "\n")


if __name__ == "__main__":
    corpus = HERE / "corpus"
    _image_corpus(corpus / "image")
    _xen_corpus(corpus / "xen-hypercall")
    _efi_corpus(corpus / "efi-service")
    for f in sorted(corpus.rglob("*")):
        if f.is_file():
            print(f.relative_to(HERE), f.stat().st_size)
