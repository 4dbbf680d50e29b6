"""
Option rules shared by several plugins, so each rule has one home: the
greeter's message options (used by echoapp-tcp and echoapp) and the
validation of listen descriptions.
"""

from __future__ import annotations

from twisted.python import usage

from echoapp.framing import Framing
from echoapp.greeter import DEFAULT_MAX_LINE_LENGTH, GreeterConfig
from echoapp.limits import TCPLimits, UDPLimits
from echoapp.listen import UDPListen, check_endpoint
from echoapp.template import DEFAULT_REPLY, ReplyTemplate, encode_text

GREETER_PARAMETERS = [
    ["banner", None, "Welcome!", "Line sent on connect ('' for none)."],
    ["reply", None, str(DEFAULT_REPLY), "Reply template; exactly one {} stands for the message."],
    ["exit-word", None, "exit", "Message that closes the connection ('' for none)."],
    ["farewell", None, "Goodbye!", "Line sent before closing on the exit word ('' for none)."],
    ["framing", None, Framing.AUTO.value, "auto, line or raw: how bytes become messages (see README)."],
    [
        "max-line-length",
        None,
        str(DEFAULT_MAX_LINE_LENGTH),
        "Longest message in bytes; a longer one gets an error line and the connection is closed.",
    ],
]


_TCP = TCPLimits()
_UDP = UDPLimits()


def _default(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


TCP_LIMIT_PARAMETERS = [
    [
        "max-connections",
        None,
        _default(_TCP.max_connections),
        "Open connections per service; more are refused.",
    ],
    [
        "max-per-peer",
        None,
        _default(_TCP.max_per_peer),
        "Open connections per source address; more are refused.",
    ],
    ["idle-timeout", None, _default(_TCP.idle_timeout), "Seconds of silence before a connection is closed."],
    ["session-timeout", None, _default(_TCP.session_timeout), "Seconds any one connection may last."],
    [
        "close-grace",
        None,
        _default(_TCP.close_grace),
        "Seconds a closing connection (timeout, exit, shutdown) gets before it is aborted.",
    ],
]
LINE_TIMEOUT_PARAMETERS = [
    [
        "line-timeout",
        None,
        _default(_TCP.line_timeout),
        "Seconds to finish a line once its first byte arrived.",
    ]
]
UDP_LIMIT_PARAMETERS = [
    ["rate", None, _default(_UDP.rate), "Replies per second to one source address."],
    ["burst", None, _default(_UDP.burst), "Replies one source may get at once before --rate applies."],
    ["global-rate", None, _default(_UDP.global_rate), "Replies per second to all sources together."],
    ["max-sources", None, _default(_UDP.max_sources), "Source addresses the rate table remembers."],
]


REUSE_PORT_FLAGS = [
    [
        "reuse-port",
        None,
        "Let other processes listen on the same TCP and UDP ports (SO_REUSEPORT), to run one per core.",
    ]
]

METRICS_PARAMETERS = [
    [
        "metrics",
        None,
        None,
        "Endpoint string for /metrics (Prometheus) and /healthz over HTTP; off unless given.",
    ]
]


def metrics_listen(options: usage.Options) -> str | None:
    description = options["metrics"]
    if description is None:
        return None
    try:
        return check_endpoint(description)
    except ValueError as error:
        raise usage.UsageError(f"--metrics: {error}") from None


class RepeatableListen:
    """
    A repeatable listen option: C{--NAME DESCRIPTION} given any number of
    times replaces the default.  Bound into an L{usage.Options} subclass as
    C{opt_NAME = RepeatableListen("NAME", DEFAULT).option()}.
    """

    def __init__(self, name: str, default: str, kind: str = "Endpoint string") -> None:
        self.name = name
        self.default = default
        self.kind = kind

    def option(self) -> object:
        key = self.name

        def opt(options: usage.Options, description: str) -> None:
            options.setdefault(key, []).append(description)

        opt.__doc__ = f"{self.kind} to listen on; repeatable [default: {self.default}]"
        return opt

    def given(self, options: usage.Options) -> list[str]:
        return list(options.get(self.name, [])) or [self.default]


def stream_listens(option: RepeatableListen, options: usage.Options) -> list[str]:
    reuse_port = bool(options.get("reuse-port"))
    try:
        return [check_endpoint(description, reuse_port) for description in option.given(options)]
    except ValueError as error:
        raise usage.UsageError(f"--{option.name}: {error}") from None


def udp_listens(option: RepeatableListen, options: usage.Options) -> list[UDPListen]:
    try:
        return [UDPListen.parse(description) for description in option.given(options)]
    except ValueError as error:
        raise usage.UsageError(f"--{option.name}: {error}") from None


def reply_template(options: usage.Options) -> ReplyTemplate:
    try:
        return ReplyTemplate.parse(options["reply"])
    except ValueError as error:
        raise usage.UsageError(f"--reply: {error}") from None


def _framing(text: str) -> Framing:
    try:
        return Framing(text)
    except ValueError:
        choices = ", ".join(framing.value for framing in Framing)
        raise usage.UsageError(f"--framing: unknown framing {text!r} (choose one of {choices})") from None


def _positive(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise usage.UsageError(f"--{name}: must be a positive whole number, got {text!r}")
    return value


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise usage.UsageError(f"--{name}: must be a positive number, got {text!r}")
    return value


def tcp_limits(options: usage.Options) -> TCPLimits:
    """The L{TCPLimits} that C{TCP_LIMIT_PARAMETERS} (and the line timeout, if offered) describe."""
    return TCPLimits(
        max_connections=_positive("max-connections", options["max-connections"]),
        max_per_peer=_positive("max-per-peer", options["max-per-peer"]),
        idle_timeout=_seconds("idle-timeout", options["idle-timeout"]),
        line_timeout=_seconds("line-timeout", options.get("line-timeout", _default(_TCP.line_timeout))),
        session_timeout=_seconds("session-timeout", options["session-timeout"]),
        close_grace=_seconds("close-grace", options["close-grace"]),
    )


def udp_limits(options: usage.Options) -> UDPLimits:
    return UDPLimits(
        rate=_seconds("rate", options["rate"]),
        burst=_positive("burst", options["burst"]),
        global_rate=_seconds("global-rate", options["global-rate"]),
        max_sources=_positive("max-sources", options["max-sources"]),
    )


def greeter_config(options: usage.Options) -> GreeterConfig:
    """The L{GreeterConfig} that C{GREETER_PARAMETERS} describe."""
    return GreeterConfig(
        banner=encode_text(options["banner"]),
        reply=reply_template(options),
        exit_word=encode_text(options["exit-word"]),
        farewell=encode_text(options["farewell"]),
        framing=_framing(options["framing"]),
        max_line_length=_positive("max-line-length", options["max-line-length"]),
    )
