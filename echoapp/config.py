"""
What a service is told to do: the greeter's messages and framing, and the
TCP and UDP limits, as frozen dataclasses.

Each field's default and help text live here only: the plugins' command-line
options are derived from these fields (L{echoapp._tap.common}), so C{--help},
the builders in L{echoapp.services} and a C{.tac} file's defaults cannot
drift apart.  The option for a field is its name with dashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from echoapp._framing import Framing
from echoapp._peers import DEFAULT_IPV6_PREFIX
from echoapp.template import DEFAULT_REPLY, ReplyTemplate

__all__ = ["GreeterConfig", "TCPLimits", "UDPLimits"]


@dataclass(frozen=True)
class GreeterConfig:
    """
    Everything a greeter connection says.  An empty C{banner}, C{farewell} or
    C{exit_word} switches that part off.
    """

    banner: bytes = field(default=b"Welcome!", metadata={"help": "Line sent on connect ('' for none)."})
    reply: ReplyTemplate = field(
        default=DEFAULT_REPLY,
        metadata={
            "help": "Reply template; exactly one {} stands for the message.",
            # Bytes the template adds to a message: over UDP that is the
            # amplification ((28 + 256) / 28, about 10x, at most).
            "max": 256,
        },
    )
    exit_word: bytes = field(
        default=b"exit", metadata={"help": "Message that closes the connection ('' for none)."}
    )
    farewell: bytes = field(
        default=b"Goodbye!", metadata={"help": "Line sent before closing on the exit word ('' for none)."}
    )
    framing: Framing = field(
        default=Framing.AUTO, metadata={"help": "auto, line or raw: how bytes become messages (see README)."}
    )
    max_line_length: int = field(
        default=64 * 1024,
        metadata={
            "help": "Longest message in bytes; a longer one gets an error line and the connection is closed.",
            # A line is held whole until its LF comes: the bound keeps what one
            # client can make the server hold to a few MiB.
            "max": 1024 * 1024,
        },
    )

    def too_long_error(self) -> bytes:
        """
        The error line for a too-long message: it names the limit, so a
        client's author knows what to change.
        """
        return b"ERROR: line too long (limit %d bytes)\r\n" % self.max_line_length


@dataclass(frozen=True)
class TCPLimits:
    """Per-service connection limits and timeouts, in connections and seconds."""

    max_connections: int = field(
        default=10_000, metadata={"help": "Open connections per service; more are refused."}
    )
    max_per_peer: int = field(
        default=100, metadata={"help": "Open connections per source address; more are refused."}
    )
    idle_timeout: float = field(
        default=300.0, metadata={"help": "Seconds of silence before a connection is closed."}
    )
    line_timeout: float = field(
        default=30.0, metadata={"help": "Seconds to finish a line once its first byte arrived."}
    )
    session_timeout: float = field(default=3600.0, metadata={"help": "Seconds any one connection may last."})
    close_grace: float = field(
        default=5.0,
        metadata={
            "help": "Seconds a closing connection (timeout, exit, shutdown) gets before it is aborted."
        },
    )
    ipv6_prefix: int = field(
        default=DEFAULT_IPV6_PREFIX,
        metadata={
            "help": "IPv6 peers are counted per prefix of this length (a host owns a /64).",
            "max": 128,
        },
    )


@dataclass(frozen=True)
class UDPLimits:
    """
    Replies per second per source address and for the whole port, and how
    many sources the rate table remembers.
    """

    rate: float = field(default=50.0, metadata={"help": "Replies per second to one source address."})
    burst: int = field(
        default=100, metadata={"help": "Replies one source may get at once before --rate applies."}
    )
    global_rate: float = field(
        default=10_000.0, metadata={"help": "Replies per second to all sources together."}
    )
    max_sources: int = field(default=65_536, metadata={"help": "Source addresses the rate table remembers."})
    ipv6_prefix: int = field(
        default=DEFAULT_IPV6_PREFIX,
        metadata={"help": "IPv6 sources are rate-limited per prefix of this length.", "max": 128},
    )
