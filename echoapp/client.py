"""
echoapp-client: talk to every echoapp service (and any plain-text TCP
service) from the command line, one-shot or interactively.

Errors are one line on stderr and a documented exit status, never a
traceback: L{EXIT_USAGE} for a mistake on the command line,
L{EXIT_CONNECTION} when the connection fails or the server hangs up early,
L{EXIT_TIMEOUT} when no reply comes in time.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet import defer, error, stdio, task
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

DEFAULT_TCP = "tcp:127.0.0.1:9999"
DEFAULT_ECHO = "tcp:127.0.0.1:10888"
DEFAULT_UDP = "127.0.0.1:9999"


class ClientError(Exception):
    """A failure the user should read about in one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- command line -----------------------------------------------------------


class _Mode(usage.Options):
    def parseArgs(self, *messages: str) -> None:
        self["messages"] = list(messages)


class TCPOptions(_Mode):
    synopsis = "[--connect ENDPOINT] [MESSAGE ...]"
    longdesc = (
        "Talk to echoapp-tcp: print the banner, send each MESSAGE as a line and print its reply, then send "
        "the exit word and wait for the server to close. With no MESSAGE, each line of standard input is "
        "sent and its reply printed; end of input sends the exit word."
    )
    optParameters = [
        ["connect", "c", DEFAULT_TCP, "Client endpoint string (tcp:, tcp6:, unix:, tls:)."],
        ["exit-word", None, "exit", "Sent at the end."],
        ["timeout", "t", "10", "Seconds to wait for each reply."],
        ["ca", None, None, "PEM file of the CA that signed the server's certificate (TLS)."],
    ]


class UDPOptions(_Mode):
    synopsis = "[--to HOST:PORT] [MESSAGE ...]"
    longdesc = (
        "Talk to echoapp-udp: send each MESSAGE as a datagram and print the reply, retrying a lost "
        "datagram. With no MESSAGE, each line of standard input is a datagram; a line 'bye' ends."
    )
    optParameters = [
        ["to", None, DEFAULT_UDP, "HOST:PORT of the server ([ADDRESS]:PORT for IPv6)."],
        ["timeout", "t", "2", "Seconds to wait for a reply before sending again."],
        ["retries", "r", "3", "How many times to send a datagram again."],
    ]


class EchoOptions(usage.Options):
    synopsis = "[--connect ENDPOINT]"
    longdesc = (
        "Stream standard input to echoapp-echo and what comes back to standard output, with flow control."
    )
    optParameters = [["connect", "c", DEFAULT_ECHO, "Client endpoint string."]]


class RawOptions(usage.Options):
    synopsis = "--connect ENDPOINT --send DATA"
    longdesc = (
        "Send DATA (with \\r, \\n, \\t, \\\\ and \\xNN escapes) and print everything the server sends "
        "until it closes: enough to speak a plain-text protocol such as HTTP/1.1 by hand."
    )
    optParameters = [
        ["connect", "c", None, "Client endpoint string."],
        ["send", "s", "", "What to send; escapes are understood."],
        ["timeout", "t", "30", "Seconds to wait for the server to close."],
    ]

    def postOptions(self) -> None:
        if not self["connect"]:
            raise usage.UsageError("raw needs --connect ENDPOINT")
        self["data"] = unescape(self["send"])


