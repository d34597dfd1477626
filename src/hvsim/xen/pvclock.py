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

# struct vcpu_time_info sits at offset 32 of the x86-64 vcpu_info (xen.h)
VCPU_INFO_TIME = 32
# struct shared_info (x86-64, xen.h): after vcpu_info[32] and the two 4096-bit event bitmaps
# {u32 wc_version; u32 wc_sec; u32 wc_nsec; u32 wc_sec_hi}
SHARED_INFO_WALLCLOCK = 3072
WALLCLOCK_FORMAT = "<IIII"


def publish_time(memory, vcpu_info: int, *, system_time_ns: int, tsc: int, ticks_per_s: int) -> None:
    """Write a vCPU's ``vcpu_time_info`` as Xen's update_vcpu_system_time does: ``version`` made
    odd, the fields written, then ``version`` made even, so a guest reading it twice around the
    fields sees a torn update as a changed or odd version."""
    address = vcpu_info + VCPU_INFO_TIME
    (version,) = struct.unpack("<I", memory.read(address, 4))
    odd = (version | 1) if not version & 1 else version + 2
    memory.write(address, struct.pack("<I", odd & 0xFFFF_FFFF))
    body = vcpu_time_info(tsc, system_time_ns, ticks_per_s, version=(odd + 1) & 0xFFFF_FFFF)
    memory.write(address + 4, body[4:])
    memory.write(address, body[:4])


def publish_wallclock(memory, shared_info: int, epoch_s: int, epoch_ns: int = 0) -> None:
    """The wallclock at system time 0 (``wc_sec``/``wc_nsec``/``wc_sec_hi``), under the same
    odd/even ``wc_version`` protocol."""
    address = shared_info + SHARED_INFO_WALLCLOCK
    (version,) = struct.unpack("<I", memory.read(address, 4))
    odd = (version + 1) | 1
    memory.write(address, struct.pack("<I", odd & 0xFFFF_FFFF))
    memory.write(address + 4, struct.pack("<III", epoch_s & 0xFFFF_FFFF, epoch_ns, epoch_s >> 32))
    memory.write(address, struct.pack("<I", (odd + 1) & 0xFFFF_FFFF))
