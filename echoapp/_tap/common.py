"""
Option rules shared by several plugins, so each rule has one home.

The option rows for the greeter's messages and the TCP and UDP limits are
derived from the fields of L{echoapp.config}'s dataclasses (name, default,
help), and read back into those dataclasses by L{build}, which uses the
fields' own rules (L{echoapp._fields}): a field added there is an option
here, with its default and validation, and nothing else has to change.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Collection
from typing import Any, TypeVar, cast

from twisted.application import app
from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.python import usage

from echoapp import services, signals
from echoapp._faults import Faults, offered
from echoapp._fields import from_text, help_text, option_name, shown_default
from echoapp._record import Recorder
from echoapp._record.capture import CaptureFile
from echoapp._record.service import RecordTo
from echoapp._transports import eager
from echoapp._transports.endpoints import StreamListen, UDPListen, check_endpoint
from echoapp._transports.haproxy import Network, parse_networks
from echoapp._twisted import global_reactor
from echoapp.config import GreeterConfig, MetricsLimits, TCPLimits, UDPLimits

Config = TypeVar("Config")


def parameters(
    config: type[Any], only: Collection[str] | None = None, skip: Collection[str] = ()
) -> list[list[Any]]:
    """C{optParameters} rows for the fields of the dataclass C{config}: name, default and help."""
    return [
        [option_name(field.name), None, shown_default(field), help_text(field)]
        for field in dataclasses.fields(config)
        if (only is None or field.name in only) and field.name not in skip
    ]


def build(config: type[Config], options: usage.Options) -> Config:
    """
    An instance of the dataclass C{config} from the options a plugin
    offers; fields it does not offer keep their defaults.  The rules are the
    fields' own (L{echoapp._fields}): the command line refuses exactly what
    the dataclass refuses, with the option's name in front.
    """
    texts = {
        field.name: options[option_name(field.name)]
        for field in dataclasses.fields(config)  # type: ignore[arg-type]
        if option_name(field.name) in options
    }
    try:
        return from_text(config, texts)
    except ValueError as error:
        raise usage.UsageError(f"--{error}") from None


class PluginOptions(usage.Options):
    """
    The base of every echoapp plugin's options.  twistd answers a mistake
    with some forty lines of its own usage on standard output and the error
    last; under twistd, a mistake in a plugin's options is instead one line
    on standard error, naming the option, and a hint, and twistd exits 1.
    (C{twist} already puts the error first; echoapp-compose parses other
    plugins' options itself and names the C{--service}.)
    """

    synopsis = "[options]"

    def __init__(self) -> None:
        super().__init__()
        # An opt_ method's docstring is its help; usage keeps the source's
        # indentation inside it, which --help would show as runs of spaces.
        self.docs = {name: " ".join(text.split()) for name, text in self.docs.items()}

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

    def read_faults_and_metrics(self) -> None:
        """
        C{--fault} as one value, C{--metrics} checked, and C{--record} where
        the plugin offers it: first, as every plugin does.
        """
        self["faults"] = faults_given(self)
        self["metrics-listen"] = metrics_listen(self)
        if "record" in self:
            self["record-to"] = record_given(self)


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

RECORD_PARAMETERS = [
    [
        "record",
        None,
        None,
        "Record every connection and datagram, with what each fault did, to this pcapng file "
        "(Wireshark, tshark); off unless given.",
    ],
    ["record-max-size", None, "16MB", "Rotate the --record file past this size (FILE.1, ...); 0: never."],
    ["record-keep", None, "3", "Rotated --record files kept beside the current one."],
]

SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1 << 10,
    "K": 1 << 10,
    "MB": 1 << 20,
    "M": 1 << 20,
    "GB": 1 << 30,
    "G": 1 << 30,
}


def record_given(options: usage.Options) -> RecordTo | None:
    """C{--record} and its rotation as one value, checked, or L{None} when recording is off."""
    path = options["record"]
    if path is None:
        return None
    size = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(options["record-max-size"]))
    if size is None or size.group(2).upper() not in SIZE_UNITS:
        raise usage.UsageError(
            f"--record-max-size: {options['record-max-size']!r} is not a size such as 16MB"
        )
    keep = str(options["record-keep"]).strip()
    if not keep.isdigit():
        raise usage.UsageError(f"--record-keep: {options['record-keep']!r} is not a whole number")
    if not path.strip():
        raise usage.UsageError("--record: needs a file name")
    return RecordTo(path, int(size.group(1)) * SIZE_UNITS[size.group(2).upper()], int(keep))


def recording(tree: MultiService, options: usage.Options, reactor: IReactorTime | None) -> MultiService:
    """
    C{tree}, recording to the C{--record} file when one was given (each
    listener wrapped, the file opened when the service starts), else as
    it is: no wrapper at all.  The file is the daemon's only reader of
    its records (echoapp-proxy, whose API serves them, makes its own), so
    the records in memory keep events, not bytes: the bytes go to the
    file without being folded into a memory nobody reads.
    """
    record_to: RecordTo | None = options.get("record-to")
    if record_to is None:
        return tree
    capture = CaptureFile(record_to.path, record_to.max_bytes, record_to.keep)
    return services.recorded(tree, Recorder(reactor or global_reactor(), keep_bytes=False), capture)


METRICS_PARAMETERS = [
    [
        "metrics",
        None,
        None,
        "Endpoint string for /metrics (Prometheus) and /healthz over HTTP; off unless given.",
    ],
    *parameters(MetricsLimits),
]


def metrics_listen(options: usage.Options) -> str | None:
    """
    The C{--metrics} endpoint, checked while options are parsed; L{None} when
    metrics are off.  Its limits are read here too, into C{metrics-limits}.
    """
    options["metrics-limits"] = build(MetricsLimits, options)
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
    C{opt_NAME = RepeatableListen("NAME", DEFAULT).option()}, or by
    L{ListenOptions} for a plugin's one C{--listen}.
    """

    def __init__(self, name: str, default: str, kind: str = "Endpoint string") -> None:
        self.name = name
        self.default = default
        self.kind = kind

    def option(self) -> object:
        """
        The C{opt_NAME} method for an L{usage.Options} subclass, with its
        help text.
        """
        key = self.name

        def opt(options: usage.Options, description: str) -> None:
            options.setdefault(key, []).append(description)

        opt.__doc__ = f"{self.kind} to listen on; repeatable [default: {self.default}]"
        return opt

    def given(self, options: usage.Options) -> list[str]:
        """
        The descriptions given on the command line, or the default when none
        was.
        """
        return list(options.get(self.name, [])) or [self.default]


class ListenOptions(PluginOptions):
    """
    The options of a plugin that listens where one repeatable C{--listen}
    says (echoapp-tcp, echoapp-echo, echoapp-udp): the plugin names its
    L{RepeatableListen} as C{LISTEN}, and the option, with the plugin's own
    default in its help, is bound here once; C{postOptions} reads
    C{self.LISTEN}.
    """

    LISTEN: RepeatableListen
    opt_listen: object  # bound by __init_subclass__, from LISTEN

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "LISTEN" in vars(cls):
            cls.opt_listen = cls.LISTEN.option()


def opt_proxy_from(options: usage.Options, network: str) -> None:
    """
    An address or network (10.0.0.0/8) whose PROXY protocol headers a
    haproxy: listener believes; repeatable. Without it every sender is believed.
    """
    options.setdefault("proxy-from-texts", []).append(network)


def _proxy_from(options: usage.Options) -> tuple[Network, ...]:
    try:
        return parse_networks(options.get("proxy-from-texts", []))
    except ValueError as error:
        raise usage.UsageError(f"--proxy-from: {error}") from None


def stream_listens(option: RepeatableListen, options: usage.Options) -> list[StreamListen]:
    """The listeners an option names, each a whole description: reuse-port and PROXY trust included."""
    reuse_port = bool(options.get("reuse-port"))
    proxy_from = _proxy_from(options)
    try:
        return [StreamListen.parse(text, reuse_port, proxy_from) for text in option.given(options)]
    except ValueError as error:
        raise usage.UsageError(f"--{option.name}: {error}") from None


def check_proxy_from(options: usage.Options, listens: list[StreamListen]) -> None:
    """C{--proxy-from} only means something to C{haproxy:} listeners: without one it is a mistake."""
    if options.get("proxy-from-texts") and not any(listen.proxy for listen in listens):
        raise usage.UsageError("--proxy-from: applies to haproxy: listeners, and there is none")


def udp_listens(option: RepeatableListen, options: usage.Options) -> list[UDPListen]:
    """The UDP ports an option names, with C{--reuse-port}."""
    reuse_port = bool(options.get("reuse-port"))
    try:
        return [UDPListen.parse(description, reuse_port) for description in option.given(options)]
    except ValueError as error:
        raise usage.UsageError(f"--{option.name}: {error}") from None


def stream_arguments(options: usage.Options, reactor: IReactorTime | None) -> dict[str, Any]:
    """What every TCP-serving plugin passes its service builder, read from its options."""
    return {
        "limits": options["limits"],
        "faults": options["faults"],
        "reactor": reactor,
        "log_connections": bool(options["log-connections"]),
    }


def serve(
    tree: Callable[[usage.Options, IReactorTime], MultiService], options: usage.Options
) -> MultiService:
    """
    What a plugin's C{makeService} returns: its service C{tree}, made with
    the reactor twistd has installed, taken here once and handed down (as
    C{strports.service} takes it), with the process parts around it.
    """
    reactor: IReactorTime = global_reactor()
    switch_for_the_process(options)
    return process_service(tree(options, reactor), options, reactor)


def switch_for_the_process(options: usage.Options) -> None:
    """
    What an option switches for the whole process (C{--no-eager-writes}):
    done when the service is made, never while options are parsed, which
    only read values.
    """
    if options.get("no-eager-writes"):
        eager.switch_off("--no-eager-writes")


def process_service(
    tree: MultiService, options: usage.Options, reactor: IReactorTime | None = None
) -> MultiService:
    """
    The parts that exist once per process, added by the top of the tree:
    signal handling (SIGHUP, SIGUSR1, a second SIGTERM) and, with
    C{--metrics}, the metrics and health listener.  Each plugin's
    C{makeService} adds them around its bare C{service_tree}; under
    C{echoapp-compose}, compose adds them once around all the trees.
    """
    if options["metrics-listen"] is not None:
        # Imported only when asked: prometheus_client's Twisted support and
        # twisted.web cost a process without --metrics its start-up time.
        from echoapp import _monitor

        limits = options.get("metrics-limits")
        tree = _monitor.monitored(tree, options["metrics-listen"], reactor, limits=limits)
    return signals.handled(tree, cast(IReactorCore, reactor))


def opt_fault(options: usage.Options, spec: str) -> None:
    """
    Misbehave on purpose, for testing clients: KEY=VALUE[,KEY=VALUE...],
    repeatable (latency=50ms,jitter=10ms; bandwidth=16KB; slice=1,slice-delay=5ms;
    slice-variation=N; reset-after-bytes=N; reset-after=2s; close-after=2s;
    half-close-after-bytes=N; slow-close=1s;
    stall=read|answer; refuse; stall-handshake; read-latency=50ms; read-bandwidth=1KB;
    loss=P; duplicate=P; reorder=P; fraction=F; seed=N, printed at start; and the
    conditions first=N, after-messages=N, active-from=1s, active-until=5s, match=TEXT).
    """
    options.setdefault("fault-texts", []).append(spec)


def check_faults(options: usage.Options, streams: Any = (), datagrams: bool = False) -> None:
    """A C{--fault} that nothing of this service could apply is refused, in one line."""
    faults = options["faults"]
    if faults is not None:
        try:
            faults.check_applies(*offered(streams, datagrams))
        except ValueError as error:
            raise usage.UsageError(f"--fault: {error}") from None


def faults_given(options: usage.Options) -> Faults | None:
    """
    The C{--fault} options as one value, or L{None} without any (nothing is
    wrapped then): a value, not a plan, as options hold values; the
    service builds its plan when the reactor is there.
    """
    texts = options.get("fault-texts", [])
    if not texts:
        return None
    try:
        # One parse of them all, so that their order does not matter
        # (slice-variation= is checked against slice= wherever it is given).
        faults = Faults.parse(",".join(texts))
    except ValueError as error:
        raise usage.UsageError(f"--fault: {error}") from None
    return faults


class ServingOptions(PluginOptions):
    """
    What every plugin serving TCP shares on its command line: reuse-port,
    connection logs, eager writes, PROXY trust (C{--proxy-from}) and faults
    (C{--fault}); L{check_streams} is the step each C{postOptions} takes
    after L{PluginOptions.read_faults_and_metrics}.
    """

    optFlags = REUSE_PORT_FLAGS + LOG_CONNECTIONS_FLAGS + EAGER_WRITES_FLAGS
    optParameters = RECORD_PARAMETERS
    opt_proxy_from = opt_proxy_from
    opt_fault = opt_fault

    def check_streams(self, listens: list[StreamListen], datagrams: bool = False) -> None:
        """C{--proxy-from} needs a C{haproxy:} listener; each fault must apply to one of them."""
        check_proxy_from(self, listens)
        check_faults(self, listens, datagrams=datagrams)


class StreamPluginOptions(ServingOptions, ListenOptions):
    """
    The command line of a plugin serving one kind of TCP stream on its
    C{LISTEN} listeners (echoapp-tcp, echoapp-echo): C{endpoints} and
    C{limits} (L{TCPLimits}); a subclass adds its parameters and what else
    its service needs after C{super().postOptions()}.
    """

    def postOptions(self) -> None:
        self.read_faults_and_metrics()
        self["endpoints"] = stream_listens(self.LISTEN, self)
        self.check_streams(self["endpoints"])
        self["limits"] = build(TCPLimits, self)
