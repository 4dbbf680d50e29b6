"""
Resets that keep their promise: C{reset-after-bytes=N} sends exactly N
bytes and then an RST, so the reset waits until the transport (TLS,
uvloop) and the kernel (Nagle) have sent what they hold: an abort drops it.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Any

from twisted.internet.interfaces import ISSLTransport

from echoapp._record import record_of
from echoapp._twisted import below_wrappers

# How often a reset waits to see the transport's buffer flushed, and how
# long at most (a TLS handshake that never ends): then it resets anyway.
FLUSH_CHECK = 0.005
FLUSH_WAIT = 5.0
SIOCOUTQNSD = 0x894B  # Linux: bytes in a socket's send queue not yet sent


def socket_of(transport: Any) -> Any:
    """The socket under C{transport} (under TLS and any wrapper too), or L{None}."""
    transport = below_wrappers(transport)
    below = getattr(transport, "transport", None) if ISSLTransport.providedBy(transport) else None
    try:
        return (below if below is not None else transport).getHandle()
    except Exception:
        return None


def kernel_unsent(sock: Any) -> int:
    """
    Bytes the kernel holds unsent (Nagle holds a small write until the last
    is acknowledged): an RST would drop them.  Pushed first with
    C{TCP_NODELAY}; 0 where the kernel cannot tell.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:  # a UNIX socket: no Nagle, and no RST either
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0" * 4))[0])
    except Exception:
        return 0


def reset(transport: Any) -> None:
    """
    Close with an RST, not a FIN: SO_LINGER 0, then abort.  Under TLS, the
    connection below is reset: TLS's own abort sends a close alert first,
    which its client reads as a clean end.
    """
    record = record_of(transport)
    if record is not None:  # the abort goes below the recording wrapper, which would have said so
        record.closed("server", "RST")
    transport = below_wrappers(transport)  # a recording wrapper passes calls on; TLS is below it
    below = getattr(transport, "transport", None) if ISSLTransport.providedBy(transport) else None
    transport = below if below is not None else transport
    try:
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except Exception:  # not a socket (a test transport): the abort alone, an RST on TCP too
        pass
    transport.abortConnection()
