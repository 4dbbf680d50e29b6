"""
Option rules shared by several plugins, so each rule has one home.

The option rows for the greeter's messages and the TCP and UDP limits are
derived from the fields of L{echoapp.config}'s dataclasses (name, default,
help), and read back into those dataclasses by L{build}: a field added
there is an option here, with its default and validation, and nothing else
has to change.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Collection
from typing import Any, TypeVar

from twisted.application import app
from twisted.python import usage

from echoapp._faults import FaultPlan, Faults
from echoapp._framing import Framing
from echoapp._transports import eager
from echoapp._transports.endpoints import UDPListen, check_endpoint
from echoapp._transports.proxy_protocol import PREFIX, Network, parse_networks
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from echoapp.template import ReplyTemplate, encode_text

Config = TypeVar("Config")


def option_name(field_name: str) -> str:
    return field_name.replace("_", "-")


def _show(value: Any) -> str:
    """A default as C{--help} shows it and as it would be typed."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, Framing):
        return value.value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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


def _framing(name: str, text: str) -> Framing:
    try:
        return Framing(text)
    except ValueError:
        choices = ", ".join(framing.value for framing in Framing)
        raise usage.UsageError(f"--{name}: unknown framing {text!r} (choose one of {choices})") from None


def _template(name: str, text: str) -> ReplyTemplate:
    try:
        return ReplyTemplate.parse(text)
    except ValueError as error:
        raise usage.UsageError(f"--{name}: {error}") from None


def _parse(name: str, text: str, default: Any, most: int | None = None) -> Any:
    """
    C{text} given for option C{name}, read as the kind of value its default
    is, and held to C{most}: for a number its value, for a template the
    bytes it adds to a message.
    """
    if isinstance(default, bytes):
        return encode_text(text)
    if isinstance(default, ReplyTemplate):
        template = _template(name, text)
        if most is not None and template.overhead > most:
            raise usage.UsageError(
                f"--{name}: the template adds {template.overhead} bytes to each message; at most {most}"
            )
        return template
    if isinstance(default, Framing):
        return _framing(name, text)
    value = _positive(name, text) if isinstance(default, int) else _seconds(name, text)
    if most is not None and value > most:
        raise usage.UsageError(f"--{name}: at most {most}, got {text!r}")
    return value


def _help(field: dataclasses.Field[Any]) -> str:
    """The field's help, and its bound when it has one: the bound is part of the contract."""
    text = str(field.metadata["help"])
    most = field.metadata.get("max")
    if most is None:
        return text
    what = "bytes added to a message" if field.name == "reply" else "value"
    return f"{text} (Largest {what}: {most}.)"


def parameters(
    config: type[Any], only: Collection[str] | None = None, skip: Collection[str] = ()
) -> list[list[Any]]:
    """C{optParameters} rows for the fields of the dataclass C{config}."""
    defaults = config()
    return [
        [option_name(field.name), None, _show(getattr(defaults, field.name)), _help(field)]
        for field in dataclasses.fields(config)
        if (only is None or field.name in only) and field.name not in skip
    ]


def build(config: type[Config], options: usage.Options) -> Config:
    """
    An instance of the dataclass C{config} from the options a plugin
    offers; fields it does not offer keep their defaults.
    """
    defaults = config()
    given = {}
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        name = option_name(field.name)
        if name in options:
            given[field.name] = _parse(
                name, options[name], getattr(defaults, field.name), field.metadata.get("max")
            )
    return config(**given)


