"""bzImage files: the real-mode setup, the setup header, the protected-mode part and its payload.

Layout (``Documentation/arch/x86/boot.rst``): the first (setup_sects + 1) * 512 bytes are the boot
sector and real-mode setup code, with the setup header at 0x1F1; the protected-mode (PM) kernel
follows.  From protocol 2.08 the header locates the compressed ``vmlinux`` inside the PM part
(payload_offset/payload_length), whose compression we recognise by its magic.  Decompressing it is
left to ``payload.decompress`` and happens only on request.
"""

from __future__ import annotations

import struct
from typing import Optional

import attrs

from hvsim.abi import linux_boot as lb
from hvsim.core.errors import ImageError
from hvsim.image import payload as payload_mod

#: Longest kernel version string we read from the setup area.
KERNEL_VERSION_MAX = 256
#: Payload fields (payload_offset/payload_length) exist from protocol 2.08.
PAYLOAD_SINCE = 0x0208


def looks_like_bzimage(data: bytes) -> bool:
    """"HdrS" at 0x202 and the 0xAA55 boot flag at 0x1FE: the test boot.rst gives for a kernel."""
    return (len(data) >= lb.HEADER_MAGIC_OFFSET + 4
            and struct.unpack_from("<H", data, lb.BOOT_FLAG_OFFSET)[0] == lb.BOOT_FLAG
            and struct.unpack_from("<I", data, lb.HEADER_MAGIC_OFFSET)[0] == lb.HEADER_MAGIC)


@attrs.frozen
class BzImage:
    """A recognised bzImage.  Offsets are file offsets unless named ``*_in_pm``."""

    header: lb.SetupHeader
    setup_sects: int                         # effective: 0 in the file means 4
    pm_offset: int                           # (setup_sects + 1) * 512
    pm_size: int                             # syssize * 16 (2.04+), else the rest of the file
    kernel_version_string: Optional[str]
    payload_offset: Optional[int]            # file offset of the compressed payload
    payload_length: Optional[int]
    compression: Optional[str]               # one of payload.COMPRESSIONS, or None
    payload_problem: Optional[str]           # why there is no usable payload, when there is none
    data: bytes = attrs.field(repr=False, eq=False)

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def pm_data(self) -> bytes:
        """The protected-mode kernel, as a loader copies it to code32_start / the load address."""
        return self.data[self.pm_offset:self.pm_offset + self.pm_size]

    @property
    def setup_code(self) -> bytes:
        """Boot sector plus real-mode setup: the first pm_offset bytes."""
        return self.data[:self.pm_offset]

    @property
    def header_bytes(self) -> bytes:
        """The setup header as the file has it, 0x1F1 up to 0x202 + jump byte (boot.rst)."""
        end = lb.HEADER_MAGIC_OFFSET + self.data[lb.JUMP_OFFSET + 1]
        return self.data[lb.SETUP_HEADER_OFFSET:end]

    @property
    def payload(self) -> Optional[bytes]:
        """The compressed payload bytes, or None (see ``payload_problem``)."""
        if self.payload_problem is not None or self.payload_offset is None:
            return None
        return self.data[self.payload_offset:self.payload_offset + (self.payload_length or 0)]

    def decompress_payload(self, where: str) -> bytes:
        """The decompressed payload; ImageError naming ``where`` if absent or corrupt."""
        if self.payload_problem is not None:
            raise ImageError(f"{where}: {self.payload_problem}")
        assert self.compression is not None and self.payload is not None
        return payload_mod.decompress(self.compression, self.payload, where=f"{where}: payload")

    def to_dict(self) -> dict:
        hdr = self.header
        return {
            "protocol": hdr.version_str,
            "setup_sects": self.setup_sects,
            "pm_offset": self.pm_offset,
            "pm_size": self.pm_size,
            "kernel_version": self.kernel_version_string,
            "loadflags": lb.flag_names(hdr.loadflags or 0, lb.LOADFLAG_NAMES),
            "xloadflags": (None if hdr.xloadflags is None
                           else lb.flag_names(hdr.xloadflags, lb.XLOADFLAG_NAMES)),
            "setup_header": hdr.present_fields(),
            "payload": {
                "offset": self.payload_offset,
                "length": self.payload_length,
                "compression": self.compression,
                "problem": self.payload_problem,
            },
        }


