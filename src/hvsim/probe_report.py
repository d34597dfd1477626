"""Read the hvsim probe kernel's canonical report back out of console text.

The probe (``probe/`` in the repository; ``hvsim.kernels.probe_path()``) prints, through whatever
console its environment offers, one report between two marker lines (``probe/report.c`` is the writer)::

    hvsim-probe: begin v1
    entry: linux64
    cmdline: console=ttyS0 probe.spin=1000
    memmap: 2
    mem: 0x0000000000000000 0x000000000009fc00 1
    mem: 0x0000000000100000 0x000000000ff00000 1
    initrd: 0x8000000 0x300000 crc32=de223ee8        (or: initrd: none)
    rsdp: 0xe0000                                    (or: rsdp: none)
    acpi: FACP APIC HPET                             (or: acpi: none)
    cpus: 4                                          (or: cpus: unknown)
    hypervisor: XenVMMXenVMM                         (or: hypervisor: none; CPUID 0x40000000, escaped)
    spin: 1000                                       (only with probe.spin=N)
    hvsim-probe: end

Numbers are lower-case hex with ``0x`` except ``memmap``, the E820 type, ``cpus`` and ``spin``
(decimal) and the CRC-32 (eight hex digits, as ``zlib.crc32`` computes it over the initrd bytes).
The command line and ACPI signatures are escaped: printable ASCII other than backslash as is, bytes
0x80 and above raw (so UTF-8 passes through), a backslash as ``\\\\``, any other byte as ``\\xNN``;
in signatures a space is escaped too. A missing command line (pointer 0) prints ``cmdline:`` with
nothing after it, an empty one ``cmdline: `` with a trailing space; both parse to ``""``.

If the probe takes a CPU exception it prints ``probe: exception <vector, decimal> err=0x.. rip=0x..
cr2=0x..`` and powers off; :func:`parse_probe_exception` reads that line.

Console text is expected as ``str`` decoded from the guest's bytes as UTF-8 with ``surrogateescape``
(or as the raw ``bytes``), so that any byte the guest sent can be recovered exactly.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

BEGIN = "hvsim-probe: begin v1"
END = "hvsim-probe: end"
_ANY_BEGIN = re.compile(r"hvsim-probe: begin v[0-9]+$")  # at the end of a line: may follow other text

_HEX = r"0x([0-9a-f]+)"
_MEM = re.compile(rf"mem: {_HEX} {_HEX} ([0-9]+)")
_INITRD = re.compile(rf"initrd: {_HEX} {_HEX} crc32=([0-9a-f]{{8}})")
_ESCAPE = re.compile(r"\\(\\|x([0-9a-fA-F]{2}))")
_EXCEPTION = re.compile(rf"probe: exception ([0-9]+) err={_HEX} rip={_HEX} cr2={_HEX}")


class ProbeReportError(ValueError):
    """The console text holds no complete, well-formed probe report."""


@attrs.frozen
class ProbeReport:
    """What the probe observed, as it reported it."""

    entry: str
    cmdline: str
    memmap: tuple[tuple[int, int, int], ...]  # (start, size, E820 type), in the environment's order
    initrd: tuple[int, int, int] | None  # (address, size, CRC-32 of the bytes)
    rsdp: int | None
    acpi_tables: tuple[str, ...]  # signatures listed by the XSDT/RSDT, in order
    cpus: int | None  # usable CPUs counted in the MADT (pv: the vCPUs VCPUOP_is_up knows); None: unknown
    spin: int | None = None  # N of probe.spin=N when given
    hypervisor: str | None = None  # CPUID 0x40000000's signature, trailing NULs dropped; None: no hypervisor bit

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form with named fields."""
        return {
            "entry": self.entry,
            "cmdline": self.cmdline,
            "memmap": [{"start": s, "size": n, "type": t} for s, n, t in self.memmap],
            "initrd": (
                None
                if self.initrd is None
                else {"addr": self.initrd[0], "size": self.initrd[1], "crc32": self.initrd[2]}
            ),
            "rsdp": self.rsdp,
            "acpi_tables": list(self.acpi_tables),
            "cpus": self.cpus,
            "spin": self.spin,
            "hypervisor": self.hypervisor,
        }


@attrs.frozen
class ProbeException:
    """A CPU exception the probe's own IDT handler reported."""

    vector: int
    error_code: int
    rip: int
    cr2: int


def parse_probe_report(console_text: str | bytes) -> ProbeReport:
    """The probe report in ``console_text``; other lines before and after it are ignored.

    Raises :class:`ProbeReportError` naming the line when the begin or end marker is missing or a line
    of the report is malformed.
    """
    lines = _lines(console_text)
    begin = next((i for i, line in enumerate(lines) if _ANY_BEGIN.search(line)), None)
    if begin is None:
        raise ProbeReportError(f"no {BEGIN!r} line in the console text{_exception_hint(lines)}")
    if not lines[begin].endswith(BEGIN):
        raise ProbeReportError(
            f"console line {begin + 1}: unsupported report version {lines[begin]!r} (this parser reads {BEGIN!r})"
        )
    end = next((i for i in range(begin + 1, len(lines)) if lines[i] == END), None)
    if end is None:
        raise ProbeReportError(
            f"no {END!r} line after the begin line (console line {begin + 1}): the report is truncated"
            f"{_exception_hint(lines)}"
        )
    return _Reader(lines, begin + 1, end).report()


def parse_probe_exception(console_text: str | bytes) -> ProbeException | None:
    """The first ``probe: exception ...`` line in ``console_text``, or None."""
    for line in _lines(console_text):
        match = _EXCEPTION.search(line)
        if match:
            vector, err, rip, cr2 = match.groups()
            return ProbeException(int(vector), int(err, 16), int(rip, 16), int(cr2, 16))
    return None


