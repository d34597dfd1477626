"""The plugin contract: every hook hvsim calls, who calls it, when, and what its result means.

A plugin is a module (or object) with functions decorated ``@hvsim.hookimpl`` named like the specs
below, registered through the ``hvsim`` entry-point group::

    [project.entry-points.hvsim]
    my_env = "my_package.plugin"

Two kinds of plugin exist.  An **environment plugin** returns one or more ``Environment`` records
from ``hvsim_environments``; it boots images under its ABI.  Any other plugin is an **observer**: it
is part of every run (tracing, coverage, extra devices) and typically implements only
``hvsim_event`` and ``hvsim_finish``.

A run builds its own plugin manager holding the chosen environment's plugin and the observers, so an
environment never sees another environment's hooks.  Hooks marked *firstresult* stop at the first
plugin that returns something other than ``None``.

Hot-path rule: trap hooks run at guest exits (I/O, CPUID, invalid opcodes), never per instruction.
Handlers that run often (port devices) are attached to the machine's dispatch tables during
``hvsim_setup`` (``machine.ports.attach``), so the hot path is a dict lookup, not a hook fan-out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from ..image import KernelImage
    from .config import MachineConfig
    from .events import Event
    from .machine import Machine
    from .plugin_types import Acceptance, Environment, GuestException, InherentDifference, MsrAccess, PortAccess, Trap
    from .result import RunResult

hookspec = pluggy.HookspecMarker("hvsim")

# ---------------------------------------------------------------------------------------------
# Discovery: called on the manager holding every installed plugin (``hvsim envs``, ``inspect``).
# ---------------------------------------------------------------------------------------------


@hookspec
def hvsim_environments() -> "list[Environment]":
    """Announce the environments this plugin provides.

    Called once per manager, on every plugin.  Return a list of ``Environment(name, summary)``; an
    observer plugin returns an empty list or does not implement the hook.  ``Environment(...,
    default_image="efi")`` names the build of the embedded probe the environment boots when no
    kernel is given (``"bzImage"`` unless said; ``"elf"``, ``"efi"``); an unknown build is a
    ``PluginError``.  Names are unique across
    installed plugins: a duplicate makes plugin loading fail with a ``PluginError``.
    """


@hookspec(firstresult=True)
def hvsim_accepts(env: str, image: "KernelImage") -> "Acceptance | None":
    """Say whether environment ``env`` can boot ``image``, and through which entry.

    Called on the plugin that announced ``env`` only.  Return ``Acceptance.yes(entry, how)`` or
    ``Acceptance.no(reason)``; the reason is shown to the user by ``hvsim inspect`` and ``hvsim run``.
    Must not raise for a well-formed ``KernelImage``, and must be cheap: ``inspect`` asks every
    environment.
    """


@hookspec(firstresult=True)
def hvsim_inherent_differences(env: str) -> "list[InherentDifference] | None":
    """Declare where what a guest observes under ``env`` differs from a bare-metal PC, by its ABI.

    Called by ``hvsim matrix`` (and ``hvsim.matrix.run_matrix``) on the plugin that announced ``env``
    only, once per matrix, before any run.  Return a list of ``InherentDifference(field, reason)``:
    ``field`` names a field of the canonical record (``hvsim.semantics.COMPARED_FIELDS``: ``entry``,
    ``entry_mode``, ``cmdline``, ``memmap``, ``modules``, ``module_addresses``, ``rsdp``,
    ``acpi_tables``, ``cpus``, ``hypervisor``, ``console``, ``console_channels``, ``stop``,
    ``stop_detail``, ``calls``, and what userspace saw through hvsim's /init: ``userspace_kernel``,
    ``userspace_cmdline``, ``userspace_memmap``, ``userspace_iomem``, ``userspace_cpus``,
    ``clocksource``, ``clocksources``, ``clockevent``, ``userspace_hypervisor``, ``userspace_efi``,
    ``userspace_acpi_tables``, ``userspace_dmi``, ``userspace_boot_params``, ``userspace_consoles``,
    ``userspace_cpu_flags``, ``userspace_irqs``) and ``reason`` says in one line why the ABI makes it differ (Xen PV:
    ``rsdp`` "a PV domU has no ACPI"; EFI: ``memmap`` "boot-services and firmware-reserved ranges").
    Return ``[]`` when the environment is the baseline or differs in nothing; ``None`` is taken as
    ``[]``.  The matrix compares every environment with a reference (``bare_metal`` when present):
    a differing field is *inherent* when the environment or the reference declared it, otherwise it
    is an undeclared difference and ``hvsim matrix`` exits 1.  Declare only what every kernel must
    see differ; a field the kernel's own code makes differ (what it prints) is for the matrix to show.
    An unknown field name is a ``PluginError``.
    """


@hookspec
def hvsim_add_options(parser: "argparse.ArgumentParser") -> None:
    """Add command-line options for ``hvsim run``.

    Called on every installed plugin when the CLI builds its parser.  Prefix option names with the
    environment's name (``--xen-pvh-start-info-version``) unless the option is generic.  Parsed
    values reach ``hvsim_setup`` in ``options`` under argparse's ``dest`` names.
    """


# ---------------------------------------------------------------------------------------------
# Setup: called once per run on the run's manager, before the guest executes.
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def hvsim_setup(machine: "Machine", image: "KernelImage", config: "MachineConfig", options: "dict[str, Any]") -> str:
    """Build the guest's initial world under the environment's ABI.

    Called on the environment plugin of the run (the run's manager holds no other environment).
    Loads the image through ``machine.memory``, writes the boot-info structures, attaches the
    devices the environment has (``machine.attach_pc_devices``), and sets the entry CPU state
    (``machine.start`` with a ``hvsim.core.cpu.EntryState``).  Raise ``LoadError`` with a message naming what did not fit.
    Return a short description of the entry used (``"linux64 at 0x100200"``).
    """


# ---------------------------------------------------------------------------------------------
# Traps: called from the run loop when the guest leaves emulated execution.
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def hvsim_port_io(machine: "Machine", access: "PortAccess") -> "int | bool | None":
    """Answer an ``in``/``out`` to a port no attached device claims.

    Called by the run loop's port-I/O trap on the run's plugins, in the middle of the guest
    instruction; attached devices (``machine.ports``) are asked first and never reach this hook.
    For a read return the value (``size`` bytes); for a write return ``True`` when handled.  When no
    plugin answers, a read returns all ones (an absent ISA device) and a write is dropped; both are
    counted in the result's ``extra["unclaimed_ports"]``.
    """


@hookspec(firstresult=True)
def hvsim_cpuid(machine: "Machine", leaf: int, subleaf: int) -> "tuple[int, int, int, int] | None":
    """Override a CPUID leaf: return ``(eax, ebx, ecx, edx)``, or ``None`` for the emulated CPU's answer.

    Called on the run's plugins each time the guest executes ``cpuid``.  The answer the guest gets
    when no plugin overrides (the CPU model with SVM hidden and OSXSAVE following CR4) is
    ``machine.native_cpuid(leaf, subleaf)``; call it to change a few bits of it.
    """


@hookspec(firstresult=True)
def hvsim_msr(machine: "Machine", access: "MsrAccess") -> "int | bool | None":
    """Answer a guest ``rdmsr``/``wrmsr`` of an MSR the environment owns.

    Called on the run's plugins for every access to an MSR outside the architectural ranges
    (hypervisor MSRs such as 0x40000000 and 0x4b564d00 reach it without asking) and to the MSRs a
    plugin registered with ``machine.intercept_msr(index)`` in ``hvsim_setup``.  For a read return
    the 64-bit value; for a write return ``True`` when accepted.  ``None`` from every plugin means
    the MSR does not exist: the guest gets #GP(0) through its IDT, as on hardware.  The core
    advances RIP and records each access as a ``Call`` event (interface ``"msr"``).
    """


@hookspec(firstresult=True)
def hvsim_trap(machine: "Machine", trap: "Trap") -> "bool | None":
    """Handle a trapping instruction: ``syscall``, an invalid opcode (where ``vmcall``/``vmmcall``
    arrive), a software ``int N``, or ``hlt``.

    Called on the run's plugins when the guest executes one of them.  ``trap.rip`` is the
    instruction's address and ``trap.length`` its length.  Return ``True`` when
    the plugin emulated it: it must then set the guest registers, including RIP, as the instruction
    would leave them (``machine.set_rip``).  Return ``None`` for the architectural default: #UD
    delivered through the guest IDT for invalid opcodes and for ``syscall`` with EFER.SCE clear,
    ``int N`` delivered through gate N, and for ``hlt`` the end of the run (``halt``, or ``idle``
    with interrupts on).  For ``hlt``, RIP is already past the instruction; returning ``True``
    resumes the guest there (an environment that models waking events answers it).

    Direct handlers: an environment whose hot traps are invalid opcodes (``vmcall``/``vmmcall``
    hypercalls) may register ``machine.traps.add_opcode_handler(opcode_bytes, handler)`` in
    ``hvsim_setup``; a trap whose bytes start with ``opcode_bytes`` then goes to
    ``handler(machine, trap, bits)`` (``bits``: the code size it ran in) before this hook, and
    reaches this hook only when the handler returns ``None``.  Every other trap comes here as before.
    """


@hookspec(firstresult=True)
def hvsim_exception(machine: "Machine", exception: "GuestException") -> "str | None":
    """Take a CPU exception before it is delivered through the guest IDT.

    Called on the run's plugins for every exception the guest raises (``#PF``, ``#GP``, ``#UD`` no
    plugin emulated, ``#GP(0)`` of an unanswered MSR, ...), after the engine's own exception state
    was cleared and with RIP at ``exception.rip`` (the faulting instruction for faults, the next one
    for traps).  An environment whose ABI does not deliver through an IDT (Xen PV bounces exceptions
    to the guest's trap table), or that absorbs some exceptions itself (Xen PV emulates stores to
    read-only page tables), handles it here: it sets the guest state as delivery or emulation
    leaves it and returns a short description of what it did (``"bounce frame"``,
    ``"ptwr emulation"``), which the core records in the ``Fault`` event.  To stop the run instead
    (an exception the ABI says crashes the guest), call ``machine.stop`` and return the reason.
    ``None`` from every plugin: delivery through the guest IDT.
    """


# ---------------------------------------------------------------------------------------------
# Observation.
# ---------------------------------------------------------------------------------------------


@hookspec
def hvsim_event(machine: "Machine", event: "Event") -> None:
    """See every event as it is recorded (console output, calls, faults, shutdown, notes).

    Called on every plugin of the run, in recording order.  Must not change the machine.  Console
    output arrives a line at a time (the CLI streams it to stdout from here).
    """


@hookspec
def hvsim_finish(machine: "Machine", result: "RunResult") -> "dict[str, Any] | None":
    """Add to the result after the run stopped.

    Called once per run on every plugin of the run, after the stop reason and state are recorded.

    Return a JSON-able dict; it is stored in ``result.extra`` under the plugin's registered name.
    The machine can still be read (memory, registers) but no longer runs.
    """
