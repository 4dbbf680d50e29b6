"""
Where services listen, as descriptions: Twisted endpoint strings for
streams (parsed and checked while options are parsed, made into endpoints
when a service starts) and a small C{udp:PORT[:interface=ADDR]} syntax for
datagrams (Twisted has no UDP endpoint strings).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorPluggableNameResolver,
    IStreamServerEndpoint,
)
from zope.interface import implementer

from echoapp._tac import one_line_in_tac
from echoapp._transports import native_tcp
from echoapp._transports.descriptions import description_mistake, explain_failure, one_line, split_proxy
from echoapp._transports.eager import eager_reactor
from echoapp._transports.haproxy import PREFIX, HAProxyEndpoint, HeaderBeforeTLS, Network
from echoapp._transports.tls import ServesALPNClients
from echoapp._twisted import asyncio_loop, proxy_parsers, resolve_ipv6, tcp_server_parameters

DEFAULT_TCP_LISTEN = "tcp:9999:interface=127.0.0.1"
DEFAULT_ECHO_LISTEN = "tcp:10888:interface=127.0.0.1"
DEFAULT_UDP_LISTEN = "udp:9999:interface=127.0.0.1"


@implementer(IReactorPluggableNameResolver)
class ParseOnlyReactor:
    """
    Stands in for the reactor while options are parsed.  Twisted's endpoint
    parsers only keep the reactor for later; taking the real one here would
    install the default reactor before twistd installs the chosen one.  A
    parser that did use it gets an C{AttributeError}, which reports the
    description as unusable.  It has a C{nameResolver} (none), so that a
    C{tls:} client endpoint keeps it as it keeps the reactor, instead of
    warning that the reactor has no pluggable resolver.
    """

    nameResolver: Any = None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the reactor is not available while options are parsed ({name})")


def check_endpoint(description: str, reuse_port: bool = False) -> str:
    """
    Parse a server endpoint string without touching the real reactor, so a
    typo is reported while options are parsed, as a one-line error in
    echoapp's words (L{description_mistake}, L{explain_failure}).

    @raise ValueError: if Twisted cannot make an endpoint of it.
    """
    mistake = description_mistake(description)
    if mistake is not None:
        raise ValueError(f"cannot listen on {description!r}: {mistake}")
    proxy, inner = split_proxy(description)
    if proxy and proxy_parsers() is None:
        raise ValueError(
            f"cannot listen on {description!r}: haproxy: needs Twisted's PROXY protocol parsers, "
            "which this Twisted lacks"
        )
    try:
        stream_endpoint(ParseOnlyReactor(), inner, reuse_port)
    except ImportError as error:
        if "OpenSSL" not in str(error):
            raise ValueError(f"cannot listen on {description!r}: {one_line(error)}") from None
        raise ValueError(
            f"cannot listen on {description!r}: TLS needs pyOpenSSL: pip install 'echoapp[tls]'"
        ) from None
    except Exception as error:
        raise ValueError(f"cannot listen on {description!r}: {explain_failure(description, error)}") from None
    return description


def bound_socket(family: int, kind: int, interface: str, port: int, reuse_port: bool = True) -> socket.socket:
    """
    A bound socket.  With C{reuse_port} (SO_REUSEPORT), several processes
    bind the same port and the kernel spreads connections (or datagrams)
    across them.  SO_REUSEADDR only for streams, as Twisted does: on a
    datagram socket it would let a second process bind a taken port.
    """
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM or reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.bind(resolve_ipv6(interface or "::", port))  # a scope ID (fe80::1%eth0) as Twisted allows
        else:
            sock.bind((interface or "0.0.0.0", port))
    except OSError as error:
        sock.close()
        raise CannotListenError(interface, port, error) from None
    sock.setblocking(False)
    return sock


@implementer(IStreamServerEndpoint)
@dataclass(frozen=True)
class SocketEndpoint:
    """
    A C{tcp:}/C{tcp6:} endpoint that makes its own listening socket: to
    share the port with other processes (C{--reuse-port}), or to hand it to
    the asyncio loop under the reactor, whose own transports then serve it
    (L{echoapp._transports.native_tcp}).  The port is bound synchronously, so a taken
    port fails C{listen} at once, before twistd drops privileges.
    """

    reactor: Any
    family: int
    port: int
    interface: str
    backlog: int
    reuse_port: bool

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        try:
            sock = bound_socket(self.family, socket.SOCK_STREAM, self.interface, self.port, self.reuse_port)
        except CannotListenError:
            return fail()
        loop = asyncio_loop(self.reactor)
        try:
            if loop is not None:
                return succeed(native_tcp.serve(loop, sock, factory, self.backlog))
            sock.listen(self.backlog)
            port = self.reactor.adoptStreamPort(sock.fileno(), self.family, factory)
            sock.close()  # the reactor holds its own duplicate
            return succeed(port)
        except Exception:
            sock.close()
            return fail()


# Endpoint kinds whose descriptions take a backlog= parameter.
_WITH_BACKLOG = {"tcp", "tcp6", "ssl", "unix"}
_BACKLOG = re.compile(r"(?<!\\):backlog=")


def with_backlog(description: str, backlog: int | None) -> str:
    """
    C{description} with C{backlog} as its listen backlog, unless it names
    one itself.  Twisted's default of 50 does not fit a server that speaks
    first: a burst of clients overflows the kernel's accept queue and the
    rest get nothing until their SYNs are retried, seconds later.  (The
    kernel caps any backlog at C{net.core.somaxconn}.)
    """
    if backlog is None or _BACKLOG.search(description):
        return description
    kind = description.partition(":")[0]
    return f"{description}:backlog={backlog}" if kind in _WITH_BACKLOG else description


def stream_endpoint(
    reactor: Any, description: str, reuse_port: bool = False, backlog: int | None = None
) -> IStreamServerEndpoint:
    """
    The endpoint for a plain (no C{haproxy:}) C{description}, with
    C{backlog} unless it names its own, on Twisted's own reactors with eager
    writes (L{echoapp._transports.eager}).  C{tcp:}/C{tcp6:} get a
    L{SocketEndpoint} when they share their port or when the reactor sits on
    an asyncio loop; everything else is Twisted's own endpoint.
    """
    reactor = eager_reactor(reactor)
    if description.startswith("ssl:"):
        reactor = ServesALPNClients(reactor)
    endpoint = serverFromString(reactor, with_backlog(description, backlog))
    tcp = isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint)
    if reuse_port and not tcp:
        raise ValueError("--reuse-port works with tcp: and tcp6: listeners only")
    if not tcp or not (reuse_port or asyncio_loop(reactor) is not None):
        return endpoint
    family = socket.AF_INET6 if isinstance(endpoint, TCP6ServerEndpoint) else socket.AF_INET
    parameters = tcp_server_parameters(endpoint)
    if parameters is None:  # this Twisted hides them: its own endpoint, as it parsed it
        if reuse_port:
            raise ValueError("--reuse-port cannot read tcp: descriptions with this Twisted (see the log)")
        return endpoint
    port, interface, backlog = parameters
    return SocketEndpoint(reactor, family, port, interface, backlog, reuse_port)


@dataclass(frozen=True)
class StreamListen:
    """
    A stream listener, described once at the top (the command line, a
    builder in L{echoapp.services}) and carried whole to the listener: the
    endpoint description, whether PROXY headers come first (C{haproxy:},
    recognised here only) and whom to believe, the listen backlog and
    whether the port is shared.  Nothing between needs to know any of it.

    @ivar endpoint: the Twisted endpoint description, without C{haproxy:}.
    @ivar proxy: read a PROXY protocol header first (L{HAProxyEndpoint}).
    @ivar proxy_from: the senders whose headers are believed (all if empty).
    @ivar backlog: the listen backlog, unless the description names one.
    @ivar reuse_port: share the port with other processes (SO_REUSEPORT).
    """

    endpoint: str
    proxy: bool = False
    proxy_from: tuple[Network, ...] = ()
    backlog: int | None = None
    reuse_port: bool = False

    @classmethod
    @one_line_in_tac
    def parse(
        cls, description: str, reuse_port: bool = False, proxy_from: tuple[Network, ...] = ()
    ) -> StreamListen:
        """
        @raise ValueError: with a one-line reason, for a description Twisted
            cannot make an endpoint of (checked without the real reactor).
        """
        check_endpoint(description, reuse_port)
        proxy, endpoint = split_proxy(description)
        return cls(endpoint, proxy, proxy_from if proxy else (), None, reuse_port)

    def server_endpoint(self, reactor: IReactorCore) -> IStreamServerEndpoint:
        """
        The endpoint to listen on, read through the PROXY protocol when
        asked; under C{ssl:}, the header comes before the TLS handshake, as
        HAProxy and nginx send it.
        """
        if not self.proxy:
            return stream_endpoint(reactor, self.endpoint, self.reuse_port, self.backlog)
        below: Any = HeaderBeforeTLS(eager_reactor(reactor)) if self.endpoint.startswith("ssl:") else reactor
        inner = stream_endpoint(below, self.endpoint, self.reuse_port, self.backlog)
        return HAProxyEndpoint(inner, self.proxy_from)

    def __str__(self) -> str:
        """The description as it was typed."""
        return PREFIX + self.endpoint if self.proxy else self.endpoint


# Split parameters on an unescaped ':' that starts a "key=", so that a bare
# IPv6 address (interface=::1) needs no escaping; "\:" works as in Twisted.
_PARAMETER = re.compile(r"(?<!\\):(?=[A-Za-z]\w*=)")
UDP_SYNTAX = "udp:PORT[:interface=ADDRESS]"


@dataclass(frozen=True)
class UDPListen:
    """
    A UDP port to listen on.  With no interface it binds every IPv4
    interface, exactly as C{tcp:PORT} does: that is never a default.
    """

    port: int
    interface: str = ""
    reuse_port: bool = False

    @classmethod
    @one_line_in_tac
    def parse(cls, description: str, reuse_port: bool = False) -> UDPListen:
        """
        @raise ValueError: with a one-line reason naming the description.
        """

        def invalid(reason: str) -> ValueError:
            return ValueError(f"cannot listen on {description!r}: {reason} (expected {UDP_SYNTAX})")

        kind, colon, rest = description.partition(":")
        if kind != "udp" or not colon:
            raise invalid("not a UDP listen description")
        port_text, *parameters = _PARAMETER.split(rest)
        if not port_text.isdigit() or int(port_text) > 65535:
            raise invalid(f"port {port_text!r} is not a number from 0 to 65535")
        interface = ""
        seen: set[str] = set()
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key != "interface":
                raise invalid(f"unknown parameter {key!r}: udp: takes interface= only")
            if key in seen:
                raise invalid(f"{key} given twice")
            seen.add(key)
            interface = value.replace("\\:", ":")
            try:
                ipaddress.ip_address(interface)
            except ValueError:
                raise invalid(f"interface {interface!r} is not an IP address") from None
        return cls(int(port_text), interface, reuse_port)

    def __str__(self) -> str:
        if not self.interface:
            return f"udp:{self.port}"
        return f"udp:{self.port}:interface={self.interface}"


def describe_address(address: IAddress) -> str:
    """An address as the C{kind:host:port} a person would type back."""
    if isinstance(address, IPv6Address):
        return f"{address.type.lower()}6:[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.type.lower()}:{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        # A path need not be UTF-8: its odd bytes are shown as escapes
        # rather than lost (with the line that says where we listen).
        name = address.name
        raw = name if isinstance(name, bytes) else str(name).encode("utf-8", "surrogateescape")
        return f"unix:{raw.decode('utf-8', 'backslashreplace')}"
    return str(address)


def describe_listening(description: str, address: IAddress) -> str:
    """
    Where a listener listens, as C{describe_address} gives it, but with the
    kind its description names: an C{ssl:} port's address says C{TCP}.
    """
    text = describe_address(address)
    if description.partition(":")[0] == "ssl" and text.startswith("tcp"):
        return "ssl" + text[len("tcp6") if text.startswith("tcp6") else len("tcp") :]
    return text
