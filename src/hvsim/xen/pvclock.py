"""Xen's time information for a guest: the TSC scale of ``struct vcpu_time_info`` (xen.h).

The guest's ``rdtsc`` reads hvsim's guest time in nanoseconds (a 1 GHz TSC, ``hvsim.core.clock``),
so the pvclock a guest is given describes that TSC: ``TSC_HZ``.
"""

from __future__ import annotations

import struct

from ..core.clock import TSC_HZ

NS_PER_S = 1_000_000_000
# struct vcpu_time_info {u32 version; u32 pad0; u64 tsc_timestamp; u64 system_time;
#                        u32 tsc_to_system_mul; s8 tsc_shift; u8 flags; u8 pad1[2]}
VCPU_TIME_INFO_FORMAT = "<IIQQIbB2x"
PVCLOCK_TSC_STABLE_BIT = 1 << 0


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
