"""The probe's report, read back from console text as an environment run would capture it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvsim.probe_report import (
    ProbeException,
    ProbeReport,
    ProbeReportError,
    parse_probe_exception,
    parse_probe_report,
    unescape,
)

REPORT = """\
hvsim-probe: begin v1
entry: linux64
cmdline: console=ttyS0 probe.spin=1000 caf\u00e9 tab\\x09here back\\\\slash
memmap: 3
mem: 0x0000000000000000 0x000000000009fc00 1
mem: 0x000000000009fc00 0x0000000000000400 2
mem: 0x0000000000100000 0x000000000ff00000 1
initrd: 0x8000000 0x300000 crc32=de223ee8
rsdp: 0xe0000
acpi: FACP APIC HPET
cpus: 4
hypervisor: XenVMMXenVMM
spin: 1000
hvsim-probe: end
"""

MINIMAL = """\
hvsim-probe: begin v1
entry: linux64
cmdline:
memmap: 0
initrd: none
rsdp: none
acpi: none
cpus: unknown
hypervisor: none
hvsim-probe: end
"""


def uart(text: str) -> str:
    """What a 16550 console delivers: every "\\n" as "\\r\\n"."""
    return text.replace("\n", "\r\n")


def escape(raw: bytes) -> bytes:
    """The probe's escaping (probe/console.c con_escaped), written again from the specification."""
    out = bytearray()
    for byte in raw:
        if byte == 0x5C:
            out += b"\\\\"
        elif 0x20 <= byte <= 0x7E or byte >= 0x80:
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    return bytes(out)


def test_a_full_report_inside_other_console_output_is_read_field_by_field():
    text = "SeaBIOS (version 1.16)\nBooting from ROM...\n" + uart(REPORT) + "reboot: Power down\n"

    report = parse_probe_report(text)

    assert report == ProbeReport(
        entry="linux64",
        cmdline="console=ttyS0 probe.spin=1000 caf\u00e9 tab\there back\\slash",
        memmap=((0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0x100000, 0xFF00000, 1)),
        initrd=(0x8000000, 0x300000, 0xDE223EE8),
        rsdp=0xE0000,
        acpi_tables=("FACP", "APIC", "HPET"),
        cpus=4,
        spin=1000,
        hypervisor="XenVMMXenVMM",
    )


def test_a_kvm_signature_keeps_its_escaped_nuls_out_and_a_short_one_is_refused():
    kvm = REPORT.replace("hypervisor: XenVMMXenVMM", "hypervisor: KVMKVMKVM\\x00\\x00\\x00")
    assert parse_probe_report(kvm).hypervisor == "KVMKVMKVM"
    assert parse_probe_report(MINIMAL).hypervisor is None
    with pytest.raises(ProbeReportError, match="not 12 bytes"):
        parse_probe_report(REPORT.replace("hypervisor: XenVMMXenVMM", "hypervisor: Xen"))


def test_the_begin_marker_may_follow_unterminated_text_on_its_line():
    text = "Booting from ROM..." + REPORT

    assert parse_probe_report(text).entry == "linux64"


def test_a_report_without_initrd_acpi_or_command_line_reads_as_absences():
    report = parse_probe_report(MINIMAL)

    assert report.cmdline == ""
    assert report.memmap == ()
    assert report.initrd is None
    assert report.rsdp is None
    assert report.acpi_tables == ()
    assert report.cpus is None
    assert report.spin is None


def test_an_empty_command_line_and_a_missing_one_both_read_as_empty():
    empty = MINIMAL.replace("cmdline:\n", "cmdline: \n")

    assert parse_probe_report(empty).cmdline == ""
    assert parse_probe_report(MINIMAL).cmdline == ""


def test_a_command_line_of_only_spaces_keeps_them():
    text = MINIMAL.replace("cmdline:\n", "cmdline:    \n")

    assert parse_probe_report(text).cmdline == "   "


def test_raw_bytes_that_are_not_utf8_come_back_through_surrogateescape():
    console = uart(MINIMAL).encode().replace(b"cmdline:\r\n", b"cmdline: a\xffb\xe2\x80\xa8c\r\n")

    report = parse_probe_report(console)

    assert report.cmdline == "a\udcffb\u2028c"
    assert report.cmdline.encode("utf-8", "surrogateescape") == b"a\xffb\xe2\x80\xa8c"


