"""The conformance matrix: one kernel, one ``MachineConfig``, every environment that accepts it, each
run in its own process; the canonical records (``hvsim.semantics``) compared field by field.

    from hvsim.matrix import run_matrix
    matrix = run_matrix()                      # the embedded probe under every installed environment
                                               # (the build each environment names as its default)
    matrix.undeclared                          # differences no plugin declared inherent
    matrix.to_dict()                           # JSON-able

Every environment is compared with a reference (``bare_metal`` when it is in the matrix, else the
first environment by name).  A field that differs is *inherent* when the environment or the
reference declared it through ``hvsim_inherent_differences`` (with a reason); otherwise it is
*undeclared*.  A run that fails (a plugin error, a crashed process) or does not finish (the wall-clock
or instruction budget ran out, a host error, an interrupt: ``UNFINISHED_STOPS``) is a failed column
(``ok: false``, ``error`` says why; an unfinished run keeps its record) and an undeclared difference
in the field ``run``; it never raises.

Nothing is compared with a reference that did not boot to a comparable record (it failed, did not
finish, or printed nothing hvsim can read): ``Matrix.reference_failure`` says why, the other
columns are shown but not compared, and ``exit_status`` is ``REFERENCE_FAILED``.

Runs go to child processes (``fork`` where the platform has it, so the plugin manager and an
already-decompressed image are inherited, not pickled); at most ``jobs`` run at once.  A child
sends its column back as a JSON-able dict through a pipe; a child that dies without sending
becomes a failed column with its exit code.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

import attrs
import pluggy

from .core.config import MachineConfig
from .core.errors import HvsimError, PluginError, UsageError
from .core.plugin_types import InherentDifference
from .core.plugins import environments, get_plugin_manager, run_manager
from .image import KernelImage
from .semantics import COMPARED_FIELDS, semantics_of

REFERENCE = "bare_metal"
# Stops that end a run before the guest did (hvsim.core.result): their records are cut short at a
# point that depends on the host's speed or the budget, so they are not compared.
UNFINISHED_STOPS = {
    "timeout": "did not finish: the wall-clock budget (--timeout) ran out",
    "budget": "did not finish: the instruction budget (--max-instructions) ran out",
    "interrupted": "did not finish: interrupted",
    "host-error": "host error",
}
# The matrix's exit status when the reference column has no comparable record (1: undeclared differences).
REFERENCE_FAILED = 6
SCHEMA_VERSION = 2
Kernel = "str | Path | bytes | KernelImage | None"


@attrs.frozen
class Difference:
    """One field in which ``environment`` differs from the reference."""

    field: str
    environment: str
    reference_value: Any
    value: Any
    inherent: bool
    reason: str = ""           # the declared reason when inherent; why the column failed for "run"

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Matrix:
    kernel: str
    config: dict
    reference: str | None
    columns: dict[str, dict]                         # environment -> column (see run_columns)
    declared: dict[str, list[InherentDifference]]    # environment -> what its plugin declared
    refused: dict[str, str]                          # environment -> why it does not boot the kernel
    differences: list[Difference]
    reference_failure: str | None = None             # why nothing was compared (None: it was)

    @property
    def undeclared(self) -> list[Difference]:
        return [d for d in self.differences if not d.inherent]

    @property
    def exit_status(self) -> int:
        """``REFERENCE_FAILED`` when the reference has no comparable record; else 0 when every
        difference is declared inherent, 1 otherwise."""
        if self.reference_failure is not None:
            return REFERENCE_FAILED
        return 1 if self.undeclared else 0

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        return {
            "schema_version": SCHEMA_VERSION,
            "hvsim_version": __version__,
            "kernel": self.kernel,
            "config": self.config,
            "reference": self.reference,
            "reference_failure": self.reference_failure,
            "environments": self.columns,
            "declared": {env: [attrs.asdict(d) for d in decl] for env, decl in self.declared.items()},
            "refused": self.refused,
            "differences": [d.to_dict() for d in self.differences],
            "undeclared": len(self.undeclared),
            "exit_status": self.exit_status,
        }


def run_matrix(kernel: Kernel = None, config: MachineConfig | None = None, envs: Iterable[str] | None = None,
               *, options: dict[str, Any] | None = None, pm: pluggy.PluginManager | None = None,
               jobs: int | None = None, progress: Callable[[str, dict], None] | None = None) -> Matrix:
    """Run ``kernel`` (default: the embedded probe) under ``envs`` (default: every installed
    environment that accepts it) and compare what it observed.  ``progress(env, sample)``, when
    given, is called in this process with each column's ``hvsim.progress.sample`` about twice a
    second while it runs."""
    from .api import open_image

    pm = pm or get_plugin_manager()
    config = config or MachineConfig()
    if kernel is None:
        images, refused = probe_for_each(pm, envs)
        chosen, name = sorted(images), "the embedded probe (" + ", ".join(
            f"{env}: {Path(str(images[env].name)).name}" for env in sorted(images)) + ")"
    else:
        image = open_image(kernel)
        chosen, refused = accepting_environments(image, pm, envs)
        images, name = {env: image for env in chosen}, str(image.name)
    declared = {env: inherent_differences(pm, env) for env in chosen}
    columns = {env: mark_unfinished(column)
               for env, column in run_columns(chosen, images, config, options=options, pm=pm, jobs=jobs,
                                              progress=progress).items()}
    reference = REFERENCE if REFERENCE in columns else (min(columns) if columns else None)
    failure = None if reference is None else not_comparable(columns[reference])
    return Matrix(kernel=name, config=config.to_dict(), reference=reference, columns=columns,
                  declared=declared, refused=refused, differences=compare(columns, reference, declared),
                  reference_failure=failure)


def mark_unfinished(column: dict) -> dict:
    """``column`` with ``ok: false`` and the reason in ``error`` when its run stopped before the
    guest did (``UNFINISHED_STOPS``); its record is kept for reading, not compared."""
    if not column["ok"] or column["semantics"] is None:
        return column
    kind = column["semantics"]["stop"].split(" ")[0]
    if kind not in UNFINISHED_STOPS:
        return column
    detail = column["semantics"]["stop_detail"]
    return {**column, "ok": False, "error": UNFINISHED_STOPS[kind] + (f" ({detail})" if detail else "")}


def not_comparable(column: dict) -> str | None:
    """Why ``column`` cannot serve as the reference, or None when it can: its run failed or did not
    finish, or the guest printed nothing at all (no probe report, no Linux console, no text)."""
    if not column["ok"]:
        return column["error"] or "the run failed"
    record = column["semantics"]
    if record["kernel"] == "other" and not record["console"]:
        return f"the guest printed nothing comparable (no console output; it stopped: {record['stop']})"
    return None


def probe_for_each(pm: pluggy.PluginManager, envs: Iterable[str] | None = None
                   ) -> tuple[dict[str, KernelImage], dict[str, str]]:
    """The embedded probe as each environment boots it: the build its ``Environment`` record names
    (``default_image``, the same rule as ``hvsim run`` without a kernel); environments that refuse
    it are returned with their reason."""
    from .api import open_image

    images: dict[str, KernelImage] = {}
    refused: dict[str, str] = {}
    names = sorted(environments(pm)) if envs is None else list(envs)
    for env in names:
        image = open_image(None, env, pm)
        chosen, why = accepting_environments(image, pm, [env])
        if chosen:
            images[env] = image
        refused.update(why)
    return images, refused


def accepting_environments(image: KernelImage, pm: pluggy.PluginManager,
                           envs: Iterable[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(environments to run, in name order; {environment: why it refuses}) for ``image``.  Named
    environments must be installed (``UsageError``); refusing ones are reported, not run."""
    installed = environments(pm)
    names = sorted(installed) if envs is None else list(dict.fromkeys(envs))
    unknown = [name for name in names if name not in installed]
    if unknown:
        raise UsageError(f"unknown environment {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(sorted(installed)) or 'none installed'})")
    chosen, refused = [], {}
    for name in names:
        answer = run_manager(pm, name).hook.hvsim_accepts(env=name, image=image)
        if answer is not None and answer.accepted:
            chosen.append(name)
        else:
            refused[name] = answer.reason if answer is not None else "the plugin gave no answer"
    return sorted(chosen), refused


