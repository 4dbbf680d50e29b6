"""
twistd plugin echoapp-proxy: echoapp's faults and limits in front of any
TCP server, driven by the command line, a toxiproxy config file, or
toxiproxy's own HTTP API.
"""

from __future__ import annotations

import ipaddress
import json
import os

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage

from echoapp._faults import Faults
from echoapp._proxy.addresses import is_udp, offered_by
from echoapp._proxy.errors import ProxyError
from echoapp._proxy.named import check_proxy
from echoapp._proxy.registry import MAX_PROXIES, NAME, Proxies
from echoapp._proxy.schema import ProxySpec, batch_from_json
from echoapp._proxy.toxics import Toxic
from echoapp._proxy.trust import Allowance
from echoapp._record import Recorder
from echoapp._record.capture import CaptureFile
from echoapp._record.service import RecordTo
from echoapp._tap.common import (
    LOG_CONNECTIONS_FLAGS,
    METRICS_PARAMETERS,
    RECORD_PARAMETERS,
    TCP_LIMIT_PARAMETERS,
    PluginOptions,
    build,
    metrics_listen,
    record_given,
    serve,
)
from echoapp._transports.endpoints import check_endpoint
from echoapp._twisted import global_reactor
from echoapp.config import TCPLimits
from echoapp.services import named, recorded

MAX_CONFIG = 1 << 20  # bytes: a config file is a few proxies, not a data set
ALLOWANCES = (
    "listen",
    "unix",
    "tls",
    "privileged-ports",
)  # --api-allow-*: what the API may do beyond the default


def _repeat(key: str, doc: str) -> object:
    def opt(options: usage.Options, value: str) -> None:
        options.setdefault(key, []).append(value)

    opt.__doc__ = doc
    return opt


def _toxics(options: usage.Options, key: str, stream: str) -> list[Toxic]:
    """
    The C{--KEY} options as one toxic, read as every plugin reads repeated
    C{--fault}: one parse of them all, the last value of a key winning, so
    that C{--fault} means one thing everywhere.
    """
    texts = options.get(key, [])
    if not texts:
        return []
    try:
        faults = Faults.parse(",".join(texts))
    except ValueError as error:
        raise usage.UsageError(f"--{key}: {error}") from None
    if faults.seed is not None:
        options["seed"] = options["seed"] if options["seed"] is not None else str(faults.seed)
    return [Toxic(key, "echoapp", stream, faults.fraction, faults, {"fault": str(faults)})]


def _check_faults(spec: ProxySpec, toxics: list[Toxic]) -> None:
    """A --fault this pair's traffic cannot have, in the command line's words."""
    udp = is_udp(spec)
    for toxic in toxics:
        try:
            toxic.faults.check_applies(*offered_by(spec, toxic.direction))
        except ValueError as error:
            option = "fault-upstream" if toxic.stream == "upstream" else "fault"
            kind = "UDP" if udp else "TCP"
            raise usage.UsageError(f"--{option}: {error} (--listen {spec.listen} is {kind})") from None


