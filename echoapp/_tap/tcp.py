"""twistd plugin echoapp-tcp: the welcome/echo/exit TCP greeter."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.python import usage

from echoapp import services
from echoapp._tap.common import (
    EAGER_WRITES_FLAGS,
    GREETER_PARAMETERS,
    LINE_TIMEOUT_PARAMETERS,
    LOG_CONNECTIONS_FLAGS,
    METRICS_PARAMETERS,
    REUSE_PORT_FLAGS,
    TCP_LIMIT_PARAMETERS,
    PluginOptions,
    RepeatableListen,
    build,
    check_faults,
    check_proxy_from,
    fault_plan,
    metrics_listen,
    opt_fault,
    opt_proxy_from,
    process_service,
    stream_listens,
)
from echoapp._transports.endpoints import DEFAULT_TCP_LISTEN
from echoapp.config import GreeterConfig, TCPLimits

LISTEN = RepeatableListen("listen", DEFAULT_TCP_LISTEN)


class Options(PluginOptions):
    """
    C{echoapp-tcp}'s command line: listeners, the greeter's messages, the TCP
    limits, PROXY trust, faults and metrics.
    """

    synopsis = "[options]"
    longdesc = (
        "The welcome/echo/exit TCP service: a banner on connect, one templated reply per message, "
        "and the exit word closes the connection."
    )
    optParameters = GREETER_PARAMETERS + TCP_LIMIT_PARAMETERS + LINE_TIMEOUT_PARAMETERS + METRICS_PARAMETERS
    optFlags = REUSE_PORT_FLAGS + LOG_CONNECTIONS_FLAGS + EAGER_WRITES_FLAGS
    opt_listen = LISTEN.option()
    opt_proxy_from = opt_proxy_from
    opt_fault = opt_fault

    def postOptions(self) -> None:
        self["faults"] = fault_plan(self)
        self["metrics-listen"] = metrics_listen(self)
        self["endpoints"] = stream_listens(LISTEN, self)
        check_proxy_from(self, self["endpoints"])
        check_faults(self, self["endpoints"])
        self["config"] = build(GreeterConfig, self)
        self["limits"] = build(TCPLimits, self)


def service_tree(options: usage.Options) -> MultiService:
    """The bare service, without the process parts (L{process_service}): what compose runs."""
    return services.tcp_greeter(
        options["endpoints"],
        options["config"],
        options["limits"],
        faults=options["faults"],
        log_connections=bool(options["log-connections"]),
    )


def makeService(options: usage.Options) -> IService:
    """The greeter with the process parts around it, as twistd runs it."""
    return process_service(service_tree(options), options)
