"""
What every client mode is built from: connecting with one-line errors, a
connection read line by line with a timeout, and the messages to send
(from the command line or standard input).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, error, stdio
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from echoapp._client.options import EXIT_CONNECTION, EXIT_TIMEOUT, EXIT_USAGE, ClientError
from echoapp._twisted import client_host


def out(data: bytes) -> None:
    """
    Write a reply to standard output as the bytes that came, flushed at once
    so a pipe sees each reply as it arrives.
    """
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class Lines(Protocol):
    """Whatever it is connected to, as a queue of lines; None at the end."""

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: defer.DeferredQueue[bytes | None] = defer.DeferredQueue()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.lines.put(line.rstrip(b"\r"))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason
        if self.buffer:
            self.lines.put(self.buffer)
            self.buffer = b""
        self.lines.put(None)


class LineConnection(Lines):
    """A client connection read line by line, with a timeout per line."""

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        super().__init__()
        self.clock = clock
        self.timeout = timeout

    def why_closed(self) -> str:
        """How the server went away, when that was not a clean close."""
        reason = self.reason
        if reason is None or reason.check(error.ConnectionDone):
            return ""
        if reason.check(error.ConnectionLost) is None:  # TLS errors and the like
            return f" ({one_line(reason.value)})"
        return ""

    async def line(self, what: str) -> bytes | None:
        """The next line, or None once the server has closed."""
        waiting = self.lines.get()
        waiting.addTimeout(self.timeout, self.clock)
        try:
            return await waiting
        except defer.TimeoutError:
            raise ClientError(EXIT_TIMEOUT, f"no {what} within {self.timeout:g} seconds") from None

    def send_line(self, line: bytes) -> None:
        """Send one message with its line end, as the tutorial's client does."""
        assert self.transport is not None
        self.transport.write(line + b"\n")


class Messages:
    """
    What to send: the messages on the command line or, if there are none,
    the lines of standard input (interactive use) until its end or, if
    given, a line equal to C{stop}.
    """

    def __init__(self, reactor: Any, arguments: Sequence[str], stop: bytes | None = None) -> None:
        self._given = [argument.encode("utf-8", "surrogateescape") for argument in arguments]
        self._stop = stop
        self._stdin: Lines | None = None
        if not self._given:
            self._stdin = Lines()
            stdio.StandardIO(self._stdin, reactor=reactor)

    async def next(self) -> bytes | None:
        """
        The next message to send, from the arguments or standard input;
        L{None} at their end, or at standard input's line equal to C{stop}.
        """
        if self._stdin is None:
            return self._given.pop(0) if self._given else None
        line = await self._stdin.lines.get()
        return None if line is not None and line == self._stop else line


# tcp:[ADDRESS]:PORT..., tcp6:[ADDRESS]:PORT..., tls:[ADDRESS]:PORT...
_BRACKETED = re.compile(r"^(tcp6?|tls):\[([^\]]+)\](?::(\d+))?(.*)$")


def client_description(description: str, ca: str | None) -> str:
    """
    A client endpoint string as Twisted takes it, from one as people write
    it: an IPv6 host in brackets (C{tcp:[::1]:9999}), and C{tcp6:}, which
    Twisted has only for servers (its C{tcp:} client connects to IPv6
    hosts).  With C{--ca}, a C{tls:} description is a C{tcp:} one that
    C{--ca} wraps in TLS: wrapping Twisted's C{tls:} would be TLS twice.
    """
    match = _BRACKETED.match(description)
    if match:
        kind, host, port, rest = match.groups()
        escaped = host.replace(":", "\\:")
        description = f"{kind}:host={escaped}" + (f":port={port}" if port else "") + rest
    kind, colon, rest = description.partition(":")
    if kind == "tcp6" or (kind == "tls" and ca is not None):
        description = f"tcp{colon}{rest}"
    return description


def endpoint_for(reactor: Any, description: str, ca: str | None = None) -> Any:
    """
    The client endpoint for C{host:port} or an endpoint string, with C{ca} as
    the trusted authority for TLS.
    """
    try:
        endpoint = clientFromString(reactor, client_description(description, ca))
    except Exception as problem:
        raise ClientError(EXIT_USAGE, f"bad endpoint {description!r}: {one_line(problem)}") from None
    if ca is None:
        return endpoint
    try:
        from twisted.internet.endpoints import wrapClientTLS
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        with open(ca, "rb") as pem:
            authority = Certificate.loadPEM(pem.read())
        host = client_host(endpoint, client_description(description, ca)) or "localhost"
        return wrapClientTLS(optionsForClientTLS(host, trustRoot=authority), endpoint)
    except (ImportError, NotImplementedError):
        raise ClientError(EXIT_USAGE, "--ca needs TLS support: pip install 'echoapp[tls]'") from None
    except OSError as problem:
        raise ClientError(EXIT_USAGE, f"--ca {ca!r}: {problem.strerror or problem}") from None


def one_line(problem: BaseException) -> str:
    """A failure as the one line the user sees: no traceback, no class path."""
    return " ".join(str(problem).split()) or type(problem).__name__


async def connect(reactor: Any, description: str, protocol: Protocol, ca: str | None = None) -> Any:
    """
    Connect C{protocol} to C{description}; each way it can fail is one
    L{ClientError} with its exit status.
    """
    endpoint = endpoint_for(reactor, description, ca)
    try:
        return await connectProtocol(endpoint, protocol)
    except error.DNSLookupError:
        raise ClientError(EXIT_CONNECTION, f"unknown host in {description!r}") from None
    except error.ConnectionRefusedError:
        raise ClientError(EXIT_CONNECTION, f"connection refused by {description!r}") from None
    except error.TimeoutError:
        raise ClientError(EXIT_TIMEOUT, f"connecting to {description!r} timed out") from None
    except Exception as problem:
        raise ClientError(
            EXIT_CONNECTION, f"cannot connect to {description!r}: {one_line(problem)}"
        ) from None
