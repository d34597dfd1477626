"""The few AML (ACPI Machine Language) encodings hvsim's DSDT needs, and the one lookup a reader needs back.

hvsim's DSDT is hand-encoded, not compiled: it holds ``Name (_S5_, Package (0x04) {S5, S5, 0, 0})`` at the
root, which OSPM evaluates to power off (it writes SLP_TYPa | SLP_EN to PM1a_CNT), and the ``\\_SB_``
scope.  A machine with the 8042 keyboard controller declares its two ports there as QEMU's ``pc``
machine does (there under its ISA bridge): the keyboard port (PNP0303, I/O 0x60 and 0x64, IRQ 1) and
the aux (mouse) port (PNP0F13, IRQ 12), which is how an OS finds the controller (Linux's i8042 driver
asks PNP first).  Its ASL source::

    DefinitionBlock ("", "DSDT", 2, "HVSIM ", "HVSIMPC ", 1)
    {
        Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
        Scope (\\_SB)
        {
            Device (KBD) {                      // only with the 8042
                Name (_HID, EisaId ("PNP0303"))
                Name (_CRS, ResourceTemplate () {
                    IO (Decode16, 0x60, 0x60, 0x01, 0x01)
                    IO (Decode16, 0x64, 0x64, 0x01, 0x01)
                    IRQNoFlags () {1}
                })
            }
            Device (MOU) {
                Name (_HID, EisaId ("PNP0F13"))
                Name (_CRS, ResourceTemplate () { IRQNoFlags () {12} })
            }
        }
    }

Grammar references are ACPI 6.5 §20.2 (AML Grammar Definition): §20.2.2 NameSeg/NameString,
§20.2.3 data objects (ZeroOp, OneOp, BytePrefix...), §20.2.4 PkgLength, §20.2.5.1 NameOp and ScopeOp,
§20.2.5.2 DeviceOp, §20.2.5.4 BufferOp and PackageOp.  §7.4.2 defines the \\_Sx packages, §6.1.5 _HID
(an EISA ID compressed into a DWORD), §6.4.2 the small resource descriptors of a _CRS buffer (§6.4.2.1
IRQ, §6.4.2.5 I/O port, §6.4.2.9 End Tag).
"""

from __future__ import annotations

import string

# ACPI 6.5 §20.2.3 / §20.2.5: one-byte opcodes and prefixes used here.
ZERO_OP = 0x00
ONE_OP = 0x01
NAME_OP = 0x08
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
QWORD_PREFIX = 0x0E
SCOPE_OP = 0x10
BUFFER_OP = 0x11
PACKAGE_OP = 0x12
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82          # after EXT_OP_PREFIX
ONES_OP = 0xFF
ROOT_CHAR = b"\\"

# §20.2.4: a PkgLength is 1-4 bytes; one byte holds values up to 0x3F, longer forms carry 4 + 8*k bits.
PKG_LENGTH_MAX = (1 << 28) - 1

# §20.2.2: NameSeg := LeadNameChar NameChar NameChar NameChar.
_LEAD_NAME_CHARS = string.ascii_uppercase + "_"
_NAME_CHARS = _LEAD_NAME_CHARS + string.digits

# §7.4.2: \_Sx package = {SLP_TYPa, SLP_TYPb, reserved, reserved}; SLP_TYP is the 3-bit PM1_CNT field.
SLEEP_TYPE_MAX = 0x7


class AmlDecodeError(Exception):
    """The AML does not hold what the reader looked for; the message says what and where."""


# --- encoding ---------------------------------------------------------------------------------------