def parse_bzimage(data: bytes, where: str) -> BzImage:
    """Parse and validate a bzImage; ``where`` names it in errors.  Raises only ImageError."""
    if len(data) < lb.HEADER_MAGIC_OFFSET + 4:
        raise ImageError(f"{where}: too short for a Linux setup header ({len(data)} bytes)")
    boot_flag = struct.unpack_from("<H", data, lb.BOOT_FLAG_OFFSET)[0]
    if boot_flag != lb.BOOT_FLAG:
        raise ImageError(f"{where}: setup header boot_flag is {boot_flag:#06x}, expected 0xaa55")
    magic = struct.unpack_from("<I", data, lb.HEADER_MAGIC_OFFSET)[0]
    if magic != lb.HEADER_MAGIC:
        raise ImageError(f"{where}: setup header magic at 0x202 is {magic:#010x}, expected 'HdrS'")
    if len(data) < lb.SETUP_HEADER_END:
        raise ImageError(f"{where}: truncated setup header ({len(data)} of "
                         f"{lb.SETUP_HEADER_END} bytes)")
    header = lb.SetupHeader.parse(data)
    if header.version < 0x0200:
        raise ImageError(f"{where}: setup header version is {header.version:#06x}, "
                         "older than boot protocol 2.00")
    setup_sects = header.effective_setup_sects
    pm_offset = (setup_sects + 1) * lb.SECTOR_SIZE
    if len(data) <= pm_offset:
        raise ImageError(f"{where}: file is {len(data):#x} bytes but setup_sects {setup_sects} puts "
                         f"the protected-mode kernel at {pm_offset:#x}")
    if header.version >= 0x0204 and header.syssize:
        pm_size = header.syssize * 16
        if pm_offset + pm_size > len(data):
            raise ImageError(f"{where}: truncated: syssize {header.syssize:#x} needs "
                             f"{pm_offset + pm_size:#x} bytes, file has {len(data):#x}")
    else:
        pm_size = len(data) - pm_offset
    offset, length, compression, problem = _locate_payload(data, header, pm_offset, pm_size)
    return BzImage(header=header, setup_sects=setup_sects, pm_offset=pm_offset, pm_size=pm_size,
                   kernel_version_string=_kernel_version(data, header, pm_offset),
                   payload_offset=offset, payload_length=length, compression=compression,
                   payload_problem=problem, data=data)


def _kernel_version(data: bytes, header: lb.SetupHeader, pm_offset: int) -> Optional[str]:
    pointer = header.kernel_version
    if not pointer:
        return None
    start = pointer + lb.KERNEL_VERSION_BASE
    if start >= pm_offset:  # boot.rst: must point inside the setup code
        return None
    raw = data[start:min(start + KERNEL_VERSION_MAX, pm_offset)].split(b"\0", 1)[0]
    return raw.decode("ascii", "replace") or None


def _locate_payload(data: bytes, header: lb.SetupHeader, pm_offset: int, pm_size: int):
    """(file offset, length, compression, problem) of the payload; problem is None when usable."""
    if header.payload_offset is None or header.payload_length is None:
        return None, None, None, (f"boot protocol {header.version_str} has no payload fields "
                                  f"(they start at {lb.version_str(PAYLOAD_SINCE)})")
    offset = pm_offset + header.payload_offset
    length = header.payload_length
    if length == 0:
        return offset, length, None, "setup header payload_length is 0 (no payload)"
    if header.payload_offset + length > pm_size:
        return offset, length, None, (
            f"payload (payload_offset {header.payload_offset:#x}, payload_length {length:#x}) "
            f"runs past the protected-mode kernel ({pm_size:#x} bytes)")
    compression = payload_mod.detect(data[offset:offset + min(length, 8)])
    if compression is None:
        return offset, length, None, (
            f"payload at file offset {offset:#x} has unknown compression magic "
            f"{data[offset:offset + 6].hex()}")
    return offset, length, compression, None
