"""The Python API: inspect an image, run a kernel under an environment.

    from hvsim import MachineConfig, run
    result = run("bare_metal", "vmlinuz", MachineConfig(memory="1G", cmdline="console=ttyS0"))
    result.stop.kind, result.console()
"""

from __future__ import annotations

import struct
import traceback
from pathlib import Path
from typing import Any, Iterable

import pluggy

from .core.config import MachineConfig
from .core.errors import UnsupportedImageError
from .core.machine import Machine
from .core.plugins import environments, get_plugin_manager, run_manager
from .core.result import RunResult, StopReason
from .core.runloop import RunLoop, capture_state, run_stats
from .image import KernelImage, load_image

HYPERVISOR_LEAF = 0x4000_0000


def default_kernel(env: str | None = None, pm: pluggy.PluginManager | None = None) -> Path:
    """The embedded probe kernel run when no kernel is named: the build ``env``'s ``Environment``
    record names (``default_image``), the bzImage when ``env`` is None or not installed."""
    from .kernels import probe_path

    if env is None:
        return probe_path("bzImage")
    record = environments(pm or get_plugin_manager()).get(env)
    return probe_path(record[0].default_image if record is not None else "bzImage")


def open_image(kernel: "str | Path | bytes | KernelImage | None", env: str | None = None,
               pm: pluggy.PluginManager | None = None) -> KernelImage:
    """``kernel`` loaded; None is the embedded probe as ``env`` boots it (``default_kernel``)."""
    if isinstance(kernel, KernelImage):
        return kernel
    return load_image(default_kernel(env, pm) if kernel is None else kernel)


def inspect(kernel: "str | Path | bytes | KernelImage", pm: pluggy.PluginManager | None = None) -> dict:
    """What the image offers and which installed environments accept it (JSON-able)."""
    pm = pm or get_plugin_manager()
    image = open_image(kernel)
    report = image.describe()
    verdicts = {}
    for name, (env, _) in sorted(environments(pm).items()):
        answer = run_manager(pm, name).hook.hvsim_accepts(env=name, image=image)
        verdicts[name] = {
            "accepted": bool(answer and answer.accepted),
            "entry": answer.entry if answer else "",
            "reason": (answer.reason if answer else "the plugin gave no answer"),
        }
    report["environments"] = verdicts
    return report


class Run:
    """One prepared run: ``machine`` is set up and ``execute()`` runs it to a ``RunResult``."""

    def __init__(self, env: str, kernel: "str | Path | bytes | KernelImage | None", config: MachineConfig,
                 *, options: dict[str, Any] | None = None, pm: pluggy.PluginManager | None = None,
                 observers: Iterable[object] = ()):
        self.env = env
        self.config = config
        pm = pm or get_plugin_manager()
        self.image = open_image(kernel, env, pm)
        self.pm = run_manager(pm, env)
        for observer in observers:
            self.pm.register(observer)
        answer = self.pm.hook.hvsim_accepts(env=env, image=self.image)
        if not answer or not answer.accepted:
            reason = answer.reason if answer else "the plugin gave no answer"
            raise UnsupportedImageError(f"{self.image.name}: environment {env!r} cannot boot it: {reason}")
        self.machine = Machine(config, self.pm)
        self.entry = self.pm.hook.hvsim_setup(machine=self.machine, image=self.image, config=config,
                                              options=dict(options or {})) or answer.entry
        self.loop = RunLoop(self.machine)

    def execute(self) -> RunResult:
        m = self.machine
        stop, wall = self.loop.run()
        result = RunResult(
            environment=self.env,
            image=str(self.image.name),
            entry=self.entry,
            config=self.config.to_dict(),
            stop=stop or StopReason("host-error", detail="no stop reason recorded"),
            state=capture_state(m),
            events=tuple(m.events),
            stats=run_stats(self.loop, wall),
        )
        result.extra["entry_mode"] = m.entry_state.mode if m.entry_state is not None else None
        result.extra["hypervisor_cpuid"] = _hypervisor_leaf(m)
        if m.unclaimed_ports:
            result.extra["unclaimed_ports"] = {f"{p:#x}": n for p, n in sorted(m.unclaimed_ports.items())}
        if m.host_traceback:
            result.extra["host_traceback"] = m.host_traceback
        if self.config.vga_png:
            _save_vga_png(m, self.config.vga_png, result.extra)
        for impl in self.pm.hook.hvsim_finish.get_hookimpls():
            try:
                extra = impl.function(machine=m, result=result)
            except Exception:  # noqa: BLE001 - one observer's failure must not lose the run
                result.extra.setdefault("observer_errors", {})[impl.plugin_name] = traceback.format_exc()
                continue
            if extra is not None:
                result.extra[impl.plugin_name] = extra
        return result


def _save_vga_png(m: Machine, path, extra: dict) -> None:
    vga = m.chipset.vga if m.chipset is not None else None
    if vga is None:
        extra["vga_png_error"] = f"{path}: this machine has no VGA text screen"
        return
    try:
        Path(path).write_bytes(vga.png())
        extra["vga_png"] = str(path)
    except OSError as exc:
        extra["vga_png_error"] = f"{path}: {exc.strerror or exc}"


def _hypervisor_leaf(m: Machine) -> dict | None:
    """CPUID leaf 0x40000000 as the environment answers it: the hypervisor signature the guest
    would read (EBX, ECX, EDX) and the highest hypervisor leaf (EAX)."""
    try:
        eax, ebx, ecx, edx = m.guest_cpuid(HYPERVISOR_LEAF)
    except Exception:  # noqa: BLE001 - a plugin failing here must not lose the run's result
        return None
    return {"max_leaf": eax, "signature": struct.pack("<3I", ebx, ecx, edx).hex()}


def run(env: str, kernel: "str | Path | bytes | KernelImage | None" = None, config: MachineConfig | None = None,
        **kwargs: Any) -> RunResult:
    """Run ``kernel`` (default: the embedded probe) under environment ``env`` and return the result."""
    return Run(env, kernel, config or MachineConfig(), **kwargs).execute()
