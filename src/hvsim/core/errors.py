"""The one exception hierarchy of hvsim.

Every error a user can cause (a bad file, a bad option, a kernel that does not fit the machine) is an
``HvsimError`` whose message names the file, field and value that were wrong.  The CLI prints
``hvsim: <message>`` and exits with the class's ``exit_status``; it never shows a traceback for these.
Guest misbehaviour is not an exception: it ends the run with a stop reason in the ``RunResult``.
"""

from __future__ import annotations


class HvsimError(Exception):
    """Base class: a clear, one-line, user-facing error."""

    exit_status = 2


class UsageError(HvsimError):
    """A command-line option or API argument is invalid (unknown environment, bad size string)."""

    exit_status = 2


class ImageError(HvsimError):
    """The kernel image is missing, unreadable, truncated or not a kernel this tool understands."""

    exit_status = 3


class UnsupportedImageError(ImageError):
    """The image is valid but the chosen environment cannot boot it (no matching entry point)."""


class LoadError(HvsimError):
    """The image cannot be placed in the configured machine (segment outside RAM, overlap, too little RAM)."""

    exit_status = 4


class GuestMemoryError(HvsimError):
    """A guest-physical or guest-virtual access fell outside guest RAM or was not mapped.

    Plugins catch this to turn a bad guest pointer into a guest-visible error (``-EFAULT``,
    ``EFI_INVALID_PARAMETER``); the core raises it only from the bounds-checked accessors.
    """

    exit_status = 4

    def __init__(self, address: int, size: int, why: str = "outside guest RAM"):
        self.address = address
        self.size = size
        self.why = why
        super().__init__(f"guest access of {size} byte(s) at {address:#x}: {why}")


class PluginError(HvsimError):
    """A plugin is missing, broken, or violated the hook contract."""

    exit_status = 5