class Options(usage.Options):
    synopsis = "tcp|udp|echo|raw [options]"
    longdesc = (
        "The command-line client for echoapp's services. Exit status: 0 done, 2 usage error, "
        "3 connection failed or closed early, 4 timed out. 'echoapp-client MODE --help' for each mode."
    )
    subCommands = [
        ["tcp", None, TCPOptions, "Talk to the TCP greeter."],
        ["udp", None, UDPOptions, "Talk to the UDP greeter."],
        ["echo", None, EchoOptions, "Stream through the echo service."],
        ["raw", None, RawOptions, "Send bytes, print everything until the server closes."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name a mode: tcp, udp, echo or raw")
        sub = self.subOptions
        for name in ("timeout", "retries"):
            if name in sub:
                sub[name] = _positive(name, sub[name], integer=name == "retries")


def _positive(name: str, text: str, integer: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = -1
    if value < (0 if integer else 1e-9) or value != value:
        kind = "a whole number, 0 or more" if integer else "a positive number"
        raise usage.UsageError(f"--{name} must be {kind}, got {text!r}")
    return value


_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.DOTALL)
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\", b"0": b"\0"}


def unescape(text: str) -> bytes:
    """C{\\r}, C{\\n}, C{\\t}, C{\\0}, C{\\\\} and C{\\xNN} in C{text}, as bytes."""

    def replace(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if code.startswith(b"x") and len(code) == 3:
            return bytes([int(code[1:], 16)])
        if code in _SIMPLE:
            return _SIMPLE[code]
        raise usage.UsageError(f"--send: unknown escape \\{code.decode('utf-8', 'replace')}")

    return _ESCAPE.sub(replace, text.encode("utf-8", "surrogateescape"))


def parse_host_port(text: str) -> tuple[str, int]:
    """C{HOST:PORT} or C{[IPV6]:PORT}."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:]+):(\d+)", text)
    if not match:
        raise ClientError(EXIT_USAGE, f"--to {text!r}: expected HOST:PORT or [ADDRESS]:PORT")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ClientError(EXIT_USAGE, f"--to {text!r}: port must be at most 65535")
    return host, port


# --- plumbing ---------------------------------------------------------------


def _out(data: bytes) -> None:
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
            return f" ({_one_line(reason.value)})"
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
        if self._stdin is None:
            return self._given.pop(0) if self._given else None
        line = await self._stdin.lines.get()
        return None if line is not None and line == self._stop else line


def _endpoint(reactor: Any, description: str, ca: str | None = None) -> Any:
    try:
        endpoint = clientFromString(reactor, description)
    except Exception as problem:
        raise ClientError(EXIT_USAGE, f"bad endpoint {description!r}: {_one_line(problem)}") from None
    if ca is None:
        return endpoint
    try:
        from twisted.internet.endpoints import wrapClientTLS
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        with open(ca, "rb") as pem:
            authority = Certificate.loadPEM(pem.read())
        host = getattr(endpoint, "_hostText", None) or getattr(endpoint, "_host", "localhost")
        return wrapClientTLS(optionsForClientTLS(str(host), trustRoot=authority), endpoint)
    except (ImportError, NotImplementedError):
        raise ClientError(EXIT_USAGE, "--ca needs TLS support: pip install 'echoapp[tls]'") from None
    except OSError as problem:
        raise ClientError(EXIT_USAGE, f"--ca {ca!r}: {problem.strerror or problem}") from None


def _one_line(problem: BaseException) -> str:
    return " ".join(str(problem).split()) or type(problem).__name__


async def _connect(reactor: Any, description: str, protocol: Protocol, ca: str | None = None) -> Any:
    endpoint = _endpoint(reactor, description, ca)
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
            EXIT_CONNECTION, f"cannot connect to {description!r}: {_one_line(problem)}"
        ) from None


# --- the modes --------------------------------------------------------------


async def run_tcp(reactor: Any, options: usage.Options) -> None:
    connection = LineConnection(reactor, options["timeout"])
    await _connect(reactor, options["connect"], connection, options["ca"])
    banner = await connection.line("banner")
    if banner is None:
        raise ClientError(
            EXIT_CONNECTION, "the server closed the connection before its banner" + connection.why_closed()
        )
    _out(banner + b"\n")
    messages = Messages(reactor, options["messages"])
    while (message := await messages.next()) is not None:
        connection.send_line(message)
        reply = await connection.line("reply")
        if reply is None:
            raise ClientError(EXIT_CONNECTION, "the server closed the connection early")
        _out(reply + b"\n")
    exit_word = options["exit-word"].encode("utf-8", "surrogateescape")
    connection.send_line(exit_word)
    while (farewell := await connection.line("close after the exit word")) is not None:
        _out(farewell + b"\n")


class _UDPClient(DatagramProtocol):
    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.replies: defer.DeferredQueue[bytes] = defer.DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if (addr[0], addr[1]) == self.server:
            self.replies.put(datagram)


async def run_udp(reactor: Any, options: usage.Options) -> None:
    host, port = parse_host_port(options["to"])
    try:
        address = await reactor.resolve(host) if not _is_ipv6(host) else host
    except error.DNSLookupError:
        raise ClientError(EXIT_CONNECTION, f"unknown host {host!r}") from None
    client = _UDPClient((address, port))
    listening = reactor.listenUDP(0, client, interface="::" if _is_ipv6(address) else "")
    try:
        messages = Messages(reactor, options["messages"], stop=b"bye")
        while (message := await messages.next()) is not None:
            _out(await _exchange(reactor, listening, client, message, options) + b"\n")
    finally:
        await listening.stopListening()


def _is_ipv6(host: str) -> bool:
    return ":" in host


async def _exchange(
    reactor: Any, listening: Any, client: _UDPClient, message: bytes, options: usage.Options
) -> bytes:
    for _ in range(int(options["retries"]) + 1):
        try:
            listening.write(message, client.server)
        except Exception as problem:
            raise ClientError(
                EXIT_CONNECTION, f"cannot send to {options['to']}: {_one_line(problem)}"
            ) from None
        waiting = client.replies.get()
        waiting.addTimeout(options["timeout"], reactor)
        try:
            return await waiting
        except defer.TimeoutError:
            continue
    raise ClientError(
        EXIT_TIMEOUT, f"no reply from {options['to']} after {int(options['retries']) + 1} tries"
    )


class _Pipe(Protocol):
    """One side of echo mode: what arrives is written to the other side."""

    def __init__(self) -> None:
        self.peer: Any = None
        self.done: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.peer.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called:
            self.done.callback(None)


@implementer(IHalfCloseableProtocol)
class _StdinPipe(_Pipe):
    def readConnectionLost(self) -> None:
        # End of input: half-close, so the server still sends back the rest
        # while standard output stays open for it.
        self.peer.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        """Standard output went away; the connection's end follows."""


async def run_echo(reactor: Any, options: usage.Options) -> None:
    network = _Pipe()
    transport = (await _connect(reactor, options["connect"], network)).transport
    local = _StdinPipe()
    terminal = stdio.StandardIO(local, reactor=reactor)
    network.peer, local.peer = terminal, transport
    # Flow control both ways: neither side reads faster than the other writes.
    transport.registerProducer(terminal, True)
    terminal.registerProducer(transport, True)
    await network.done
    terminal.unregisterProducer()
    terminal.loseConnection()
    await local.done  # standard output flushed and closed


class _Collect(Protocol):
    def __init__(self) -> None:
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        _out(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)


async def run_raw(reactor: Any, options: usage.Options) -> None:
    collector = _Collect()
    connected = await _connect(reactor, options["connect"], collector)
    connected.transport.write(options["data"])
    closed = collector.closed
    closed.addTimeout(options["timeout"], reactor)
    try:
        await closed
    except defer.TimeoutError:
        raise ClientError(
            EXIT_TIMEOUT, f"the server did not close within {options['timeout']:g} seconds"
        ) from None


MODES = {"tcp": run_tcp, "udp": run_udp, "echo": run_echo, "raw": run_raw}


async def _main(reactor: Any, options: usage.Options) -> None:
    reactor.callWhenRunning(signal.signal, signal.SIGINT, _interrupted)
    try:
        await MODES[str(options.subCommand)](reactor, options.subOptions)
    except ClientError as problem:
        sys.stderr.write(f"echoapp-client: {problem}\n")
        raise SystemExit(problem.code) from None


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl-C: leave at once and quietly."""
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as problem:
        sys.stderr.write(f"echoapp-client: {problem}\n(echoapp-client --help for help)\n")
        raise SystemExit(EXIT_USAGE) from None
    task.react(_main, (options,))
