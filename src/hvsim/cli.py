"""The ``hvsim`` command line.

    hvsim envs                          installed environments
    hvsim inspect KERNEL [--json [FILE]] boot entries found, and which environments accept the image
    hvsim run --env ENV [KERNEL] ...    run (the embedded probe kernel when KERNEL is omitted);
                                        --init boots hvsim's own /init as the initrd;
                                        --trace / --trace-file FILE, --trace-filter KIND[,INTERFACE...]
    hvsim extract KERNEL -o VMLINUX     write the ELF vmlinux inside a bzImage's payload
    hvsim matrix [KERNEL] [--envs A,B]  run under every environment and compare what the kernel saw
                                        (--only-differences: the fields and environments that differ)
    hvsim coverage KERNEL [--envs A,B]  which functions run under one environment only, every one, none

Guest console output streams to stdout; hvsim's own messages go to stderr.  The exit status of
``run`` says how the guest stopped (table in hvsim.core.result: clean poweroff is 0); that of
``matrix`` is 0 when every difference is declared inherent by the plugins, 1 otherwise, and 6 when
the reference column did not boot to a comparable record (nothing was compared).  On a terminal,
``run`` and ``matrix`` show a live progress line on stderr after 2 s (``--quiet``: none).  Errors
are one line on stderr and a status from 2 to 5, never a traceback.  Functions in stop lines and
coverage are named by ``--system-map`` (with a warning when it is another build's), else the ELF's
``.symtab``, else the image's own kallsyms tables (``hvsim.kallsyms``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .core.config import MachineConfig
from .core.errors import HvsimError, UsageError
from .core.events import ConsoleOutput
from .core.plugins import environments, get_plugin_manager, hookimpl

INTERNAL_ERROR = 70


class _ConsoleStreamer:
    """Observer for one CLI run: guest console to stdout, other events to stderr with --trace and
    every event (console output included) as JSON lines to ``trace_file``, both as ``trace_filter``
    (``hvsim.trace``) allows; console output goes to the stderr trace only when the filter names it.

    The guest's bytes go out as they came (UTF-8, undecodable bytes restored), whatever the
    terminal's encoding; a closed stdout (``| head``) stops the streaming, not the run.
    """

    def __init__(self, trace: bool, progress=None, trace_file=None, trace_filter=None):
        from .trace import TraceFilter

        self.trace = trace
        self.trace_file = trace_file       # an open text file, or None
        self.trace_filter = trace_filter or TraceFilter()
        self.stdout_open = True
        self.progress = progress           # a ProgressLine to clear before writing to the terminal

    @hookimpl
    def hvsim_event(self, machine, event):
        if self.trace_file is not None and self.trace_filter.accepts(event):
            try:
                self.trace_file.write(json.dumps(event.to_dict()) + "\n")
            except (OSError, ValueError) as exc:        # a full disk ends the file, not the run
                print(f"hvsim: --trace-file: {getattr(exc, 'strerror', None) or exc}; no more events written",
                      file=sys.stderr)
                self.trace_file = None
        if isinstance(event, ConsoleOutput):
            if self.stdout_open:
                if self.progress is not None:
                    self.progress.clear()
                try:
                    out = getattr(sys.stdout, "buffer", None)
                    if out is not None:
                        out.write(event.text.encode("utf-8", "surrogateescape"))
                    else:
                        sys.stdout.write(event.text)
                    sys.stdout.flush()
                except (OSError, ValueError, UnicodeError):
                    self.stdout_open = False
                if self.progress is not None:
                    self.progress.wrote(event.text)
            if not self.trace_filter.names(event.kind):
                return
        if self.trace and self.trace_filter.accepts(event):
            if self.progress is not None:
                self.progress.clear()
            print(f"hvsim: trace: {json.dumps(event.to_dict())}", file=sys.stderr, flush=True)


def _parser(pm) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hvsim", description="Run a kernel under simulated boot environments.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    envs = sub.add_parser("envs", help="list installed environments")
    envs.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON to FILE (stdout without FILE or with -)")

    inspect = sub.add_parser("inspect", help="show a kernel image's boot entries and which environments accept it")
    inspect.add_argument("kernel")
    inspect.add_argument("--json", nargs="?", const="-", metavar="FILE",
                         help="write JSON to FILE (stdout without FILE or with -)")

    extract = sub.add_parser("extract", help="write the ELF vmlinux decompressed from a bzImage payload")
    extract.add_argument("kernel")
    extract.add_argument("-o", "--output", required=True)

    run = sub.add_parser("run", help="run a kernel under an environment")
    run.add_argument("kernel", nargs="?", help="kernel image (default: the embedded probe kernel)")
    run.add_argument("--env", required=True, help="environment (see `hvsim envs`)")
    _config_options(run)
    run.add_argument("--json", metavar="FILE", help="write the run result as JSON to FILE")
    run.add_argument("--trace", action="store_true", help="print every event (faults, calls, shutdown) to stderr")
    run.add_argument("--trace-file", metavar="FILE", help="write every event (console output included) to FILE, "
                                                          "one JSON object a line")
    run.add_argument("--trace-filter", metavar="KIND[,INTERFACE...]",
                     help="trace only these event kinds (Call, Fault, ConsoleOutput, Shutdown, Note) and calls of "
                          "these interfaces (xen-hypercall, efi-boot-services, cpuid, msr, ...); without "
                          "--trace-file it implies --trace")
    run.add_argument("--system-map", help="System.map naming the kernel's functions in the stop line (default: "
                                          "the ELF's .symtab, else its kallsyms tables)")
    _plugin_options(run, pm)

    matrix = sub.add_parser("matrix", help="run a kernel under every environment that accepts it and compare "
                                           "what it observed")
    _every_environment_options(matrix, pm, "the matrix")
    matrix.add_argument("--only-differences", action="store_true",
                        help="show only the fields that differ and the environments that differ from the reference")

    coverage = sub.add_parser("coverage", help="record the code each environment runs and report, by symbol, "
                                               "what runs under one environment only, every one, and none")
    coverage.add_argument("--system-map", help="System.map naming the kernel's functions (default: the "
                                               "ELF's .symtab, else its kallsyms tables)")
    _every_environment_options(coverage, pm, "the report")
    return parser


def _every_environment_options(command: argparse.ArgumentParser, pm, what: str) -> None:
    """The options of the commands that run one kernel under several environments at once."""
    command.add_argument("kernel", nargs="?", help="kernel image (default: the embedded probe kernel)")
    command.add_argument("--envs", help="comma-separated environments (default: every installed one that "
                                        "accepts the kernel)")
    command.add_argument("--jobs", type=int, help="runs at once (default: the CPU count)")
    _config_options(command)
    command.add_argument("--json", metavar="FILE", help=f"write {what} as JSON to FILE")
    _plugin_options(command, pm)


def _plugin_options(command: argparse.ArgumentParser, pm) -> None:
    """Let every plugin add its options to ``command`` (``hvsim_add_options``) and remember which
    environments own each: ``args.plugin_options`` maps dest -> (option, owning environments (none
    for an observer's option: it applies to every run), default)."""
    owners: dict[str, tuple[str, list[str], object]] = {}
    envs_of: dict[int, list[str]] = {}
    for name, (_, plugin) in sorted(environments(pm).items()):
        envs_of.setdefault(id(plugin), []).append(name)
    for impl in pm.hook.hvsim_add_options.get_hookimpls():
        before = len(command._actions)
        envs = envs_of.get(id(impl.plugin), [])
        impl.function(parser=_SharedOptions(command, owners, envs))
        for action in command._actions[before:]:
            flag = max(action.option_strings, key=len) if action.option_strings else action.dest
            owners[action.dest] = (flag, envs, action.default)
    command.set_defaults(plugin_options=owners)


class _SharedOptions:
    """The parser as one plugin sees it: an option another environment's plugin already declared
    (``--xen-debug`` of xen_pv and xen_pvh) is not declared twice; the plugin's environments are added
    to its owners instead."""

    def __init__(self, parser, owners, envs):
        self._parser, self._owners, self._envs = parser, owners, envs

    def add_argument(self, *flags, **kwargs):
        known = self._parser._option_string_actions
        if flags and all(flag in known for flag in flags):
            action = known[flags[0]]
            flag, envs, default = self._owners[action.dest]
            self._owners[action.dest] = (flag, envs + [e for e in self._envs if e not in envs], default)
            return action
        return self._parser.add_argument(*flags, **kwargs)

    def __getattr__(self, name):
        return getattr(self._parser, name)


def _refuse_foreign_options(args, envs: list[str]) -> None:
    """A usage error for an environment's option given when none of ``envs`` owns it (``--dom0``
    under bare_metal), rather than ignoring it."""
    for dest, (flag, owners, default) in args.plugin_options.items():
        if owners and not set(owners) & set(envs) and getattr(args, dest, default) != default:
            raise UsageError(f"{flag} is an option of the {' and '.join(owners)} environment"
                             f"{'s' if len(owners) > 1 else ''}, not of "
                             + (envs[0] if len(envs) == 1 else f"any of {', '.join(envs)}"))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        engine = f"Unicorn {version('unicorn')}"
    except PackageNotFoundError:
        engine = "Unicorn not installed"
    return f"hvsim {__version__} ({engine}; Python {sys.version.split()[0]})"


def _config_options(run: argparse.ArgumentParser) -> None:
    """The MachineConfig options, shared by every command that runs a kernel."""
    run.add_argument("--cmdline", default="", help="kernel command line")
    run.add_argument("--memory", default="512M", help="RAM size, e.g. 512M, 6G (default 512M)")
    run.add_argument("--initrd", help="initial ramdisk file")
    run.add_argument("--init", action="store_true", help="boot hvsim's own /init (the embedded init.cpio as the "
                                                         "initrd): it prints what userspace sees and powers off")
    run.add_argument("--smp", type=int, default=1, help="number of vCPUs described to the guest (default 1)")
    run.add_argument("--no-acpi", action="store_true", help="no ACPI tables")
    run.add_argument("--timeout", type=float, default=60.0, help="wall-clock budget in seconds (default 60; 0 = none)")
    run.add_argument("--max-instructions", type=int, help="exact instruction budget (slows emulation ~2x)")
    run.add_argument("--keys", default="", help="keys typed on the machine's keyboard (EFI's ConIn takes them "
                                                "until ExitBootServices): characters, {enter}, {esc}, {up}, {f1}...")
    run.add_argument("--keys-file", help="read the keys from this file (same syntax), after --keys")
    run.add_argument("--vga-png", metavar="FILE", help="save the VGA text screen as this PNG when the run ends")
    run.add_argument("--tlb", choices=("native", "engine"), default="native",
                     help="who fills the engine's TLB: native (hvsim's page walker, the default: stores to "
                          "identity-mapped code run at full speed) or engine (Unicorn's own walker); the guest "
                          "sees the same either way")
    run.add_argument("--quiet", action="store_true", help="no live progress line on stderr (it is shown only when "
                                                          "stderr is a terminal, after 2 s)")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except HvsimError as exc:
        print(f"hvsim: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("hvsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:      # `hvsim envs --json | head`: the reader left; say nothing, as cat would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13      # SIGPIPE's shell status
    except Exception as exc:  # noqa: BLE001 - the user gets one line; HVSIM_DEBUG=1 re-raises
        if os.environ.get("HVSIM_DEBUG"):
            raise
        print(f"hvsim: internal error: {type(exc).__name__}: {exc} (set HVSIM_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return INTERNAL_ERROR


def _main(argv: list[str] | None) -> int:
    pm = get_plugin_manager()
    args = _parser(pm).parse_args(argv)
    if hasattr(args, "plugin_options"):
        installed = environments(pm)
        chosen = [args.env] if args.command == "run" else _env_list(args.envs) or list(installed)
        if all(env in installed for env in chosen):        # unknown names get their own error later
            _refuse_foreign_options(args, chosen)
        del args.plugin_options
    if args.command == "envs":
        return _envs(pm, args)
    if args.command == "inspect":
        return _inspect(pm, args)
    if args.command == "extract":
        return _extract(args)
    if args.command == "matrix":
        return _matrix(pm, args)
    if args.command == "coverage":
        return _coverage(pm, args)
    return _run(pm, args)


def _envs(pm, args) -> int:
    envs = environments(pm)
    if args.json:
        _write_json(args.json, json.dumps({name: {"summary": env.summary, "plugin": pm.get_name(plugin)}
                                           for name, (env, plugin) in sorted(envs.items())}, indent=2))
    else:
        for name, (env, _) in sorted(envs.items()):
            print(f"{name:14} {env.summary}")
    return 0


def _inspect(pm, args) -> int:
    from .api import inspect

    report = inspect(args.kernel, pm)
    if args.json:
        _write_json(args.json, json.dumps(report, indent=2, default=str))
        return 0
    print(f"{report.get('name', args.kernel)}: {report['format']}, {report['size']} bytes")
    bz = report.get("bzimage") or {}
    if bz:
        print(f"  boot protocol {bz['protocol']}, xloadflags {' '.join(bz.get('xloadflags') or []) or '-'}")
        if bz.get("kernel_version"):
            print(f"  version: {bz['kernel_version']}")
        payload = bz.get("payload") or {}
        if payload.get("compression"):
            print(f"  payload: {payload['compression']}, {payload['length']} bytes")
    if report.get("payload_error"):
        print(f"  payload: {report['payload_error']}")
    print("boot entries:")
    for entry in report.get("entries", []):
        print(f"  {entry['kind']:15} {entry['address']:#x}  {entry['source']}")
    print("environments:")
    for name, verdict in report["environments"].items():
        text = f"accepts ({verdict['entry']})" if verdict["accepted"] else f"refuses: {verdict['reason']}"
        print(f"  {name:14} {text}")
    return 0


def _extract(args) -> int:
    from .image import load_image

    image = load_image(args.kernel)
    if image.bzimage is None:
        raise UsageError(f"{args.kernel}: not a bzImage, there is no payload to extract")
    elf = image.payload_elf()
    try:
        Path(args.output).write_bytes(elf.data)
    except OSError as exc:
        raise UsageError(f"{args.output}: {exc.strerror or exc}") from None
    print(f"hvsim: wrote {len(elf.data)} bytes of ELF vmlinux to {args.output}", file=sys.stderr)
    return 0


def _config(args) -> MachineConfig:
    initrd = args.initrd
    if args.init:
        if initrd is not None:
            raise UsageError("--init and --initrd both name the initrd: give one of them")
        from .kernels import init_cpio_path

        initrd = init_cpio_path()
    keys = args.keys
    if args.keys_file:
        try:
            keys += Path(args.keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--keys-file {args.keys_file}: {exc.strerror or exc}") from None
    if args.vga_png and not Path(args.vga_png).resolve().parent.is_dir():
        raise UsageError(f"--vga-png {args.vga_png}: no such directory")
    return MachineConfig(
        memory=args.memory, cmdline=args.cmdline, initrd=initrd, smp=args.smp, acpi=not args.no_acpi,
        timeout=args.timeout or None, max_instructions=args.max_instructions, keys=keys, vga_png=args.vga_png,
        tlb=args.tlb,
    )


def _write_json(path: str, text: str) -> None:
    """Write ``text`` to ``path``; ``-`` is stdout."""
    if path == "-":
        print(text)
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise UsageError(f"--json {path}: {exc.strerror or exc}") from None


def _env_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError("--envs: name at least one environment")
    return names


def _matrix(pm, args) -> int:
    from .matrix import run_matrix
    from .matrix_table import render

    lines = _progress_lines(args, _env_list(args.envs) or sorted(environments(pm)))
    try:
        matrix = run_matrix(args.kernel, _config(args), _env_list(args.envs), options=vars(args), pm=pm,
                            jobs=args.jobs, progress=lines.update if lines else None)
    finally:
        if lines:
            lines.clear()
    if not matrix.columns:
        raise UsageError(f"{matrix.kernel}: no environment accepts it: "
                         + "; ".join(f"{env}: {why}" for env, why in matrix.refused.items()))
    sys.stdout.write(render(matrix, only_differences=args.only_differences))
    if args.json:
        _write_json(args.json, json.dumps(matrix.to_dict(), indent=2))
    if matrix.reference_failure is not None:
        print(f"hvsim: matrix: the reference {matrix.reference} did not boot to a comparable record: "
              f"{matrix.reference_failure}; nothing was compared [exit {matrix.exit_status}]", file=sys.stderr)
    else:
        print(f"hvsim: matrix of {_plural(len(matrix.columns), 'environment')}: "
              f"{_plural(len(matrix.undeclared), 'undeclared difference')} [exit {matrix.exit_status}]",
              file=sys.stderr)
    return matrix.exit_status


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _progress_lines(args, names: list[str]):
    """A ``ProgressLine`` on stderr when it is a terminal and ``--quiet`` is not given, else None."""
    if args.quiet or not _isatty(sys.stderr):
        return None
    import shutil

    from .progress import ProgressLine

    return ProgressLine(sys.stderr, names, width=shutil.get_terminal_size().columns)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _coverage(pm, args) -> int:
    from .coverage import render, run_coverage

    report = run_coverage(args.kernel, _config(args), _env_list(args.envs), system_map=args.system_map,
                          options=vars(args), pm=pm, jobs=args.jobs)
    if not report.columns:
        raise UsageError(f"{report.kernel}: no environment accepts it: "
                         + "; ".join(f"{env}: {why}" for env, why in report.refused.items()))
    for warning in report.warnings:
        print(f"hvsim: warning: {warning}", file=sys.stderr)
    sys.stdout.write(render(report))
    if args.json:
        _write_json(args.json, json.dumps(report.to_dict(), indent=2))
    failed = [env for env, column in report.columns.items() if not column["ok"]]
    return 1 if failed else 0


def _run(pm, args) -> int:
    from .api import Run

    config = _config(args)
    json_file = _open_json(args.json) if args.json else None     # a bad path fails before the guest runs
    written = False
    trace_file = None
    try:
        from .trace import TraceFilter

        trace_filter = TraceFilter.parse(args.trace_filter)
        if args.trace_file:
            trace_file = _open_trace(args.trace_file)      # like --json: a bad path fails before the run
        trace = args.trace or (args.trace_filter is not None and trace_file is None)
        lines = _progress_lines(args, [args.env])
        prepared = Run(args.env, args.kernel, config, options=vars(args), pm=pm,
                       observers=[_ConsoleStreamer(trace, lines, trace_file, trace_filter)])
        # a bad --system-map fails before the run; the image's own symbols are read only for a stop line
        symbols = _symbols(prepared.image, args.system_map) if args.system_map else None
        with _stop_signals(prepared.loop.interrupt):       # held until the result is written
            try:
                result = _execute_interruptibly(prepared, lines)
            finally:
                if lines is not None:
                    lines.clear()
            state = result.state
            where = ""
            if state and result.exit_status:
                rip = state.registers.get("rip", 0)
                if symbols is None:
                    symbols = _symbols(prepared.image, None)
                function = symbols.resolve(rip) if symbols is not None else None
                where = f" at {rip:#x}{f' in {function}' if function else ''}: {state.instruction}"
            stop_line = (f"hvsim: {args.env}: {_describe_stop(result.stop)}{where} "
                         f"[{result.stats.wall_seconds:.2f} s, exit {result.exit_status}]")
            try:
                if json_file is not None:
                    try:
                        json_file.write(result.to_json(indent=2))
                        json_file.flush()
                        written = True
                    except OSError as exc:
                        raise UsageError(f"--json {args.json}: {exc.strerror or exc}") from None
            finally:
                print(stop_line, file=sys.stderr)      # the run's outcome is told even if the JSON is not
    finally:
        if json_file is not None:
            _close_json(json_file, keep=written)
        if trace_file is not None:
            try:
                trace_file.close()
            except OSError as exc:
                print(f"hvsim: --trace-file {args.trace_file}: {exc.strerror or exc}", file=sys.stderr)
    return result.exit_status


def _open_trace(path: str):
    try:
        return open(path, "w", encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"--trace-file {path}: {exc.strerror or exc}") from None


def _describe_stop(stop) -> str:
    """The stop's text; a bad access also says what a PC has at that address (hvsim.pc_regions)."""
    from .pc_regions import explain

    text = stop.describe()
    what = explain(stop.detail) if stop.kind == "bad-access" else None
    return f"{text}; {what}" if what else text


def _symbols(image, system_map: str | None):
    """The ``SymbolTable`` naming the guest's functions in the stop line: ``--system-map``, else the
    image's ELF .symtab (a bzImage's payload's), else its kallsyms tables (Debian's vmlinux), else
    None."""
    from .symbols import SymbolTable, image_elf

    try:
        elf = image_elf(image)
    except HvsimError:               # a payload that does not decompress names nothing
        elf = None
    if system_map:
        table = SymbolTable.from_system_map(system_map, elf)
        if table.mismatch:
            print(f"hvsim: warning: --system-map {system_map} does not match {image.name}: {table.mismatch}",
                  file=sys.stderr)
        return table
    return SymbolTable.from_image_elf(elf, str(image.name)) if elf is not None else None


def _open_json(path: str):
    """``--json FILE`` opened for writing now, so that a path it cannot write is a usage error
    before the run rather than a result lost after it.  A file this creates is removed again if no
    result is written into it (the image refused, an error before the run)."""
    existed = os.path.lexists(path)
    try:
        handle = open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--json {path}: {exc.strerror or exc}") from None
    handle.created = not existed
    return handle


def _close_json(handle, keep: bool) -> None:
    try:
        handle.close()
        if not keep and handle.created:
            os.unlink(handle.name)
    except OSError:
        pass


# Signals that end a run the way Ctrl-C does: the run stops at the next block boundary and its
# result (the JSON, the stop line) is still written.  Every further one asks again; none kills.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_signals(stop):
    """SIGINT and SIGTERM call ``stop`` (instead of raising or killing) until the block ends."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, lambda signum, frame: stop())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _execute_interruptibly(prepared, lines=None):
    """Run the engine in a worker thread: the main thread stays free to take SIGINT and SIGTERM (a
    signal handler cannot run while the main thread is inside the engine) and stops the run
    through the native stop flag, so the result is still recorded.  While it waits, the main
    thread samples the run for ``lines`` (a ``ProgressLine``), ten times a second."""
    from .progress import sample

    started = __import__("time").monotonic()
    if lines is not None:
        lines.started = started          # shown after 2 s of the run, the wall its samples give
    outcome: list = []
    done = threading.Event()

    def work():
        try:
            outcome.append(prepared.execute())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome.append(exc)
        finally:
            done.set()

    # Wait on an Event, not Thread.join: an interrupted join can leave is_alive() false early.
    threading.Thread(target=work, name="hvsim-engine", daemon=True).start()
    while not done.is_set():
        try:
            done.wait(0.1)
            if lines is not None and not done.is_set():
                lines.update(prepared.env, sample(prepared, started))
        except KeyboardInterrupt:       # SIGINT where the default handler is still in place
            prepared.loop.interrupt()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