def inherent_differences(pm: pluggy.PluginManager, env: str) -> list[InherentDifference]:
    """What the plugin of ``env`` declares (``hvsim_inherent_differences``), checked."""
    answer = run_manager(pm, env).hook.hvsim_inherent_differences(env=env) or []
    plugin = pm.get_name(environments(pm)[env][1])
    out = []
    for item in answer:
        if not isinstance(item, InherentDifference):
            raise PluginError(f"plugin {plugin}: hvsim_inherent_differences({env!r}) returned {item!r}, "
                              "not an InherentDifference")
        if item.field not in COMPARED_FIELDS:
            raise PluginError(f"plugin {plugin}: environment {env!r} declares an inherent difference in "
                              f"{item.field!r}, which is not a field of the record "
                              f"({', '.join(COMPARED_FIELDS)})")
        if not item.reason.strip() or "\n" in item.reason.strip():
            raise PluginError(f"plugin {plugin}: the inherent difference {item.field!r} of {env!r} needs "
                              "a one-line reason")
        out.append(item)
    return out


def compare(columns: dict[str, dict], reference: str | None,
            declared: dict[str, list[InherentDifference]]) -> list[Difference]:
    """Every field in which a column differs from the reference column."""
    if reference is None:
        return []
    ref = columns[reference]
    out = []
    failure = not_comparable(ref)
    if failure is not None:
        out.append(Difference("run", reference, None, None, False, failure))
    for env, column in sorted(columns.items()):
        if env == reference:
            continue
        if not column["ok"]:
            out.append(Difference("run", env, None, None, False, column["error"]))
            continue
        if failure is not None:
            continue
        reasons = {d.field: d.reason for d in declared.get(reference, [])}
        reasons.update({d.field: d.reason for d in declared.get(env, [])})
        for name in COMPARED_FIELDS:
            mine, theirs = column["semantics"][name], ref["semantics"][name]
            if mine != theirs:
                out.append(Difference(name, env, theirs, mine, name in reasons, reasons.get(name, "")))
    return out


