"""Xen's time information for a guest: the TSC scale of ``struct vcpu_time_info`` (xen.h) and
the host TSC the guest's ``rdtsc`` reads.

Unicorn passes the host's time-stamp counter through to ``rdtsc`` (no offset, no scaling), so the
pvclock a guest is given must describe the host TSC: its frequency is measured once per process
against the host's monotonic clock, by running ``rdtsc`` in a throwaway engine.
"""

from __future__ import annotations

import functools
import struct
import time

from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn.x86_const import UC_X86_REG_RAX, UC_X86_REG_RDX

NS_PER_S = 1_000_000_000
_RDTSC = b"\x0f\x31"
# struct vcpu_time_info {u32 version; u32 pad0; u64 tsc_timestamp; u64 system_time;
#                        u32 tsc_to_system_mul; s8 tsc_shift; u8 flags; u8 pad1[2]}
VCPU_TIME_INFO_FORMAT = "<IIQQIbB2x"
PVCLOCK_TSC_STABLE_BIT = 1 << 0


class HostTsc:
    """Reads the host TSC the way the guest sees it (through the engine's ``rdtsc``)."""

    def __init__(self) -> None:
        self._uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self._uc.mem_map(0x1000, 0x1000, UC_PROT_ALL)
        self._uc.mem_write(0x1000, _RDTSC)

    def read(self) -> int:
        self._uc.emu_start(0x1000, 0x1000 + len(_RDTSC))
        return (self._uc.reg_read(UC_X86_REG_RDX) & 0xFFFF_FFFF) << 32 | self._uc.reg_read(UC_X86_REG_RAX) & 0xFFFF_FFFF


@functools.lru_cache(maxsize=1)
def host_tsc_hz(sample_s: float = 0.02) -> int:
    """The host TSC frequency, measured against ``time.perf_counter_ns`` over ``sample_s``."""
    tsc = HostTsc()
    t0, c0 = time.perf_counter_ns(), tsc.read()
    time.sleep(sample_s)
    t1, c1 = time.perf_counter_ns(), tsc.read()
    return max(1, (c1 - c0) * NS_PER_S // max(1, t1 - t0))


def time_scale(ticks_per_s: int) -> tuple[int, int]:
    """``(tsc_to_system_mul, tsc_shift)`` with ns = ((tsc << shift) * mul) >> 32 (shift < 0: >>),
    normalised as Xen's set_time_scale does: the shifted rate lies in (1 GHz, 2 GHz]."""
    rate, shift = ticks_per_s, 0
    while rate > 2 * NS_PER_S:
        rate >>= 1
        shift -= 1
    while rate <= NS_PER_S:
        rate <<= 1
        shift += 1
    return (NS_PER_S << 32) // rate, shift


def vcpu_time_info(tsc_timestamp: int, system_time_ns: int, ticks_per_s: int, version: int = 2) -> bytes:
    """A consistent (even ``version``) ``struct vcpu_time_info``, TSC marked stable."""
    mul, shift = time_scale(ticks_per_s)
    return struct.pack(VCPU_TIME_INFO_FORMAT, version, 0, tsc_timestamp, system_time_ns, mul, shift,
                       PVCLOCK_TSC_STABLE_BIT)
