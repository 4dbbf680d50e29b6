"""twistd plugin echoapp-udp: the UDP greeter."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage

from echoapp import services
from echoapp._tap.common import (
    METRICS_PARAMETERS,
    RECORD_PARAMETERS,
    REPLY_PARAMETERS,
    REUSE_PORT_FLAGS,
    UDP_LIMIT_PARAMETERS,
    ListenOptions,
    RepeatableListen,
    build,
    check_faults,
    opt_fault,
    recording,
    serve,
    udp_listens,
)
from echoapp._transports.endpoints import DEFAULT_UDP_LISTEN, UDP_SYNTAX
from echoapp.config import GreeterConfig, UDPLimits


class Options(ListenOptions):
    """
    C{echoapp-udp}'s command line: ports, the reply template, the rate
    limits, faults and metrics.
    """

    longdesc = (
        "The UDP greeter: each datagram gets one reply datagram to its sender. "
        "--reply '{}' makes it a UDP echo."
    )
    optParameters = REPLY_PARAMETERS + UDP_LIMIT_PARAMETERS + METRICS_PARAMETERS + RECORD_PARAMETERS
    optFlags = REUSE_PORT_FLAGS
    LISTEN = RepeatableListen("listen", DEFAULT_UDP_LISTEN, UDP_SYNTAX)
    opt_fault = opt_fault

    def postOptions(self) -> None:
        self.read_faults_and_metrics()
        self["ports"] = udp_listens(self.LISTEN, self)
        check_faults(self, datagrams=True)
        self["template"] = build(GreeterConfig, self).reply
        self["limits"] = build(UDPLimits, self)


def service_tree(options: usage.Options, reactor: IReactorTime | None = None) -> MultiService:
    """The bare service, without the process parts (L{process_service}): what compose runs."""
    tree = services.udp_greeter(
        options["ports"], options["template"], options["limits"], reactor, faults=options["faults"]
    )
    return recording(tree, options, reactor)


def makeService(options: usage.Options) -> IService:
    """The UDP greeter with the process parts around it, as twistd runs it."""
    return serve(service_tree, options)
