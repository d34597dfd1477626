"""A xen_pv domU reads its own basic xenstore keys through the store ring and gets answers.

The guest finds the ring the way a PV kernel does: start_info.store_mfn is a machine frame, its
pseudo-physical frame is M2P[mfn] (the read-only table at 0xffff800000000000), and with VIRT_BASE 0
the page is mapped at pfn << 12.  It writes one request (struct xsd_sockmsg + payload), advances
req_prod, notifies start_info.store_evtchn, and copies the response back for the test.
"""

from __future__ import annotations

import struct

import pytest
from test_xen_pv_bad_input import DONE, assert_finished, run_pv

from hvsim.abi import xen as x

FIND_RING = ("mov 56(%r15), %rax\n    movabs $0xffff800000000000, %rbx\n    mov (%rbx,%rax,8), %rbx\n    "
             "shl $12, %rbx\n    ")                     # RBX = the store ring page


def request(kind: int, payload: bytes) -> str:
    message = struct.pack(x.XS_MSG_HEADER_FORMAT, kind, 7, 0, len(payload)) + payload
    data = ", ".join(str(b) for b in message)
    return (FIND_RING + f"lea msg(%rip), %rsi\n    mov %rbx, %rdi\n    mov ${len(message)}, %ecx\n    rep movsb\n    "
            f"movl ${len(message)}, {x.XS_REQ_PROD}(%rbx)\n    "
            "mov $4, %edi\n    lea port(%rip), %rsi\n    mov 64(%r15), %eax\n    mov %eax, port(%rip)\n    "
            "mov $32, %eax\n    syscall\n    "
            f"lea {x.XS_RING_RSP}(%rbx), %rsi\n    lea results(%rip), %rdi\n    mov $96, %ecx\n    rep movsb\n    "
            + DONE + f".balign 8\nport: .long 0\nmsg: .byte {data}\n")


def response(machine, symbols) -> tuple[int, int, bytes]:
    raw = machine.vmem.read(symbols["results"], 96)
    kind, req_id, _tx, length = struct.unpack(x.XS_MSG_HEADER_FORMAT, raw[:16])
    return kind, req_id, raw[16:16 + length]


@pytest.mark.parametrize("path,expected", [
    (b"name\0", b"hvsim"),
    (b"domid\0", b"1"),
    (b"/local/domain/1/memory/target\0", str(64 * 1024).encode()),
    (b"cpu/1/availability\0", b"online"),
])
def test_a_domu_reads_its_own_keys(path, expected):
    result, m, symbols = run_pv(request(x.XS_READ, path), smp=2)
    assert_finished(result, m, symbols)
    assert response(m, symbols) == (x.XS_READ, 7, expected)
    [send] = [e for e in m.events if e.kind == "Call" and e.name == "event_channel_op.send"]
    assert send.args["channel"] == "xenstore" and send.args["xenstore_requests"] == 1


def test_a_missing_key_is_an_enoent_error_and_a_directory_lists_children():
    result, m, symbols = run_pv(request(x.XS_READ, b"no/such/key\0"))
    assert_finished(result, m, symbols)
    assert response(m, symbols) == (x.XS_ERROR, 7, b"ENOENT\0")
    result, m, symbols = run_pv(request(x.XS_DIRECTORY, b"console\0"))
    assert response(m, symbols) == (x.XS_DIRECTORY, 7, b"port\0ring-ref\0type\0")