class PluginOptions(usage.Options):
    """
    The base of every echoapp plugin's options.  twistd answers a mistake
    with some forty lines of its own usage on standard output and the error
    last; under twistd, a mistake in a plugin's options is instead one line
    on standard error, naming the option, and a hint, and twistd exits 1.
    (C{twist} already puts the error first; echoapp-compose parses other
    plugins' options itself and names the C{--service}.)
    """

    def parseOptions(self, options: Any = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            parent = getattr(self, "parent", None)
            if not isinstance(parent, app.ServerOptions):
                raise
            name = f"twistd {parent.subCommand}"
            sys.stderr.write(f"{name}: {error}\n({name} --help lists every option)\n")
            raise SystemExit(1) from None


GREETER_PARAMETERS = parameters(GreeterConfig)
REPLY_PARAMETERS = parameters(GreeterConfig, only={"reply"})
TCP_LIMIT_PARAMETERS = parameters(TCPLimits, skip={"line_timeout"})
LINE_TIMEOUT_PARAMETERS = parameters(TCPLimits, only={"line_timeout"})
UDP_LIMIT_PARAMETERS = parameters(UDPLimits)

REUSE_PORT_FLAGS = [
    [
        "reuse-port",
        None,
        "Let other processes listen on the same TCP and UDP ports (SO_REUSEPORT), to run one per core.",
    ]
]

EAGER_WRITES_FLAGS = [
    [
        "no-eager-writes",
        None,
        "Write as Twisted's own transport does (queue, then send when the socket is writable), for "
        "the whole process; also ECHOAPP_EAGER_WRITES=0. For working around a problem in eager writes.",
    ]
]

LOG_CONNECTIONS_FLAGS = [
    [
        "log-connections",
        None,
        "Log every connection's open, close and timeout with its address and port. Off: only "
        "summaries, at most one line per 10 s each, so a flood of clients cannot grow the log.",
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


def opt_proxy_from(options: usage.Options, network: str) -> None:
    """
    An address or network (10.0.0.0/8) whose PROXY protocol headers a
    haproxy: listener believes; repeatable. Without it every sender is believed.
    """
    options.setdefault("proxy-from-texts", []).append(network)


def proxy_from(options: usage.Options, listens: list[str]) -> tuple[Network, ...]:
    """The C{--proxy-from} networks, which only mean something to C{haproxy:} listeners."""
    texts = options.get("proxy-from-texts", [])
    if texts and not any(listen.startswith(PREFIX) for listen in listens):
        raise usage.UsageError("--proxy-from: applies to haproxy: listeners, and there is none")
    try:
        return parse_networks(texts)
    except ValueError as error:
        raise usage.UsageError(f"--proxy-from: {error}") from None


def stream_listens(option: RepeatableListen, options: usage.Options) -> list[str]:
    reuse_port = bool(options.get("reuse-port"))
    if options.get("no-eager-writes"):
        eager.switch_off("--no-eager-writes")
    try:
        return [check_endpoint(description, reuse_port) for description in option.given(options)]
    except ValueError as error:
        raise usage.UsageError(f"--{option.name}: {error}") from None


def udp_listens(option: RepeatableListen, options: usage.Options) -> list[UDPListen]:
    try:
        return [UDPListen.parse(description) for description in option.given(options)]
    except ValueError as error:
        raise usage.UsageError(f"--{option.name}: {error}") from None


def opt_fault(options: usage.Options, spec: str) -> None:
    """
    Misbehave on purpose, for testing clients: KEY=VALUE[,KEY=VALUE...],
    repeatable (latency=50ms,jitter=10ms; bandwidth=16KB; slice=1,slice-delay=5ms;
    reset-after-bytes=N; reset-after=2s; half-close-after-bytes=N; slow-close=1s;
    stall=read|answer; refuse; stall-handshake; loss=P; duplicate=P; reorder=P;
    fraction=F; seed=N, printed at start).
    """
    options.setdefault("fault-texts", []).append(spec)


def fault_plan(options: usage.Options) -> FaultPlan | None:
    """The C{--fault} options as one plan, or L{None} without any (nothing is wrapped then)."""
    faults = Faults()
    for spec in options.get("fault-texts", []):
        try:
            faults = Faults.parse(spec, faults)
        except ValueError as error:
            raise usage.UsageError(f"--fault: {error}") from None
    if not options.get("fault-texts"):
        return None
    return FaultPlan(faults)