def unescape(text: str) -> bytes:
    """The bytes behind the report's escaped form (see the module docstring)."""
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        out += _raw(text[pos : match.start()])
        out += b"\\" if match.group(2) is None else bytes([int(match.group(2), 16)])
        pos = match.end()
    out += _raw(text[pos:])
    return bytes(out)


def _raw(text: str) -> bytes:
    if "\\" in text:
        raise ValueError(f"a backslash not followed by '\\' or 'xNN' in {text!r}")
    return text.encode("utf-8", "surrogateescape")


def _lines(console_text: str | bytes) -> list[str]:
    if isinstance(console_text, bytes):
        console_text = console_text.decode("utf-8", "surrogateescape")
    # Split on "\n" only: str.splitlines() would also split on characters a raw UTF-8 command line may
    # legitimately contain (U+2028, U+0085, ...). UART consoles send "\r\n".
    return [line.rstrip("\r") for line in console_text.split("\n")]


def _exception_hint(lines: list[str]) -> str:
    exc = next((line for line in lines if _EXCEPTION.search(line)), None)
    return f"; the probe reported: {exc.strip()!r}" if exc else ""


class _Reader:
    """Reads the report's lines in their fixed order, one field per method."""

    def __init__(self, lines: list[str], start: int, end: int):
        self.lines = lines
        self.pos = start
        self.end = end

    def _next(self, key: str) -> str:
        """The value of the next line, which must start with "<key>:"."""
        if self.pos >= self.end:
            raise ProbeReportError(f"the report ends before its {key!r} line (console line {self.end + 1})")
        line = self.lines[self.pos]
        self.pos += 1
        prefix = key + ":"
        if not line.startswith(prefix):
            raise self._error(f"expected the '{key}:' line")
        value = line[len(prefix) :]
        if value and not value.startswith(" "):
            raise self._error(f"expected a space after {prefix!r}")
        return value[1:]

    def _error(self, why: str) -> ProbeReportError:
        return ProbeReportError(f"console line {self.pos}: {why}: {self.lines[self.pos - 1]!r}")

    def _int(self, text: str, base: int, what: str) -> int:
        pattern = r"0x[0-9a-f]+" if base == 16 else r"[0-9]+"
        if not re.fullmatch(pattern, text):
            raise self._error(f"{what} is not a {'0x-hex' if base == 16 else 'decimal'} number")
        return int(text, base)

    def report(self) -> ProbeReport:
        entry = self._next("entry")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", entry):
            raise self._error("the entry name is empty or has odd characters")
        cmdline = self._cmdline()
        memmap = self._memmap()
        initrd = self._initrd()
        rsdp_text = self._next("rsdp")
        rsdp = None if rsdp_text == "none" else self._int(rsdp_text, 16, "the RSDP address")
        acpi_tables = self._acpi()
        cpus_text = self._next("cpus")
        cpus = None if cpus_text == "unknown" else self._int(cpus_text, 10, "the CPU count")
        hypervisor = self._hypervisor()
        spin = None
        if self.pos < self.end and self.lines[self.pos].startswith("spin:"):
            spin = self._int(self._next("spin"), 10, "the spin count")
        if self.pos != self.end:
            self.pos += 1
            raise self._error(f"expected {END!r}")
        return ProbeReport(entry, cmdline, memmap, initrd, rsdp, acpi_tables, cpus, spin, hypervisor)

    def _cmdline(self) -> str:
        text = self._next("cmdline")
        try:
            return unescape(text).decode("utf-8", "surrogateescape")
        except ValueError as exc:
            raise self._error(f"bad escape in the command line ({exc})") from None

    def _memmap(self) -> tuple[tuple[int, int, int], ...]:
        count = self._int(self._next("memmap"), 10, "the memory map entry count")
        entries = []
        for _ in range(count):
            if self.pos >= self.end or not self.lines[self.pos].startswith("mem:"):
                self.pos += 1
                raise self._error(f"memmap says {count} entries but 'mem:' line {len(entries) + 1} is missing")
            self.pos += 1
            match = _MEM.fullmatch(self.lines[self.pos - 1])
            if not match:
                raise self._error("expected 'mem: 0x<start> 0x<size> <type>'")
            start, size, kind = match.groups()
            entries.append((int(start, 16), int(size, 16), int(kind)))
        return tuple(entries)

    def _initrd(self) -> tuple[int, int, int] | None:
        text = self._next("initrd")
        if text == "none":
            return None
        match = _INITRD.fullmatch("initrd: " + text)
        if not match:
            raise self._error("expected 'initrd: 0x<addr> 0x<size> crc32=<8 hex digits>' or 'initrd: none'")
        addr, size, crc = match.groups()
        return int(addr, 16), int(size, 16), int(crc, 16)

    def _hypervisor(self) -> str | None:
        text = self._next("hypervisor")
        if text == "none":
            return None
        try:
            raw = unescape(text)
        except ValueError as exc:
            raise self._error(f"bad escape in the hypervisor signature ({exc})") from None
        if len(raw) != 12:
            raise self._error(f"hypervisor signature {text!r} is not 12 bytes")
        return raw.rstrip(b"\0").decode("ascii", "backslashreplace")

    def _acpi(self) -> tuple[str, ...]:
        text = self._next("acpi")
        if text == "none":
            return ()
        signatures = []
        for word in text.split(" "):
            try:
                signature = unescape(word).decode("utf-8", "surrogateescape")
            except ValueError as exc:
                raise self._error(f"bad escape in an ACPI signature ({exc})") from None
            if len(signature.encode("utf-8", "surrogateescape")) != 4:
                raise self._error(f"ACPI signature {word!r} is not 4 bytes")
            signatures.append(signature)
        return tuple(signatures)
