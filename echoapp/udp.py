"""
The UDP greeter: each datagram gets one reply datagram to its sender.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echoapp.framing import split_terminator
from echoapp.template import DEFAULT_REPLY, ReplyTemplate

# The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP header bytes).
MAX_DATAGRAM = 65507
# What we ask the socket for: more than any datagram, so nothing is cut.
# (Twisted's default of 8192 truncates larger datagrams without a word.)
READ_SIZE = 65535


class UDPGreeter(DatagramProtocol):
    """
    Replies are built the way the TCP greeter builds them in raw framing:
    trailing CR/LF stripped and mirrored.  A reply that would not fit in one
    datagram is dropped: a truncated greeting would be a lie.
    """

    noisy = False
    log = Logger()
    transport: IUDPTransport  # set by makeConnection, before any datagram arrives

    def __init__(self, reply: ReplyTemplate = DEFAULT_REPLY) -> None:
        self.reply = reply
        self.dropped_oversized = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        message, terminator = split_terminator(datagram)
        reply = self.reply.render(message, terminator)
        if len(reply) > MAX_DATAGRAM:
            self.dropped_oversized += 1
            return
        self.transport.write(reply, addr)
