"""twistd plugin echoapp-tcp: the welcome/echo/exit TCP greeter."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage

from echoapp import services
from echoapp._tap.common import (
    GREETER_PARAMETERS,
    LINE_TIMEOUT_PARAMETERS,
    METRICS_PARAMETERS,
    TCP_LIMIT_PARAMETERS,
    RepeatableListen,
    StreamPluginOptions,
    build,
    recording,
    serve,
    stream_arguments,
)
from echoapp._transports.endpoints import DEFAULT_TCP_LISTEN
from echoapp.config import GreeterConfig


class Options(StreamPluginOptions):
    """
    C{echoapp-tcp}'s command line: listeners, the greeter's messages, the TCP
    limits, PROXY trust, faults and metrics.
    """

    longdesc = (
        "The welcome/echo/exit TCP service: a banner on connect, one templated reply per message, "
        "and the exit word closes the connection."
    )
    optParameters = GREETER_PARAMETERS + TCP_LIMIT_PARAMETERS + LINE_TIMEOUT_PARAMETERS + METRICS_PARAMETERS
    LISTEN = RepeatableListen("listen", DEFAULT_TCP_LISTEN)

    def postOptions(self) -> None:
        super().postOptions()
        self["config"] = build(GreeterConfig, self)


def service_tree(options: usage.Options, reactor: IReactorTime | None = None) -> MultiService:
    """The bare service, without the process parts (L{process_service}): what compose runs."""
    tree = services.tcp_greeter(options["endpoints"], options["config"], **stream_arguments(options, reactor))
    return recording(tree, options, reactor)


def makeService(options: usage.Options) -> IService:
    """The greeter with the process parts around it, as twistd runs it."""
    return serve(service_tree, options)
