"""
The one place echoapp touches what Twisted does not promise to keep: private
names and internals.  Everything else in echoapp uses Twisted's public API.

Each item here is small, says what it relies on, and has a test of its own
in C{tests/test_twisted_seam.py} that names the item when a Twisted release
changes it.  There is no upper bound on Twisted: each item that can fail
has a fallback, taken the first time the internal is missing, with one log
line (L{fall_back}) naming the item, what is missing and what echoapp does
instead.  Private modules are imported inside the item that uses them, so a
release that drops one costs that item's feature, never C{import echoapp}.
The largest item, eager writes for Twisted's stream transports, is
L{echoapp._twisted._eager}; everything is named from here.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import struct
import sys
from typing import Any

from twisted.internet import abstract
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.logfile import LogFile

from echoapp._process import PROCESS
from echoapp._twisted._eager import (
    EagerTCPClient,
    EagerTCPConnector,
    EagerTCPPort,
    EagerTCPServer,
    EagerUNIXPort,
    EagerUNIXServer,
    EagerWrites,
    adopt_eager_port,
    connect_eager_tcp,
    eager_writes_problem,
    mark_tls,
    queued,
)
from twisted import version as twisted_version

log = Logger(namespace="echoapp.twisted")


def fall_back(item: str, problem: str, instead: str) -> None:
    """
    Say, once per process, that the seam item C{item} cannot use what it
    relies on in this Twisted (C{problem}) and does C{instead}: one line an
    operator can search for, and the name to look up in this module.
    """
    if item in PROCESS.fallen_back:
        return
    PROCESS.fallen_back.add(item)
    log.warn(
        "Twisted {version}: {problem}, so {instead} (echoapp._twisted.{item})",
        version=twisted_version.short(),
        problem=problem,
        instead=instead,
        item=item,
    )


def resolve_ipv6(host: str, port: int) -> tuple[Any, ...]:
    """
    The socket address Twisted binds for an IPv6 C{host}, scope IDs
    (C{fe80::1%eth0}) included: L{twisted.internet.tcp._resolveIPv6}.
    Without it, C{getaddrinfo} with C{AI_NUMERICHOST}, which is what it
    does today.
    """
    try:
        from twisted.internet.tcp import _resolveIPv6
    except ImportError:
        fall_back(
            "resolve_ipv6",
            "no twisted.internet.tcp._resolveIPv6",
            "IPv6 interfaces are resolved with socket.getaddrinfo",
        )
        info = socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        return tuple(info[0][4])
    return tuple(_resolveIPv6(host, port))


def tcp_server_parameters(endpoint: TCP4ServerEndpoint | TCP6ServerEndpoint) -> tuple[int, str, int] | None:
    """
    C{(port, interface, backlog)} of a parsed C{tcp:}/C{tcp6:} description:
    Twisted keeps them as C{_port}, C{_interface} and C{_backlog}, and has
    no public parser that returns them.  L{None} when it no longer does:
    the endpoint is then used as Twisted made it (no C{--reuse-port}, and
    Twisted's own transport on the asyncio reactor).
    """
    try:
        return endpoint._port, endpoint._interface, endpoint._backlog
    except AttributeError:
        fall_back(
            "tcp_server_parameters",
            "TCP4ServerEndpoint has no _port, _interface or _backlog",
            "--reuse-port is refused and tcp: listeners use Twisted's own transport",
        )
        return None


def on_asyncio(reactor: Any) -> bool:
    """Whether C{reactor} is Twisted's asyncio reactor (uvloop's too); its module is not imported here."""
    module = sys.modules.get("twisted.internet.asyncioreactor")
    return module is not None and isinstance(reactor, module.AsyncioSelectorReactor)


def asyncio_loop(reactor: Any) -> asyncio.AbstractEventLoop | None:
    """
    The asyncio loop under C{reactor} (Twisted's asyncio reactor keeps it as
    C{_asyncioEventloop}), or L{None} for any other reactor.  L{None} too
    when an asyncio reactor no longer keeps it: its listeners then use
    Twisted's own transports instead of the loop's.
    """
    loop = getattr(reactor, "_asyncioEventloop", None)
    if isinstance(loop, asyncio.AbstractEventLoop):
        return loop
    if on_asyncio(reactor):
        fall_back(
            "asyncio_loop",
            "AsyncioSelectorReactor has no _asyncioEventloop",
            "listeners use Twisted's own transports, not the loop's",
        )
    return None


_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def client_host(endpoint: Any, description: str | None = None) -> str | None:
    """
    The host name a client endpoint connects to, for TLS server name checks:
    C{HostnameEndpoint._hostText} or C{TCP4ClientEndpoint._host}; L{None}
    for endpoints that have no host (UNIX).  When a TCP endpoint keeps
    neither, the host is read from C{description}, the client endpoint
    string it was made from (C{tcp:HOST:PORT} or C{tcp:host=HOST:...}).
    """
    host = getattr(endpoint, "_hostText", None) or getattr(endpoint, "_host", None)
    if host is not None:
        return str(host)
    if not isinstance(endpoint, HostnameEndpoint | TCP4ClientEndpoint | TCP6ClientEndpoint):
        return None
    fall_back(
        "client_host",
        f"{type(endpoint).__name__} has no _hostText or _host",
        "TLS checks the host named in the endpoint string",
    )
    if description is None:
        return None
    fields = _UNESCAPED_COLON.split(description)[1:]
    named = dict(field.split("=", 1) for field in fields if "=" in field)
    positional = [field for field in fields if "=" not in field]
    found = named.get("host") or (positional[0] if positional else None)
    return None if found is None else found.replace("\\:", ":")


def global_reactor() -> Any:
    """
    The global reactor, imported when first needed: importing
    C{twisted.internet.reactor} installs the default one, so no echoapp
    module may do it at import time, before twistd installs the chosen one.
    """
    from twisted.internet import reactor

    return reactor


def twistd_log_file() -> LogFile | None:
    """
    The log file twistd writes to (C{--logfile FILE}), or L{None} when it
    logs elsewhere.  twistd keeps it only in the closure of the SIGUSR1
    handler it installs to rotate it (C{UnixAppLogger._getLogObserver}).
    A SIGUSR1 handler that holds no L{LogFile} is left where it is (it
    rotates as twistd does), and L{None} is returned.
    """
    handler = signal.getsignal(signal.SIGUSR1)
    if not callable(handler):
        return None
    for cell in getattr(handler, "__closure__", None) or ():
        contents = cell.cell_contents
        if isinstance(contents, LogFile):
            return contents
    fall_back(
        "twistd_log_file",
        "the SIGUSR1 handler holds no LogFile",
        "SIGUSR1 is left to that handler and SIGHUP reopens no log file (see SignalService's log_file)",
    )
    return None


# (V1Parser, V2Parser, InvalidProxyHeader) once imported, or None if missing.
_proxy_parsers: list[tuple[Any, Any, type[Exception]] | None] = []


def proxy_parsers() -> tuple[Any, Any, type[Exception]] | None:
    """
    Twisted's PROXY protocol parsers (C{twisted.protocols.haproxy._v1parser},
    C{_v2parser}, C{_exceptions}), imported at first use; L{None} when this
    Twisted lacks one, and C{haproxy:} listeners are then refused.
    """
    if not _proxy_parsers:
        try:
            from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
            from twisted.protocols.haproxy._v1parser import V1Parser
            from twisted.protocols.haproxy._v2parser import V2Parser
        except ImportError as error:
            fall_back(
                "parse_proxy_header",
                f"no {error.name or 'twisted.protocols.haproxy parser'}",
                "haproxy: listeners are refused",
            )
            _proxy_parsers.append(None)
        else:
            _proxy_parsers.append((V1Parser, V2Parser, InvalidProxyHeader))
    return _proxy_parsers[0]


def parse_proxy_header(data: bytes) -> tuple[bool, IAddress | None, bytes]:
    """
    A PROXY protocol header (v1 or v2) at the start of C{data}, read with
    Twisted's own parsers (L{proxy_parsers}; only the wrapping endpoint is
    public there, and it admits a connection before its header is read).

    @return: C{(complete, source, rest)}: C{complete} is False while more
        bytes are needed; C{source} is the client's address, or L{None} for
        a v2 LOCAL or v1 UNKNOWN header (the balancer speaking for itself);
        C{rest} is what followed the header.
    @raise ValueError: the header is malformed, or this Twisted has no parsers.
    """
    parsers = proxy_parsers()
    if parsers is None:
        raise ValueError("this Twisted has no PROXY protocol parsers")
    v1, v2, invalid = parsers
    if len(data) < len(v2.PREFIX) and v2.PREFIX.startswith(data):
        return False, None, b""
    if data.startswith(v2.PREFIX):
        if len(data) < 16:
            return False, None, b""
        if data[12] & 0xF0 != 0x20:
            raise ValueError("not PROXY protocol version 2")
        parser = v2()
    elif data.startswith(v1.PROXYSTR) or v1.PROXYSTR.startswith(data):
        parser = v1()
    else:
        raise ValueError("no PROXY protocol header")
    try:
        info, rest = parser.feed(data)
    except (invalid, ValueError, KeyError, IndexError, struct.error) as error:
        raise ValueError(f"malformed PROXY header ({type(error).__name__})") from None
    if info is None:
        return False, None, b""
    return True, info.source, rest or b""


def below_wrappers(transport: Any) -> Any:
    """
    The transport under every L{ProtocolWrapper} that only passes calls on
    (a recording or fault wrapper: C{ProtocolWrapper.__getattr__} hands out
    the wrapped transport's attributes, so what is asked of the wrapper is
    answered by whatever is below it); TLS, a wrapper too, keeps its own
    buffer (C{_appSendBuffer}, set when it is made) and is where it stops.
    """
    while isinstance(transport, ProtocolWrapper) and "_appSendBuffer" not in vars(transport):
        transport = transport.transport
    return transport


def unsent(transport: Any) -> int | None:
    """
    Bytes a stream transport still holds, not yet taken by the kernel: for
    TLS, the cleartext waiting for the handshake and what the transport
    below it queues; for Twisted's own transports, L{queued}; for
    echoapp's native ones, their loop's buffer.  L{None} when it cannot
    tell (a test's transport).
    """
    transport = below_wrappers(transport)
    held = 0
    cleartext = getattr(transport, "_appSendBuffer", None)  # TLSMemoryBIOProtocol
    if cleartext is not None:
        small_writes = getattr(getattr(transport, "_aggregator", None), "_buffer", ())  # until the next turn
        held += sum(len(piece) for piece in cleartext) + sum(len(piece) for piece in small_writes)
        transport = transport.transport
    if isinstance(transport, abstract.FileDescriptor):
        return held + queued(transport)
    buffered = getattr(transport, "unsent", None)
    return None if buffered is None else held + buffered()


__all__ = [
    "EagerTCPClient",
    "EagerTCPConnector",
    "EagerTCPPort",
    "EagerTCPServer",
    "EagerUNIXPort",
    "EagerUNIXServer",
    "EagerWrites",
    "adopt_eager_port",
    "asyncio_loop",
    "below_wrappers",
    "client_host",
    "connect_eager_tcp",
    "eager_writes_problem",
    "fall_back",
    "global_reactor",
    "mark_tls",
    "on_asyncio",
    "parse_proxy_header",
    "proxy_parsers",
    "queued",
    "resolve_ipv6",
    "tcp_server_parameters",
    "twistd_log_file",
    "unsent",
]
