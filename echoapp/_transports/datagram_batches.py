"""
A UDP socket's ready datagrams read in batches: one system call per batch
(Linux's C{recvmmsg}) where echoapp's optional C accelerator was built
(C{echoapp/_mmsg.c}, at install, where there is a C compiler), one C{recvfrom} per
datagram where not.

The standard library does not offer C{recvmmsg}; the one package on PyPI
that does is not kept up.  So the accelerator is small (five functions),
optional (C{setup.py} skips it, with a warning, wherever it does not build,
or where C{ECHOAPP_NO_ACCELERATOR} is set), and has a Python twin,
L{SocketBatches}, which is also the contract both keep and the tests check
both against: C{recv(count, size)} gives up to C{count} datagrams (each at
most C{size} bytes, longer ones cut, as C{recvfrom} does) as C{(data,
address)} pairs in the socket module's address form; C{[]} when nothing is
ready; C{OSError} for an error met before any datagram (one met after some
is raised by the next call, as C{recvmmsg} leaves it).  Neither blocks
(C{MSG_DONTWAIT}; the twin needs a non-blocking socket, which every port
that reads for itself has).

Replies are not batched (C{sendmmsg}): measured against the benchmark's
load generator, sending each reply as soon as it is made keeps the client
busy while the rest are answered, which cost less CPU per datagram and
gave lower latency than one C{sendmmsg} at the end of a batch (measured
again with reads going on until the socket is empty: no better).  What
the accelerator does for replies is make each one without Python objects
and send it without the socket module's address parsing
(L{AcceleratedBatches.replier}), which took 0.3-0.7 µs off a datagram.

The UDP proxy asks two more things, with the same twin rule: C{send_to},
a datagram sent as it is (the socket's C{sendto}), and L{reader}, a
connected session socket's next datagram, L{None} when nothing is ready.
The wire record's capture asks one more (C{pack_data}, in
C{echoapp._record.packets}, whose Python twin is there).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

from echoapp._accelerator import ACCELERATOR_OFF, accelerator

__all__ = [
    "ACCELERATOR_OFF",
    "BATCH",
    "AcceleratedBatches",
    "SocketBatches",
    "accelerator",
    "batches",
    "reader",
]

# Datagrams per system call, the accelerator's most: enough to make a
# call's own cost small per datagram; its receive buffers (this many of the
# largest datagram a port reads) take memory only as datagrams fill them.
BATCH = 32

Datagram = tuple[bytes, Any]


class SocketBatches:
    """
    The batches on the socket's own C{recvfrom}, one system call per
    datagram: the fallback, on any socket-like object.
    """

    accelerated = False

    def __init__(self, sock: Any) -> None:
        self._recvfrom = sock.recvfrom
        self._error: OSError | None = None
        self._sock = sock

    def recv(self, count: int, size: int) -> list[Datagram]:
        """Up to C{count} datagrams ready (see the module's contract)."""
        error, self._error = self._error, None
        if error is not None:
            raise error
        received: list[Datagram] = []
        recvfrom = self._recvfrom
        try:
            for _ in range(count):
                received.append(recvfrom(size))
        except BlockingIOError:
            pass
        except OSError as failed:
            if not received:
                raise
            self._error = failed
        return received

    def send_to(self, datagram: bytes, address: Any) -> object:
        """The datagram as it is, to C{address}: the socket's own C{sendto}."""
        return self._sock.sendto(datagram, address)

    def replier(self, prefix: bytes, suffix: bytes) -> None:
        """None: without the accelerator, the greeter makes and sends each reply in Python."""
        return None


class AcceleratedBatches:
    """
    The batches on the C accelerator: one C{recvmmsg} per batch, and the
    greeter's replies made and sent in C (L{replier}).
    """

    accelerated = True

    def __init__(self, sock: socket.socket, mmsg: ModuleType) -> None:
        self._mmsg, self._fd, self._family = mmsg, sock.fileno(), sock.family
        self.recv: Callable[[int, int], list[Datagram]] = partial(mmsg.recv_batch, self._fd)
        # C{send_to(datagram, address)}: sent as it is, as C{sock.sendto}
        # does, with the address parsed once per host and the GIL kept.
        self.send_to: Callable[[bytes, Any], object] = partial(mmsg.send_to, self._fd, self._family)

    def replier(self, prefix: bytes, suffix: bytes) -> Callable[[bytes, Any], int]:
        """
        C{reply(datagram, address)}: sends C{prefix}, the datagram without
        its trailing CR/LF, C{suffix} and that CR/LF, to C{address} (a
        numeric address of the socket's family, as L{recv} gives them),
        without waiting; how many bytes went, or C{OSError}.  It is the
        greeter's reply as C{udp.py} makes it in Python, made without a
        Python object per reply and sent without the socket module's
        address parsing: 5-12% of the CPU per datagram in A/B runs.
        """
        return partial(self._mmsg.send_reply, self._fd, self._family, prefix, suffix)


def reader(sock: Any, size: int, mmsg: ModuleType | None = None) -> Callable[[], bytes | None]:
    """
    C{read()} for a connected datagram socket: its next datagram (at most
    C{size} bytes), L{None} when nothing is ready, C{OSError} for an error
    (an ICMP refusal).  The accelerator's reads into its one buffer; the
    socket's own C{recv} allocates C{size} bytes per call and raises for
    "nothing ready", which is most of a UDP proxy session's read.
    """
    mmsg = mmsg or accelerator()
    if mmsg is not None and isinstance(sock, socket.socket) and sock.type == socket.SOCK_DGRAM:
        return partial(mmsg.recv_one, sock.fileno(), size)
    recv = sock.recv

    def read() -> bytes | None:
        try:
            return recv(size)
        except BlockingIOError:
            return None

    return read


def batches(sock: Any, mmsg: ModuleType | None = None) -> SocketBatches | AcceleratedBatches:
    """
    The fastest batches there are for C{sock}: the accelerator's (C{mmsg},
    by default the built one) on a UDP socket over IPv4 or IPv6, else the
    socket's own calls.
    """
    mmsg = mmsg or accelerator()
    if (
        mmsg is not None
        and isinstance(sock, socket.socket)
        and sock.type == socket.SOCK_DGRAM
        and sock.family in (socket.AF_INET, socket.AF_INET6)
    ):
        return AcceleratedBatches(sock, mmsg)
    return SocketBatches(sock)
