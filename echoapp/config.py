"""
What a service is told to do: the greeter's messages and framing, and the
TCP and UDP limits, as frozen dataclasses.

Each field's default, help text and rules live here only (its kind, from
L{echoapp._fields}): the plugins' command-line options are derived from these
fields (L{echoapp._tap.common}), and every instance checks itself when made,
so C{--help}, the builders in L{echoapp.services}, a C{.tac} file and the
test peer cannot drift apart or accept what another refuses.  The option for
a field is its name with dashes.
"""

from __future__ import annotations

from dataclasses import dataclass

from echoapp._fields import TEXT, choice, count, seconds, spec, template, validate
from echoapp._framing import Framing
from echoapp._peers import DEFAULT_IPV6_PREFIX
from echoapp._tac import one_line_in_tac
from echoapp.template import DEFAULT_REPLY, ReplyTemplate

__all__ = ["Framing", "GreeterConfig", "MetricsLimits", "TCPLimits", "UDPLimits"]


@dataclass(frozen=True)
class GreeterConfig:
    """
    Everything a greeter connection says.  An empty C{banner}, C{farewell} or
    C{exit_word} switches that part off.  Text is accepted for the bytes
    fields and for C{reply}; a bad value raises L{ValueError} naming the field.
    """

    banner: bytes = spec(b"Welcome!", TEXT, "Line sent on connect ('' for none).")
    # Bytes the template adds to a message: over UDP that is the
    # amplification ((28 + 256) / 28, about 10x, at most).
    reply: ReplyTemplate = spec(
        DEFAULT_REPLY, template(256), "Reply template; exactly one {} stands for the message."
    )
    exit_word: bytes = spec(b"exit", TEXT, "Message that closes the connection ('' for none).")
    farewell: bytes = spec(b"Goodbye!", TEXT, "Line sent before closing on the exit word ('' for none).")
    framing: Framing = spec(
        Framing.AUTO, choice(Framing, "framing"), "auto, line or raw: how messages are cut (see the docs)."
    )
    # A line is held whole until its LF comes: the bound keeps what one
    # client can make the server hold to a few MiB.
    max_line_length: int = count(
        64 * 1024,
        "Longest message in bytes; a longer one gets an error line and the connection is closed.",
        most=1024 * 1024,
    )

    @one_line_in_tac
    def __post_init__(self) -> None:
        validate(self)

    def too_long_error(self) -> bytes:
        """
        The error line for a too-long message: it names the limit, so a
        client's author knows what to change.
        """
        return b"ERROR: line too long (limit %d bytes)\r\n" % self.max_line_length

    @property
    def exit_match(self) -> bytes | None:
        """
        What a message (without its line end) must equal to be the exit
        word: the one rule for every path, as a value compared with C{==}
        so the per-line fast path costs no call.  L{None} when the exit word
        is off, so that an empty message never ends the conversation.
        """
        return self.exit_word or None


@dataclass(frozen=True)
class TCPLimits:
    """
    Per-service connection limits and timeouts, in connections and seconds.
    A bad value raises L{ValueError} naming the field, as the command line does.
    """

    max_connections: int = count(10_000, "Open connections per service; more are refused.")
    max_per_peer: int = count(100, "Open connections per source address; more are refused.")
    idle_timeout: float = seconds(300.0, "Seconds of silence before a connection is closed.")
    line_timeout: float = seconds(30.0, "Seconds to finish a line once its first byte arrived.")
    session_timeout: float = seconds(3600.0, "Seconds any one connection may last.")
    close_grace: float = seconds(
        5.0,
        "Seconds a closing connection (timeout, exit, shutdown) gets before it is aborted.",
    )
    ipv6_prefix: int = count(
        DEFAULT_IPV6_PREFIX, "IPv6 peers are counted per prefix of this length (a host owns a /64).", most=128
    )
    proxy_header_timeout: float = seconds(
        5.0, "haproxy: listeners: seconds for a whole PROXY header; then closed."
    )
    proxy_silent_after: float = seconds(
        1.0,
        "haproxy: listeners: seconds a connection may wait for its header before it counts against "
        "its own address's --max-per-peer (before, it counts against no address, so a balancer's "
        "burst is not one greedy client).",
    )

    @one_line_in_tac
    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class UDPLimits:
    """
    Replies per second per source address and for the whole port, and how
    many sources the rate table remembers.  A bad value raises L{ValueError}.
    """

    rate: float = seconds(50.0, "Replies per second to one source address.")
    burst: int = count(100, "Replies one source may get at once before --rate applies.")
    global_rate: float = seconds(10_000.0, "Replies per second to all sources together.")
    max_sources: int = count(65_536, "Source addresses the rate table remembers.")
    ipv6_prefix: int = count(
        DEFAULT_IPV6_PREFIX, "IPv6 sources are rate-limited per prefix of this length.", most=128
    )

    @one_line_in_tac
    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class MetricsLimits:
    """
    The C{--metrics} listener's own limits: it serves a scraper and a load
    balancer's probes, not the public, and nothing done to it may cost the
    service its clients.  A bad value raises L{ValueError} naming the field.
    """

    metrics_max_connections: int = count(
        64, "Connections to the --metrics listener; more are closed at once."
    )
    metrics_probe_slots: int = count(
        4,
        "Connections past --metrics-max-connections that may each ask for /healthz once, so that "
        "clients holding every connection cannot keep a balancer's probe out.",
    )
    metrics_max_requests: int = count(
        100, "Requests one --metrics connection may make; the last answer closes it."
    )
    metrics_head_timeout: float = seconds(
        10.0,
        "Seconds for a whole request head on --metrics (or for a client to read its answer).",
    )

    @one_line_in_tac
    def __post_init__(self) -> None:
        validate(self)
