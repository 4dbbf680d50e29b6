"""
The UDP proxy's session sockets: one per client source, connected to the
upstream, never to itself.
"""

from __future__ import annotations

import errno
import socket
from ipaddress import ip_address


def session_socket(upstream: tuple[str, int]) -> socket.socket:
    """
    A non-blocking datagram socket connected to C{upstream} (no packet is
    sent).  Never one connected to itself: with the upstream down and its
    port in the ephemeral range, the kernel may give a session that very
    port, and the session then echoed its client's datagrams and kept the
    upstream from starting again; such a socket is made again.
    """
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    for _attempt in range(3):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(upstream)
            local = sock.getsockname()
        except BaseException:
            sock.close()
            raise
        if local[1] != upstream[1] or ip_address(local[0]) != ip_address(upstream[0]):
            return sock
        sock.close()
    raise OSError(errno.EADDRINUSE, f"every session socket to {upstream} was connected to itself")


def closed_read() -> None:
    """A closed session's read: nothing (its reader held the descriptor's number, maybe reused)."""
    return None
