"""``hvsim run --trace-file FILE`` and ``--trace-filter KIND[,INTERFACE...]`` on the embedded probe
under xen_pvh (hypercalls, an MSR call, console output, a shutdown)."""

from __future__ import annotations

import json

import pytest

from hvsim.cli import main
from hvsim.core.events import Call, Fault, Note
from hvsim.trace import TraceFilter


def traced(tmp_path, capsys, *options):
    path = tmp_path / "trace.jsonl"
    assert main(["run", "--env", "xen_pvh", "--trace-file", str(path), *options]) == 0
    out, err = capsys.readouterr()
    return [json.loads(line) for line in path.read_text().splitlines()], out, err


def test_the_trace_file_holds_every_event_one_json_object_a_line(tmp_path, capsys):
    events, out, err = traced(tmp_path, capsys)
    kinds = {e["kind"] for e in events}
    assert kinds == {"Call", "ConsoleOutput", "Shutdown"}
    assert "".join(e["text"] for e in events if e["kind"] == "ConsoleOutput") == out
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert "hvsim: trace:" not in err                     # the file, not stderr


def test_a_filter_by_interface_keeps_only_those_calls(tmp_path, capsys):
    events, _, _ = traced(tmp_path, capsys, "--trace-filter", "xen-hypercall")
    assert events and {(e["kind"], e["interface"]) for e in events} == {("Call", "xen-hypercall")}
    events, _, _ = traced(tmp_path, capsys, "--trace-filter", "shutdown,msr")
    assert [(e["kind"], e.get("interface")) for e in events] == [("Call", "msr"), ("Shutdown", None)]


def test_a_filter_by_kind_on_stderr(tmp_path, capsys):
    assert main(["run", "--env", "xen_pvh", "--trace-filter", "Shutdown"]) == 0
    out, err = capsys.readouterr()
    traces = [line for line in err.splitlines() if line.startswith("hvsim: trace: ")]
    assert len(traces) == 1 and json.loads(traces[0][len("hvsim: trace: "):])["kind"] == "Shutdown"
    assert out                                            # the console still streams
    assert main(["run", "--env", "xen_pvh", "--trace", "--trace-filter", "ConsoleOutput"]) == 0
    out, err = capsys.readouterr()
    texts = [json.loads(line[len("hvsim: trace: "):])["text"] for line in err.splitlines()
             if line.startswith("hvsim: trace: ")]
    assert "".join(texts) == out


def test_bad_trace_options_are_usage_errors(tmp_path, capsys):
    assert main(["run", "--env", "xen_pvh", "--trace-filter", "Call,,msr"]) == 2
    assert "empty term" in capsys.readouterr().err
    assert main(["run", "--env", "xen_pvh", "--trace-file", str(tmp_path / "no" / "such")]) == 2
    assert "--trace-file" in capsys.readouterr().err


@pytest.mark.parametrize("spec, event, kept", [
    ("Call", Call(interface="cpuid", name="leaf 0"), True),
    ("call,msr", Call(interface="cpuid", name="leaf 0"), False),
    ("Fault,cpuid", Fault(vector=14, name="#PF", rip=0), True),
    ("Fault,cpuid", Call(interface="cpuid", name="leaf 0"), True),
    ("cpuid", Note(text="x"), False),
    (None, Note(text="x"), True),
])
def test_the_filter_rules(spec, event, kept):
    assert TraceFilter.parse(spec).accepts(event) is kept
