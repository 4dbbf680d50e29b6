"""
echoapp-client's command line: the modes and their options, the exit
statuses, and the small parsers for what a user types (escapes, HOST:PORT).
"""

from __future__ import annotations

import re

from twisted.python import usage

import echoapp
import twisted

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


def options_first(args: list[str], takes_value: set[str]) -> list[str]:
    """
    C{args} with every option before every message, as command-line tools
    usually take them (C{udp hello --to HOST:PORT}); Twisted's parser stops
    at the first message.  C{--} ends the options: what follows is a message
    even if it starts with a dash.
    """
    options: list[str] = []
    messages: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            messages.extend(rest)
        elif arg.startswith("-") and arg != "-":
            options.append(arg)
            if arg in takes_value:
                value = next(rest, None)
                if value is None:
                    raise usage.UsageError(f"option {arg} needs a value")
                options.append(value)
        else:
            messages.append(arg)
    return [*options, "--", *messages]


class _Mode(usage.Options):
    """A mode that sends messages: options may come before or after them."""

    optParameters: list[list[str | None]] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        takes_value = {f"--{long}" for long, *_ in self.optParameters}  # every parameter takes one
        takes_value |= {f"-{short}" for _, short, *_ in self.optParameters if short}
        super().parseOptions(options_first(list(options or []), takes_value))

    def parseArgs(self, *messages: str) -> None:
        self["messages"] = list(messages)


class TCPOptions(_Mode):
    """
    C{echoapp-client tcp}: talk to the greeter line by line, from arguments
    or standard input.
    """

    synopsis = "[--connect ENDPOINT] [MESSAGE ...]"
    longdesc = (
        "Talk to echoapp-tcp: print the banner, send each MESSAGE as a line and print its reply, then send "
        "the exit word and wait for the server to close. With no MESSAGE, each line of standard input is "
        "sent and its reply printed; end of input sends the exit word."
    )
    optParameters = [
        [
            "connect",
            "c",
            DEFAULT_TCP,
            "Client endpoint string (tcp:, tcp6:, unix:, tls:; [ADDRESS] for IPv6).",
        ],
        ["exit-word", None, "exit", "Sent at the end."],
        ["timeout", "t", "10", "Seconds to wait for each reply."],
        ["ca", None, None, "PEM file of the CA that signed the server's certificate (TLS)."],
    ]


class UDPOptions(_Mode):
    """
    C{echoapp-client udp}: one datagram per message, one reply awaited for
    each.
    """

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
    """
    C{echoapp-client echo}: send standard input, half-close, and print
    everything echoed back.
    """

    synopsis = "[--connect ENDPOINT]"
    longdesc = (
        "Stream standard input to echoapp-echo and what comes back to standard output, with flow control."
    )
    optParameters = [["connect", "c", DEFAULT_ECHO, "Client endpoint string."]]


class RawOptions(usage.Options):
    """
    C{echoapp-client raw}: bytes both ways, like C{nc}, for any stream
    endpoint.
    """

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
    """
    The client's top-level options: the mode, where to connect, and the
    timeouts every mode shares.
    """

    synopsis = "Usage: echoapp-client tcp|udp|echo|raw [options]"
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

    def opt_version(self) -> None:
        """Print echoapp's version (and Twisted's), then exit."""
        print(f"echoapp-client {echoapp.__version__} (Twisted {twisted.__version__})")
        raise SystemExit(0)

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
