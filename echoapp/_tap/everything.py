"""twistd plugin echoapp: the TCP greeter, the UDP greeter and echo in one process."""

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
    UDP_LIMIT_PARAMETERS,
    RepeatableListen,
    ServingOptions,
    build,
    recording,
    serve,
    stream_listens,
    udp_listens,
)
from echoapp._transports.endpoints import (
    DEFAULT_ECHO_LISTEN,
    DEFAULT_TCP_LISTEN,
    DEFAULT_UDP_LISTEN,
    UDP_SYNTAX,
)
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits

TCP = RepeatableListen("tcp", DEFAULT_TCP_LISTEN, "Endpoint string for the TCP greeter")
UDP = RepeatableListen("udp", DEFAULT_UDP_LISTEN, f"{UDP_SYNTAX} for the UDP greeter")
ECHO = RepeatableListen("echo", DEFAULT_ECHO_LISTEN, "Endpoint string for the echo service")


class Options(ServingOptions):
    """
    C{echoapp}'s command line: the three services' listeners, their shared
    messages and limits.
    """

    longdesc = (
        "All echoapp services in one process. --tcp, --udp and --echo each replace the default "
        "address of their service; the message options apply to both greeters, the TCP limits to "
        "the greeter and echo (each counting its own connections)."
    )
    optParameters = (
        GREETER_PARAMETERS
        + TCP_LIMIT_PARAMETERS
        + LINE_TIMEOUT_PARAMETERS
        + UDP_LIMIT_PARAMETERS
        + METRICS_PARAMETERS
    )
    opt_tcp = TCP.option()
    opt_udp = UDP.option()
    opt_echo = ECHO.option()

    def postOptions(self) -> None:
        self.read_faults_and_metrics()
        self["tcp-endpoints"] = stream_listens(TCP, self)
        self["udp-ports"] = udp_listens(UDP, self)
        self["echo-endpoints"] = stream_listens(ECHO, self)
        self.check_streams(self["tcp-endpoints"] + self["echo-endpoints"], datagrams=True)
        self["config"] = build(GreeterConfig, self)
        self["tcp-limits"] = build(TCPLimits, self)
        self["udp-limits"] = build(UDPLimits, self)


def service_tree(options: usage.Options, reactor: IReactorTime | None = None) -> MultiService:
    """The bare services, without the process parts (L{process_service}): what compose runs."""
    tree = services.everything(
        tcp=options["tcp-endpoints"],
        udp=options["udp-ports"],
        echo_listen=options["echo-endpoints"],
        config=options["config"],
        tcp_limits=options["tcp-limits"],
        udp_limits=options["udp-limits"],
        faults=options["faults"],
        reactor=reactor,
        log_connections=bool(options["log-connections"]),
    )
    return recording(tree, options, reactor)


def makeService(options: usage.Options) -> IService:
    """
    The three services with the process parts around them, as twistd runs
    them.
    """
    return serve(service_tree, options)