def pkg_length(body_length: int) -> bytes:
    """Encode the PkgLength of a package whose content after the PkgLength is ``body_length`` bytes.

    The encoded value counts the PkgLength bytes themselves (§20.2.4).
    """
    for extra in range(4):
        total = body_length + 1 + extra
        if extra == 0 and total <= 0x3F:
            return bytes([total])
        if extra and total < 1 << (4 + 8 * extra):
            return bytes([(extra << 6) | (total & 0x0F)]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package body of {body_length} bytes exceeds PkgLength maximum {PKG_LENGTH_MAX:#x}")


def integer(value: int) -> bytes:
    """Encode an integer constant in its shortest form (ZeroOp, OneOp or a Byte/Word/DWord/QWord const)."""
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    for prefix, size in ((BYTE_PREFIX, 1), (WORD_PREFIX, 2), (DWORD_PREFIX, 4), (QWORD_PREFIX, 8)):
        if 0 <= value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise ValueError(f"AML integer {value!r} is not a 64-bit unsigned value")


def name_seg(name: str) -> bytes:
    """Encode a NameSeg: up to four name characters, padded with '_' (``_S5`` becomes ``_S5_``)."""
    padded = name.ljust(4, "_")
    if len(padded) != 4 or padded[0] not in _LEAD_NAME_CHARS or any(c not in _NAME_CHARS for c in padded):
        raise ValueError(f"AML name {name!r} is not a valid NameSeg")
    return padded.encode("ascii")


def package(elements: list[bytes]) -> bytes:
    """Encode ``Package (n) {elements}`` (each element already encoded)."""
    if len(elements) > 0xFF:
        raise ValueError(f"AML package of {len(elements)} elements exceeds the 255 of a Package")
    body = bytes([len(elements)]) + b"".join(elements)
    return bytes([PACKAGE_OP]) + pkg_length(len(body)) + body


def name(seg: str, data: bytes) -> bytes:
    """Encode ``Name (seg, data)`` relative to the enclosing scope."""
    return bytes([NAME_OP]) + name_seg(seg) + data


def scope(root_seg: str, terms: bytes) -> bytes:
    """Encode ``Scope (\\seg) {terms}`` for a name directly under the root."""
    body = ROOT_CHAR + name_seg(root_seg) + terms
    return bytes([SCOPE_OP]) + pkg_length(len(body)) + body


def sleep_package(sleep_type_a: int, sleep_type_b: int) -> bytes:
    """Encode a \\_Sx package ``{SLP_TYPa, SLP_TYPb, 0, 0}``."""
    for value in (sleep_type_a, sleep_type_b):
        if not 0 <= value <= SLEEP_TYPE_MAX:
            raise ValueError(f"SLP_TYP {value!r} does not fit the 3-bit PM1_CNT.SLP_TYP field")
    return package([integer(sleep_type_a), integer(sleep_type_b), integer(0), integer(0)])


def dsdt_aml(s5_sleep_type: int, i8042: bool = False) -> bytes:
    """The DSDT's AML body (what follows the 36-byte header): \\_S5_ and the \\_SB_ scope, holding
    the 8042's devices when the machine has one (else empty)."""
    return name("_S5", sleep_package(s5_sleep_type, s5_sleep_type)) + scope("_SB", i8042_devices() if i8042 else b"")


# §6.4.2 small resource descriptors: tag byte = type << 3 | length of the data that follows.
RESOURCE_IRQ_NO_FLAGS = 0x22      # type 4, 2 bytes: the IRQ mask (edge, active high, exclusive)
RESOURCE_IO = 0x47                # type 8, 7 bytes: information, min, max, alignment, length
RESOURCE_IO_DECODE16 = 0x01       # the device decodes all 16 address bits
RESOURCE_END_TAG = 0x79           # type 0xF, 1 byte: checksum (0: treated as correct)

# The 8042's ports and interrupts (IBM PC/AT), and the PNP IDs of its two ports (QEMU's pc DSDT).
I8042_DATA_PORT, I8042_COMMAND_PORT, I8042_KBD_IRQ, I8042_AUX_IRQ = 0x60, 0x64, 1, 12
PNP_KEYBOARD, PNP_MOUSE = "PNP0303", "PNP0F13"   # IBM enhanced keyboard (101/102-key); PS/2 port mouse


def eisa_id(text: str) -> bytes:
    """Encode ``EisaId ("AAA####")`` as the DWORD const ASL makes of it (§6.1.5): three letters of
    5 bits each and four hex digits, stored big-endian."""
    if len(text) != 7 or not all("A" <= c <= "Z" for c in text[:3]):
        raise ValueError(f"EISA ID {text!r} is not three capital letters and four hex digits")
    vendor = sum((ord(c) - 0x40) << (10 - 5 * i) for i, c in enumerate(text[:3]))
    raw = vendor.to_bytes(2, "big") + int(text[3:], 16).to_bytes(2, "big")
    return bytes([DWORD_PREFIX]) + raw


def buffer(data: bytes) -> bytes:
    """Encode ``Buffer () {data}`` (its size as an integer constant, then the bytes)."""
    body = integer(len(data)) + data
    return bytes([BUFFER_OP]) + pkg_length(len(body)) + body


def device(seg: str, terms: bytes) -> bytes:
    """Encode ``Device (seg) {terms}`` relative to the enclosing scope."""
    body = name_seg(seg) + terms
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg_length(len(body)) + body


def io_port(port: int) -> bytes:
    """A 16-bit decoded I/O descriptor for the one byte at ``port``."""
    return bytes([RESOURCE_IO, RESOURCE_IO_DECODE16]) + port.to_bytes(2, "little") * 2 + bytes([1, 1])


def irq_no_flags(irq: int) -> bytes:
    return bytes([RESOURCE_IRQ_NO_FLAGS]) + (1 << irq).to_bytes(2, "little")


def resource_template(*descriptors: bytes) -> bytes:
    """``ResourceTemplate () {...}``: the descriptors and an End Tag, as a buffer."""
    return buffer(b"".join(descriptors) + bytes([RESOURCE_END_TAG, 0]))


def i8042_devices() -> bytes:
    """The keyboard and aux ports of an 8042 (see the module docstring)."""
    keyboard = resource_template(io_port(I8042_DATA_PORT), io_port(I8042_COMMAND_PORT), irq_no_flags(I8042_KBD_IRQ))
    mouse = resource_template(irq_no_flags(I8042_AUX_IRQ))
    return (device("KBD", name("_HID", eisa_id(PNP_KEYBOARD)) + name("_CRS", keyboard))
            + device("MOU", name("_HID", eisa_id(PNP_MOUSE)) + name("_CRS", mouse)))


# --- decoding ---------------------------------------------------------------------------------------


def decode_pkg_length(aml: bytes, offset: int) -> tuple[int, int]:
    """Return (PkgLength value, number of bytes it occupies) at ``offset``."""
    if offset >= len(aml):
        raise AmlDecodeError(f"PkgLength at AML offset {offset:#x} is past the end ({len(aml):#x} bytes)")
    lead = aml[offset]
    extra = lead >> 6
    if extra == 0:
        return lead & 0x3F, 1
    tail = aml[offset + 1 : offset + 1 + extra]
    if len(tail) != extra:
        raise AmlDecodeError(f"PkgLength at AML offset {offset:#x} is cut off by the end of the table")
    if lead & 0x30:
        raise AmlDecodeError(f"PkgLength lead byte {lead:#04x} at AML offset {offset:#x}: reserved bits set")
    return (lead & 0x0F) | (int.from_bytes(tail, "little") << 4), 1 + extra


def decode_integer(aml: bytes, offset: int) -> int:
    """Decode the integer constant (ZeroOp, OneOp, OnesOp or a prefixed const) at ``offset``."""
    if offset >= len(aml):
        raise AmlDecodeError(f"integer at AML offset {offset:#x} is past the end ({len(aml):#x} bytes)")
    op = aml[offset]
    if op in (ZERO_OP, ONE_OP):
        return op
    if op == ONES_OP:
        return (1 << 64) - 1
    sizes = {BYTE_PREFIX: 1, WORD_PREFIX: 2, DWORD_PREFIX: 4, QWORD_PREFIX: 8}
    if op not in sizes:
        raise AmlDecodeError(f"AML offset {offset:#x} holds opcode {op:#04x}, not an integer constant")
    raw = aml[offset + 1 : offset + 1 + sizes[op]]
    if len(raw) != sizes[op]:
        raise AmlDecodeError(f"integer at AML offset {offset:#x} is cut off by the end of the table")
    return int.from_bytes(raw, "little")


def find_sleep_type_a(aml: bytes, state: int = 5) -> int:
    """Return SLP_TYPa of the root ``\\_Sx_`` package (x = ``state``) in a DSDT's AML body.

    This is a pattern lookup, not an interpreter: it finds ``NameOp [\\]_Sx_ PackageOp`` and decodes the
    package's first element, which is how the \\_Sx objects of real firmware are laid out.
    """
    pattern = name_seg(f"_S{state}")
    start = 0
    while (hit := aml.find(pattern, start)) >= 0:
        start = hit + 1
        prefix_ok = hit >= 1 and aml[hit - 1] == NAME_OP
        prefix_ok |= hit >= 2 and aml[hit - 2 : hit] == bytes([NAME_OP]) + ROOT_CHAR
        if not prefix_ok or hit + 4 >= len(aml) or aml[hit + 4] != PACKAGE_OP:
            continue
        length, length_size = decode_pkg_length(aml, hit + 5)
        count_at = hit + 5 + length_size
        if hit + 5 + length > len(aml) or length < length_size + 1:
            raise AmlDecodeError(f"\\_S{state}_ package at AML offset {hit:#x} has bad PkgLength {length:#x}")
        if count_at >= len(aml) or aml[count_at] == 0:
            raise AmlDecodeError(f"\\_S{state}_ package at AML offset {hit:#x} has no elements")
        return decode_integer(aml, count_at + 1)
    raise AmlDecodeError(f"no Name (\\_S{state}_, Package) in the AML")