class Options(PluginOptions):
    """
    C{echoapp-proxy}'s command line: listen/upstream pairs, faults each way,
    the API, the limits and metrics.
    """

    synopsis = "[options]"
    longdesc = (
        "Forward TCP connections to an upstream server, with echoapp's faults in either direction "
        "and its limits: --listen L --upstream U pairs (repeatable), a toxiproxy --config file, "
        "and/or toxiproxy's HTTP API (--api)."
    )
    optParameters = [
        [
            "api",
            None,
            None,
            "Endpoint string for toxiproxy's HTTP API (tcp:8474:interface=127.0.0.1). Whoever reaches it "
            "drives the daemon: its proxies listen where the API does and on loopback, unless allowed below.",
        ],
        ["config", None, None, "A toxiproxy config file (a JSON list of proxies, toxics applied too)."],
        ["seed", None, None, "Seed of every random choice (toxicity, jitter), printed at start."],
        *TCP_LIMIT_PARAMETERS,
        *METRICS_PARAMETERS,
        *RECORD_PARAMETERS,
    ]
    optFlags = [
        *LOG_CONNECTIONS_FLAGS,
        [
            "api-allow-privileged-ports",
            None,
            "Proxies made through the API may listen on ports under 1024 (as root they would bind).",
        ],
    ]
    opt_api_allow_listen = _repeat(
        "api-allow-listen",
        "An address where proxies made through the API may listen besides the API's own and loopback; "
        "0.0.0.0 is every IPv4 interface, :: every interface. Repeatable.",
    )
    opt_api_allow_tls = _repeat(
        "api-allow-tls",
        "A directory whose TLS key and certificate files proxies made through the API may name "
        "(ssl: listeners, client certificates upstream; none by default). Repeatable.",
    )
    opt_api_allow_unix = _repeat(
        "api-allow-unix",
        "A directory whose UNIX sockets proxies made through the API may listen on and connect to "
        "(none by default: the daemon could reach any socket it can open). Repeatable.",
    )
    opt_listen = _repeat(
        "listen", "Endpoint string or HOST:PORT to listen on; repeatable, one per --upstream"
    )
    opt_upstream = _repeat(
        "upstream", "Client endpoint string or HOST:PORT to forward to; repeatable, one per --listen."
    )
    opt_fault = _repeat(
        "fault",
        "Faults on what the server sends the client (downstream), as echoapp's --fault; fraction= is "
        "the share of connections (toxicity). Repeatable.",
    )
    opt_fault_upstream = _repeat(
        "fault-upstream", "Faults on what the client sends the server (upstream); as --fault."
    )

    def postOptions(self) -> None:
        self["metrics-listen"] = metrics_listen(self)
        self["record-to"] = record_given(self)
        self["limits"] = build(TCPLimits, self)
        listens, upstreams = self.get("listen", []), self.get("upstream", [])
        if len(listens) != len(upstreams):
            raise usage.UsageError(
                f"--listen and --upstream come in pairs: {len(listens)} --listen, {len(upstreams)} --upstream"
            )
        toxics = _toxics(self, "fault", "downstream") + _toxics(self, "fault-upstream", "upstream")
        self["toxics"] = toxics
        batch = []
        for place, (listen, upstream) in enumerate(zip(listens, upstreams, strict=True), 1):
            spec = ProxySpec(f"proxy{place}" if place > 1 else "proxy", listen, upstream)
            _check_faults(spec, toxics)
            batch.append((spec, toxics))
        if self["config"] is not None:
            batch += self._config(self["config"])
        if self["api"] is not None:
            try:
                self["api"] = check_endpoint(self["api"])
            except ValueError as error:
                raise usage.UsageError(f"--api: {error}") from None
            self["allowance"] = self._allowance(self["api"])
        elif any(self.get(f"api-allow-{key}") for key in ALLOWANCES):
            raise usage.UsageError(
                f"{', '.join(f'--api-allow-{key}' for key in ALLOWANCES)}: only with --api"
            )
        elif not batch:
            raise usage.UsageError("nothing to proxy: give --listen and --upstream, --config, or --api")
        if self["seed"] is not None and not self["seed"].isdigit():
            raise usage.UsageError(f"--seed: {self['seed']!r} is not a whole number")
        self["proxies"] = batch
        self["live"] = self["api"] is not None or bool(toxics)
        # Every proxy checked now, without making one, so that a mistake is one line before anything listens.
        names = set()
        for spec, its_toxics in batch:
            try:
                check_proxy(spec, its_toxics)
            except ProxyError as error:
                raise usage.UsageError(f"proxy {spec.name}: {error}") from None
            if spec.name in names:
                raise usage.UsageError(f"proxy {spec.name}: proxy already exists")
            names.add(spec.name)
        if len(batch) > MAX_PROXIES:
            raise usage.UsageError(f"{len(batch)} proxies: echoapp-proxy keeps at most {MAX_PROXIES}")

    def _allowance(self, api: str) -> Allowance:
        """What the API's clients may have: where it listens, and what the operator allowed besides."""
        interfaces = []
        for address in self.get("api-allow-listen", []):
            try:
                interfaces.append(str(ipaddress.ip_address(address.strip("[]"))))
            except ValueError:
                raise usage.UsageError(f"--api-allow-listen: {address!r} is not an IP address") from None
        directories: dict[str, list[str]] = {"unix": [], "tls": []}
        for kind, found in directories.items():
            for directory in self.get(f"api-allow-{kind}", []):
                if not os.path.isdir(directory):
                    raise usage.UsageError(f"--api-allow-{kind}: {directory!r} is not a directory")
                found.append(os.path.realpath(directory))
        return Allowance.of_api(
            api,
            interfaces=tuple(interfaces),
            unix=tuple(directories["unix"]),
            tls=tuple(directories["tls"]),
            privileged=bool(self["api-allow-privileged-ports"]),
        )

    def _config(self, path: str) -> list[tuple[ProxySpec, list[Toxic]]]:
        try:
            with open(path, "rb") as file:
                text = file.read(MAX_CONFIG + 1)
        except OSError as error:
            raise usage.UsageError(f"--config: {path}: {error.strerror}") from None
        if len(text) > MAX_CONFIG:
            raise usage.UsageError(f"--config: {path}: over {MAX_CONFIG} bytes")
        try:
            data = json.loads(text)
        except RecursionError:  # a list of lists thousands deep: a mistake, not a crash
            raise usage.UsageError(f"--config: {path}: not JSON: nested too deeply") from None
        except ValueError as error:
            raise usage.UsageError(f"--config: {path}: not JSON: {error}") from None
        try:
            return batch_from_json(data)
        except ProxyError as error:
            raise usage.UsageError(f"--config: {path}: {error}") from None


def service_tree(options: usage.Options, reactor: IReactorTime | None = None) -> MultiService:
    """The bare service, without the process parts (L{process_service}): what compose runs."""
    seed = int(options["seed"]) if options["seed"] is not None else None
    tree = named(NAME)
    proxies = Proxies(
        options["limits"],
        reactor,
        seed=seed,
        live=options["live"],
        log_connections=bool(options["log-connections"]),
    )
    record_to: RecordTo | None = options.get("record-to")
    if record_to is not None:
        # One record for every proxy, each listener recording outermost as it listens (the API's
        # proxies too: named.py's hook asks the parent), the capture file opened first, closed last.
        recorder = Recorder(reactor or global_reactor())
        recorded(proxies, recorder, CaptureFile(record_to.path, record_to.max_bytes, record_to.keep))
        proxies.recorder = recorder
    for spec, toxics in options["proxies"]:
        proxies.add(proxies.make(spec, toxics))
    proxies.setServiceParent(tree)
    if options["api"] is not None:
        from echoapp._proxy.api import api_service

        api_service(proxies, options["api"], reactor).setServiceParent(tree)
    return tree


def makeService(options: usage.Options) -> IService:
    """
    The proxies (and the API) with the process parts around them, as twistd
    runs them.
    """
    return serve(service_tree, options)
