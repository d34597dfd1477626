"""The Xen hypervisor shared by the Xen environments (hypercalls, console ring, CPUID leaves).

Environment plugins import it from here; no plugin imports another.
"""

from .hypervisor import Continuation, HypercallError, XenHypervisor
from .xenstore import XenStore

__all__ = ["Continuation", "HypercallError", "XenHypervisor", "XenStore"]
