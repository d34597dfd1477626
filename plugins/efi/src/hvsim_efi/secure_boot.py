"""Secure Boot's variables for a firmware that does not enforce it (``--secure-boot off|setup``).

UEFI 2.10 §3.3 (globally defined variables) and §32.3 (firmware/OS key exchange, the Secure Boot
modes).  Without the option the firmware has no Secure Boot support at all, as OVMF built without
it: none of these variables exists.  With it, the firmware has no keys enrolled (PK, KEK, db, dbx
absent), so it is in Setup Mode and verifies nothing:

- ``off``: what OVMF built with Secure Boot support gives before keys are enrolled (edk2's
  AuthVariableLib at start-up): SetupMode = 1, SecureBoot = 0, SignatureSupport = the signature
  types it can verify (SHA-1, SHA-256, RSA-2048, X.509), VendorKeys = 1 (no key was changed from
  the platform's defaults).  edk2 has no AuditMode/DeployedMode.
- ``setup``: the spec's Setup Mode (§32.3, the mode table): the same, plus AuditMode = 0 and
  DeployedMode = 0.

All are volatile BOOTSERVICE|RUNTIME u8s (SignatureSupport an array of GUIDs), and read-only: a
SetVariable on SetupMode, SecureBoot, AuditMode, DeployedMode, VendorKeys or SignatureSupport of the
global GUID answers EFI_WRITE_PROTECTED whether or not the option is given (edk2's variable check
treats them so).  PK and KEK (global GUID), db and dbx (image security database GUID) must be
written NON_VOLATILE with TIME_BASED_AUTHENTICATED_WRITE_ACCESS (EFI_INVALID_PARAMETER otherwise,
as edk2 answers); hvsim verifies no authenticated write, so enrolling keys, and with it user and
deployed mode and any image verification, is not modelled.
"""

from __future__ import annotations

from hvsim.abi import efi
from hvsim.core.errors import UsageError

from .calls import EfiError

MODES = ("off", "setup")
IMAGE_SECURITY_DATABASE_GUID = efi.guid_bytes("d719b2cb-3d3a-4596-a3bc-dad00e67656f")       # db, dbx
# Signature types edk2 announces in SignatureSupport (UEFI 2.10 §32.4.1 EFI_CERT_*_GUID).
CERT_SHA1_GUID = efi.guid_bytes("826ca512-cf10-4ac9-b187-be01496631bd")
CERT_SHA256_GUID = efi.guid_bytes("c1c41626-504c-4092-aca9-41f936934328")
CERT_RSA2048_GUID = efi.guid_bytes("3c5766e8-269c-4e34-aa14-ed776e85b3b6")
CERT_X509_GUID = efi.guid_bytes("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
SIGNATURE_SUPPORT = CERT_SHA1_GUID + CERT_SHA256_GUID + CERT_RSA2048_GUID + CERT_X509_GUID
BS_RT = efi.VARIABLE_BOOTSERVICE_ACCESS | efi.VARIABLE_RUNTIME_ACCESS
TIME_BASED_AUTHENTICATED_WRITE = 0x20
READ_ONLY = ("SetupMode", "SecureBoot", "AuditMode", "DeployedMode", "VendorKeys", "SignatureSupport")
KEY_DATABASES = ((efi.GLOBAL_VARIABLE_GUID, "PK"), (efi.GLOBAL_VARIABLE_GUID, "KEK"),
                 (IMAGE_SECURITY_DATABASE_GUID, "db"), (IMAGE_SECURITY_DATABASE_GUID, "dbx"))
SETUP_MODE, SECURE_BOOT_DISABLED, VENDOR_KEYS_VALID = 1, 0, 1


def initial_variables(mode: str) -> dict[tuple[bytes, str], tuple[int, bytes]]:
    """The variables the firmware creates at start in ``mode`` (in edk2's creation order)."""
    if mode not in MODES:
        raise UsageError(f"--secure-boot {mode}: expected one of {', '.join(MODES)}")
    g = efi.GLOBAL_VARIABLE_GUID
    out = {(g, "SetupMode"): (BS_RT, bytes([SETUP_MODE])),
           (g, "SignatureSupport"): (BS_RT, SIGNATURE_SUPPORT),
           (g, "SecureBoot"): (BS_RT, bytes([SECURE_BOOT_DISABLED]))}
    if mode == "setup":
        out[(g, "AuditMode")] = (BS_RT, b"\0")
        out[(g, "DeployedMode")] = (BS_RT, b"\0")
    out[(g, "VendorKeys")] = (BS_RT, bytes([VENDOR_KEYS_VALID]))
    return out


def check_enrolled(stored: dict, mode: str | None) -> None:
    """A UsageError when a variable file brings keys: with PK the platform would be in user mode,
    which hvsim does not model."""
    if mode is not None and any(key in stored for key in KEY_DATABASES):
        names = ", ".join(n for g, n in KEY_DATABASES if (g, n) in stored)
        raise UsageError(f"--secure-boot {mode}: the variable file holds {names}; enrolled keys "
                         "(user mode) are not modelled")


def check_write(guid: bytes, name: str, attributes: int, mode: str | None) -> None:
    """EfiError for a SetVariable Secure Boot forbids (see the module docstring)."""
    if guid == efi.GLOBAL_VARIABLE_GUID and name in READ_ONLY:
        raise EfiError(efi.WRITE_PROTECTED, f"{name} is read-only")
    if mode is not None and (guid, name) in KEY_DATABASES:
        if not attributes & efi.VARIABLE_NON_VOLATILE or not attributes & TIME_BASED_AUTHENTICATED_WRITE:
            raise EfiError(efi.INVALID_PARAMETER,
                           f"{name} must be written NON_VOLATILE with TIME_BASED_AUTHENTICATED_WRITE_ACCESS")
