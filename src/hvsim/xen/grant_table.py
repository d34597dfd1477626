"""One domain's grant table as its own guest controls it (xen/include/public/grant_table.h).

Models: the table's version (0 until first used, then 1 or 2), how many shared frames it has grown
to (at most ``max_frames``, the toolstack's max_grant_frames), the status frames version 2 adds,
and where each frame is: a machine address Xen allocated outside the domain's RAM (a PV domain maps
it by its MFN, which ``setup_table`` lists), or the guest-physical page an auto-translated (PVH)
guest placed it at with ``add_to_physmap``.  Frames start zeroed and move with their contents.

Not modelled: the entries themselves (no other domain maps or copies this domain's grants, so
hvsim never reads them), the conversion of the reserved entries on a version change, shrinking.
"""

from __future__ import annotations

from typing import Callable

from ..abi import xen as x

PAGE = 0x1000


class GrantError(Exception):
    """An operation the table refuses: ``errno`` for the hypercall, the message for the trace."""

    def __init__(self, errno: int, why: str):
        super().__init__(why)
        self.errno = errno


class GrantTable:
    def __init__(self, memory, *, max_frames: int = x.MAX_GRANT_FRAMES,
                 allocate: Callable[[], int] | None = None):
        """``memory``: guest-physical memory (frames are zeroed and moved through it);
        ``allocate``: returns the machine address of a fresh zeroed page of Xen's own (PV), or None
        when frames exist only where the guest places them (auto-translated)."""
        self.memory = memory
        self.max_frames = max_frames
        self.allocate = allocate
        self.version = 0
        self.nr_frames = 1                      # Xen creates a domain's table with one frame
        self.shared: dict[int, int] = {}        # frame index -> address of its page
        self.status: dict[int, int] = {}
        if allocate is not None:
            self.shared[0] = allocate()

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def nr_status_frames(self) -> int:
        """Version 2's status frames: one u16 per entry, 256 entries per shared frame."""
        if self.version != 2:
            return 0
        entries = self.nr_frames * (PAGE // x.GRANT_ENTRY_V2_SIZE)
        return -(-entries * x.GRANT_STATUS_SIZE // PAGE)

    def grow(self, nr_frames: int) -> None:
        """Grow to ``nr_frames`` shared frames (never shrinks); beyond the maximum: refused."""
        if nr_frames > self.max_frames:
            raise GrantError(x.EINVAL, f"{nr_frames} grant frames exceed the maximum {self.max_frames}")
        if self.version == 0:
            self.version = 1
        self.nr_frames = max(self.nr_frames, nr_frames)
        self._allocate_missing()

    def set_version(self, version: int) -> None:
        if version not in (1, 2):
            raise GrantError(x.EINVAL, f"grant table version {version}")
        self.version = version
        self._allocate_missing()

    def _allocate_missing(self) -> None:
        if self.allocate is None:
            return
        for i in range(self.nr_frames):
            if i not in self.shared:
                self.shared[i] = self.allocate()
        for i in range(self.nr_status_frames):
            if i not in self.status:
                self.status[i] = self.allocate()

    # -- frames --------------------------------------------------------------------------------------
    def frame_numbers(self, status: bool, count: int, invalid: int) -> list[int]:
        """The frame numbers of the first ``count`` shared (or status) frames: where each is,
        ``invalid`` for one an auto-translated guest has not placed yet."""
        where = self.status if status else self.shared
        return [where[i] // PAGE if i in where else invalid for i in range(count)]

    def machine_frames(self) -> set[int]:
        """Every frame number the table occupies (a PV guest may map these)."""
        return {a // PAGE for a in (*self.shared.values(), *self.status.values())}

    def place(self, idx: int, address: int, back: Callable[[], None] = lambda: None) -> str:
        """XENMAPSPACE_grant_table: shared frame ``idx`` (status frame with XENMAPIDX_grant_table_status)
        now lives at the page ``address``; ``back()`` makes that page exist, called once the index
        is accepted (a refused placement changes nothing).  Returns the frame's name."""
        status = bool(idx & x.XENMAPIDX_grant_table_status)
        idx &= ~x.XENMAPIDX_grant_table_status
        if self.version == 0:
            self.version = 1
        if status:
            if self.version != 2:
                raise GrantError(x.EINVAL, "status frames exist only in grant table version 2")
            if idx >= self.nr_status_frames:
                raise GrantError(x.EINVAL, f"status frame {idx} of {self.nr_status_frames}")
            where = self.status
        else:
            if idx >= self.max_frames:
                raise GrantError(x.EINVAL, f"grant frame {idx} beyond the maximum {self.max_frames}")
            where = self.shared
        back()
        if not status:
            self.grow(idx + 1)
        old = where.get(idx)
        content = self.memory.read(old, PAGE) if old is not None else bytes(PAGE)
        self.memory.write(address, content)
        where[idx] = address
        return f"{'status' if status else 'shared'} frame {idx}"
