"""twistd plugin echoapp-echo: RFC 862 byte echo over TCP."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage

from echoapp import services
from echoapp._tap.common import (
    METRICS_PARAMETERS,
    TCP_LIMIT_PARAMETERS,
    RepeatableListen,
    StreamPluginOptions,
    recording,
    serve,
    stream_arguments,
)
from echoapp._transports.endpoints import DEFAULT_ECHO_LISTEN


class Options(StreamPluginOptions):
    """
    C{echoapp-echo}'s command line: listeners, the TCP limits, PROXY trust,
    faults and metrics.
    """

    longdesc = "RFC 862 echo: every byte comes back unchanged. No banner, no framing."
    optParameters = TCP_LIMIT_PARAMETERS + METRICS_PARAMETERS
    LISTEN = RepeatableListen("listen", DEFAULT_ECHO_LISTEN)


def service_tree(options: usage.Options, reactor: IReactorTime | None = None) -> MultiService:
    """The bare service, without the process parts (L{process_service}): what compose runs."""
    tree = services.echo(options["endpoints"], **stream_arguments(options, reactor))
    return recording(tree, options, reactor)


def makeService(options: usage.Options) -> IService:
    """The echo service with the process parts around it, as twistd runs it."""
    return serve(service_tree, options)