@given(st.binary(max_size=300))
def test_any_command_line_round_trips_through_the_probe_escaping(raw: bytes):
    console = uart(MINIMAL).encode().replace(b"cmdline:\r\n", b"cmdline: " + escape(raw) + b"\r\n")

    report = parse_probe_report(console.decode("utf-8", "surrogateescape"))

    assert report.cmdline.encode("utf-8", "surrogateescape") == raw


def test_escaped_acpi_signatures_are_unescaped():
    text = MINIMAL.replace("acpi: none", "acpi: FACP OEM\\x20 \\\\BAD")

    assert parse_probe_report(text).acpi_tables == ("FACP", "OEM ", "\\BAD")


def test_the_exception_line_is_read_on_its_own():
    text = uart(REPORT) + "probe: exception 14 err=0x0 rip=0x10136b cr2=0x7fff00000000\r\n"

    assert parse_probe_exception(text) == ProbeException(14, 0, 0x10136B, 0x7FFF00000000)
    assert parse_probe_exception(REPORT) is None


def test_to_dict_names_every_field_and_is_json_serialisable():
    as_dict = parse_probe_report(REPORT).to_dict()

    assert as_dict["memmap"][0] == {"start": 0, "size": 0x9FC00, "type": 1}
    assert as_dict["initrd"] == {"addr": 0x8000000, "size": 0x300000, "crc32": 0xDE223EE8}
    assert as_dict["acpi_tables"] == ["FACP", "APIC", "HPET"]
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_no_begin_line_is_an_error_that_mentions_a_reported_exception():
    text = "probe: exception 13 err=0x0 rip=0x100400 cr2=0x0\n"

    with pytest.raises(ProbeReportError, match="no 'hvsim-probe: begin v1' line.*exception 13"):
        parse_probe_report(text)


def test_a_truncated_report_is_an_error():
    text = REPORT.replace("hvsim-probe: end\n", "")

    with pytest.raises(ProbeReportError, match="no 'hvsim-probe: end' line.*truncated"):
        parse_probe_report(text)


def test_another_report_version_is_refused():
    with pytest.raises(ProbeReportError, match="unsupported report version"):
        parse_probe_report(REPORT.replace("begin v1", "begin v2"))


@pytest.mark.parametrize(
    ("good", "bad", "message"),
    [
        ("memmap: 3", "memmap: 4", "memmap says 4 entries"),
        ("memmap: 3", "memmap: 2", "expected the 'initrd:' line"),
        ("memmap: 3", "memmap: three", "not a decimal number"),
        ("mem: 0x0000000000000000 0x000000000009fc00 1", "mem: 0 0x9fc00 1", "expected 'mem: 0x<start>"),
        ("initrd: 0x8000000 0x300000 crc32=de223ee8", "initrd: 0x8000000 0x300000", "crc32=<8 hex digits>"),
        ("rsdp: 0xe0000", "rsdp: e0000", "RSDP address is not a 0x-hex number"),
        ("acpi: FACP APIC HPET", "acpi: FACP APIC HPETX", "is not 4 bytes"),
        ("cpus: 4", "cpus: ?", "CPU count is not a decimal number"),
        ("spin: 1000", "spin: 1000\nsurprise: 1", "expected 'hvsim-probe: end'"),
        ("cmdline: console", "cmdline: con\\sole", "bad escape in the command line"),
        ("entry: linux64", "entry:linux64", "expected a space after 'entry:'"),
        ("entry: linux64\n", "", "expected the 'entry:' line"),
    ],
)
def test_a_malformed_line_is_named_in_the_error(good: str, bad: str, message: str):
    text = REPORT.replace(good, bad, 1)
    assert text != REPORT

    with pytest.raises(ProbeReportError, match=message) as excinfo:
        parse_probe_report("boot noise\n" + text)
    assert "console line" in str(excinfo.value)


def test_the_error_is_a_value_error():
    assert issubclass(ProbeReportError, ValueError)


def test_unescape_refuses_a_lone_backslash():
    assert unescape("a\\\\b\\x00") == b"a\\b\x00"
    with pytest.raises(ValueError):
        unescape("a\\qb")
