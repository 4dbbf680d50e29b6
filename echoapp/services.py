"""
The service trees every entry point runs: the twistd plugins in
L{echoapp.tap} and the C{.tac} files both build their applications here, so
a deployment shape is a few lines of configuration and no copied logic.

Each builder returns a named L{MultiService} with one listening child per
address, like carbon's receivers composed in one service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.application.service import MultiService

from echoapp.echo import EchoFactory
from echoapp.greeter import GreeterConfig, GreeterFactory
from echoapp.listen import (
    DEFAULT_ECHO_LISTEN,
    DEFAULT_TCP_LISTEN,
    DEFAULT_UDP_LISTEN,
    StreamListenService,
    UDPListen,
    UDPListenService,
)
from echoapp.template import DEFAULT_REPLY, ReplyTemplate
from echoapp.udp import UDPGreeter

TCP_NAME = "echoapp-tcp"
ECHO_NAME = "echoapp-echo"
UDP_NAME = "echoapp-udp"


def _named(name: str) -> MultiService:
    service = MultiService()
    service.setName(name)
    return service


def tcp_greeter(
    listen: Iterable[str] = (DEFAULT_TCP_LISTEN,), config: GreeterConfig | None = None, reactor: Any = None
) -> MultiService:
    """The welcome/echo/exit greeter on every endpoint string in C{listen}."""
    service = _named(TCP_NAME)
    factory = GreeterFactory(config)
    for description in listen:
        StreamListenService(description, factory, reactor).setServiceParent(service)
    return service


def echo(listen: Iterable[str] = (DEFAULT_ECHO_LISTEN,), reactor: Any = None) -> MultiService:
    """RFC 862 echo on every endpoint string in C{listen}."""
    service = _named(ECHO_NAME)
    factory = EchoFactory()
    for description in listen:
        StreamListenService(description, factory, reactor).setServiceParent(service)
    return service


def udp_greeter(
    listen: Iterable[str | UDPListen] = (DEFAULT_UDP_LISTEN,),
    reply: ReplyTemplate = DEFAULT_REPLY,
    reactor: Any = None,
) -> MultiService:
    """The UDP greeter on every C{udp:PORT[:interface=ADDR]} in C{listen}."""
    service = _named(UDP_NAME)
    for spec in listen:
        spec = spec if isinstance(spec, UDPListen) else UDPListen.parse(spec)
        UDPListenService(spec, UDPGreeter(reply), reactor).setServiceParent(service)
    return service


def everything(
    tcp: Iterable[str] = (DEFAULT_TCP_LISTEN,),
    udp: Iterable[str | UDPListen] = (DEFAULT_UDP_LISTEN,),
    echo_listen: Iterable[str] = (DEFAULT_ECHO_LISTEN,),
    config: GreeterConfig | None = None,
    reactor: Any = None,
) -> MultiService:
    """
    All three services in one process; the greeters share one message
    configuration, so the TCP and UDP greeters answer alike.
    """
    config = config or GreeterConfig()
    service = _named("echoapp")
    for child in (
        tcp_greeter(tcp, config, reactor),
        udp_greeter(udp, config.reply, reactor),
        echo(echo_listen, reactor),
    ):
        child.setServiceParent(service)
    return service
