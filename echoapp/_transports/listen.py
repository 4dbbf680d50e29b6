"""
The services that listen: one per stream endpoint or UDP port.  Both bind
in C{privilegedStartService}, so C{twistd --uid/--gid} can bind a low port
and then drop privileges, and both say where they listen once they do.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

from twisted.application.service import IServiceCollection, Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from echoapp import StartupError
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._transports import native_udp
from echoapp._transports.endpoints import (
    StreamListen,
    UDPListen,
    bound_socket,
    describe_listening,
    one_line,
)
from echoapp._twisted import asyncio_loop, global_reactor

# What a UDP port asks the socket for: more than any datagram, so nothing is
# cut.  (Twisted's default of 8192 truncates larger datagrams without a word.)
READ_SIZE = 65535

log = Logger(namespace="echoapp.listen")


def owner_name(service: Service, default: str = "echoapp") -> str:
    """
    The name a service's lines go by: its nearest named ancestor's (a
    proxy's own service is unnamed, so its listener speaks as
    C{echoapp-proxy}, as every echoapp listener speaks as its service).
    """
    parent = service.parent
    while parent is not None:
        if parent.name is not None:
            return str(parent.name)
        parent = getattr(parent, "parent", None)
    return default


def _cannot_listen(service: Service, where: str, error: BaseException) -> StartupError:
    """
    The one line that names the service, the address and the reason.  At
    start-up (the reactor not running yet) it is also written to the
    terminal when twistd has swapped standard error for its log
    (C{twistd -n --logfile FILE}), where no one would see it.  Not once the
    reactor runs: a listener an API call makes answers its client, and a
    line per call on the daemon's standard error (a pipe no one reads
    fills, and every write then blocks the whole process) is for no one.
    """
    owner = owner_name(service)
    reason = error.socketError if isinstance(error, CannotListenError) else error
    why = (reason.strerror if isinstance(reason, OSError) else None) or one_line(reason)
    line = f"{owner}: cannot listen on {where}: {one_line(reason)}"
    terminal = sys.__stderr__
    if terminal is not None and sys.stderr is not terminal and not global_reactor().running:
        try:
            terminal.write(line + "\n")
            terminal.flush()
        except (OSError, ValueError):  # no terminal to tell (a closed pipe): the exit says it
            pass
    return StartupError(line, f"{why}: {where} ({owner})")


def _log_listening(service: Service, port: Any, description: str = "") -> None:
    """The line operators (and the subprocess tests) read to learn the real port."""
    owner = owner_name(service, "None")
    address = describe_listening(description, port.getHost())
    log.info("{service} listening on {address}", service=owner, address=address)


class _ListenService(Service):
    """
    What every listener does alike: it binds in C{privilegedStartService}
    (or at start where there is no privileged step) and at stop closes its
    port, the Deferred firing once the port is closed.
    """

    port: Any = None

    def _bound(self) -> bool:
        return self.port is not None

    def _stop_binding(self) -> None:
        """Nothing is on its way to listening, by default."""

    def startService(self) -> None:
        super().startService()
        if not self._bound():
            self.privilegedStartService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stop_binding()
        port, self.port = self.port, None
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)


class StreamListenService(_ListenService):
    """
    A stream listener that says where it listens once it does, and keeps its
    port for whoever needs the address (tests listening on port 0 do).  A
    port that cannot be had stops start-up at once with one line.
    """

    def __init__(self, listen: StreamListen | str, factory: IProtocolFactory, reactor: Any = None) -> None:
        """
        C{listen} says everything about the listener (a plain description
        is parsed with the defaults).
        """
        self.listen = listen if isinstance(listen, StreamListen) else StreamListen.parse(listen)
        self.endpoint = self.listen.server_endpoint(reactor or global_reactor())
        self.factory = factory
        self.description = str(self.listen)
        self.port: IListeningPort | None = None
        self._listening: Deferred[Any] | None = None
        self._starting = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        DESCRIPTORS.raise_limit()
        failed: list[Failure] = []
        self._starting = True
        try:
            listening = self.endpoint.listen(self.factory)
            listening.addCallbacks(self._listening_on, self._not_listening, errbackArgs=(failed,))
        except Exception as error:
            raise _cannot_listen(self, self.description, error) from None
        finally:
            self._starting = False
        if failed:
            raise _cannot_listen(self, self.description, failed[0].value)
        self._listening = listening

    def _listening_on(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        _log_listening(self, port, self.description)
        return port

    def _not_listening(self, failure: Failure, failed: list[Failure]) -> None:
        """At start, the failure is raised; a later one (an endpoint that listens late) is logged."""
        if self._starting:
            failed.append(failure)
        elif not failure.check(CancelledError):
            log.failure("Cannot listen on {where}", failure, where=self.description)

    def _bound(self) -> bool:
        return self._listening is not None

    def _stop_binding(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.cancel()  # an endpoint still on its way to listening


class UDPListenService(_ListenService):
    """
    A UDP port, on the reactor's own datagram port or (under uvloop) the
    loop's native transport, bound in C{privilegedStartService} so a taken
    port stops start-up with one line before twistd drops privileges.
    """

    def __init__(self, listen: UDPListen, protocol: DatagramProtocol, reactor: Any = None) -> None:
        self.listen = listen
        self.protocol = protocol
        self._reactor = reactor
        self.reuse_port = listen.reuse_port
        self.port: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        DESCRIPTORS.raise_limit()
        reactor = self._reactor or global_reactor()
        listen = self.listen
        family = socket.AF_INET6 if ":" in listen.interface else socket.AF_INET
        loop = asyncio_loop(reactor)
        try:
            if loop is not None:
                sock = bound_socket(family, socket.SOCK_DGRAM, listen.interface, listen.port, self.reuse_port)
                self.port = native_udp.serve_datagrams(loop, sock, self.protocol)
            elif self.reuse_port:
                sock = bound_socket(family, socket.SOCK_DGRAM, listen.interface, listen.port)
                try:
                    self.port = reactor.adoptDatagramPort(sock.fileno(), family, self.protocol, READ_SIZE)
                finally:
                    sock.close()
            else:
                self.port = reactor.listenUDP(
                    listen.port, self.protocol, interface=listen.interface, maxPacketSize=READ_SIZE
                )
        except CannotListenError as error:
            raise _cannot_listen(self, str(self.listen), error) from None
        _log_listening(self, self.port)


def descendants(root: Any) -> Iterator[Any]:
    """Every service below C{root}, depth first in tree order: the one walk of a service tree."""
    for child in IServiceCollection(root, ()):
        yield child
        yield from descendants(child)


def listeners(root: Any) -> list[StreamListenService | UDPListenService]:
    """Every TCP and UDP listener in a service tree (C{root} included), in tree order."""
    return [
        service
        for service in (root, *descendants(root))
        if isinstance(service, StreamListenService | UDPListenService)
    ]
