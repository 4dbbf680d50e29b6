"""twistd plugin echoapp-echo: RFC 862 byte echo over TCP."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

from echoapp import _monitor as monitor
from echoapp import services, signals
from echoapp._tap.common import (
    EAGER_WRITES_FLAGS,
    LOG_CONNECTIONS_FLAGS,
    METRICS_PARAMETERS,
    REUSE_PORT_FLAGS,
    TCP_LIMIT_PARAMETERS,
    PluginOptions,
    RepeatableListen,
    build,
    fault_plan,
    metrics_listen,
    opt_fault,
    opt_proxy_from,
    proxy_from,
    stream_listens,
)
from echoapp._transports.endpoints import DEFAULT_ECHO_LISTEN
from echoapp.config import TCPLimits

LISTEN = RepeatableListen("listen", DEFAULT_ECHO_LISTEN)


class Options(PluginOptions):
    synopsis = "[options]"
    longdesc = "RFC 862 echo: every byte comes back unchanged. No banner, no framing."
    optParameters = TCP_LIMIT_PARAMETERS + METRICS_PARAMETERS
    optFlags = REUSE_PORT_FLAGS + LOG_CONNECTIONS_FLAGS + EAGER_WRITES_FLAGS
    opt_listen = LISTEN.option()
    opt_proxy_from = opt_proxy_from
    opt_fault = opt_fault

    def postOptions(self) -> None:
        self["faults"] = fault_plan(self)
        self["metrics-listen"] = metrics_listen(self)
        self["endpoints"] = stream_listens(LISTEN, self)
        self["proxy-from"] = proxy_from(self, self["endpoints"])
        self["limits"] = build(TCPLimits, self)


def makeService(options: usage.Options) -> IService:
    return signals.handled(
        monitor.monitored(
            services.echo(
                options["endpoints"],
                options["limits"],
                reuse_port=bool(options["reuse-port"]),
                faults=options["faults"],
                log_connections=bool(options["log-connections"]),
                proxy_from=options["proxy-from"],
            ),
            options["metrics-listen"],
        )
    )