# -- running columns in child processes ------------------------------------------------------------

def run_columns(envs: list[str], kernel: "Kernel | dict[str, KernelImage]", config: MachineConfig, *, options: dict[str, Any] | None = None,
                pm: pluggy.PluginManager | None = None, jobs: int | None = None,
                observe: Callable[[Any], Callable[[Any], dict]] | None = None,
                progress: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """Run ``kernel`` (or ``kernel[env]`` when it is a dict) under each of ``envs`` in its own
    process, at most ``jobs`` at once (default: the CPU count), and return environment -> column::

        {"environment", "ok", "error", "entry", "exit_status", "wall_seconds", "semantics"}

    ``observe(prepared_run)``, when given, is called in the child before the run starts and returns a
    function of the ``RunResult`` whose dict is stored in the column under ``"observed"`` (coverage
    uses it to attach its block recorder).  ``progress(env, sample)``, when given, receives each
    running column's ``hvsim.progress.sample`` every ``PROGRESS_INTERVAL`` seconds, sent by a
    thread in the child beside the pipe's final column."""
    jobs = max(1, jobs or os.cpu_count() or 1)
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    pending = list(envs)
    running: dict[Any, tuple[str, Any]] = {}
    columns: dict[str, dict] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                env = pending.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                image = kernel[env] if isinstance(kernel, dict) else kernel
                process = context.Process(target=_child, name=f"hvsim-matrix-{env}", daemon=True,
                                          args=(sender, env, image, config, options, pm, observe,
                                                progress is not None))
                process.start()
                sender.close()
                running[receiver] = (env, process)
            for receiver in multiprocessing.connection.wait(list(running)):
                env, process = running[receiver]
                try:
                    kind, payload = receiver.recv()
                    if kind == "progress":
                        progress(env, payload)
                        continue
                    columns[env] = payload
                except (EOFError, OSError):
                    process.join()
                    columns[env] = _failed(env, f"the run's process died (exit code {process.exitcode})")
                del running[receiver]
                receiver.close()
                process.join()
    finally:
        for receiver, (_, process) in running.items():
            process.kill()
            process.join()
            receiver.close()
    return dict(sorted(columns.items()))


def _failed(env: str, error: str, **extra: Any) -> dict:
    return {"environment": env, "ok": False, "error": error, "entry": None, "exit_status": None,
            "wall_seconds": None, "semantics": None, **extra}


# How often a column's child samples its run for the parent's progress lines, in seconds.
PROGRESS_INTERVAL = 0.5


def _child(sender, env, kernel, config, options, pm, observe, send_progress) -> None:
    lock = threading.Lock()            # the sampling thread and this one share the pipe

    def send(kind: str, payload: dict) -> None:
        with lock:
            sender.send((kind, payload))

    report = (lambda sample: send("progress", sample)) if send_progress else None
    try:
        column = run_column(env, kernel, config, options=options, pm=pm, observe=observe, report=report)
    except BaseException as exc:  # noqa: BLE001 - whatever happens, the parent gets a failed column
        detail = str(exc) if isinstance(exc, HvsimError) else f"{type(exc).__name__}: {exc}"
        column = _failed(env, detail, traceback=traceback.format_exc())
    send("column", column)
    sender.close()


def run_column(env: str, kernel: Kernel, config: MachineConfig, *, options: dict[str, Any] | None = None,
               pm: pluggy.PluginManager | None = None, observe=None,
               report: Callable[[dict], None] | None = None) -> dict:
    """One column, in this process (``run_columns`` calls it in a child).  ``report(sample)``, when
    given, is called from a thread every ``PROGRESS_INTERVAL`` seconds while the run executes."""
    from .api import Run
    from .progress import sample

    prepared = Run(env, kernel, config, options=options, pm=pm)
    finish = observe(prepared) if observe is not None else None
    done = threading.Event()
    if report is not None:
        started = time.monotonic()

        def sampler() -> None:
            while not done.wait(PROGRESS_INTERVAL):
                try:
                    report(sample(prepared, started))
                except (OSError, ValueError):       # the parent went away: the run goes on
                    return

        threading.Thread(target=sampler, name=f"hvsim-progress-{env}", daemon=True).start()
    try:
        result = prepared.execute()
    finally:
        done.set()
    column = {
        "environment": env,
        "ok": True,
        "error": None,
        "entry": result.entry,
        "exit_status": result.exit_status,
        "wall_seconds": result.stats.wall_seconds,
        "semantics": semantics_of(result).to_dict(),
    }
    if "host_traceback" in result.extra:
        column["host_traceback"] = result.extra["host_traceback"]
    if finish is not None:
        column["observed"] = finish(result)
    return column
