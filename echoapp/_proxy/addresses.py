"""
A proxy's addresses: toxiproxy's C{HOST:PORT} form or any Twisted endpoint
string (C{tcp6:...}, C{unix:...}, C{ssl:...}, C{haproxy:...} to listen;
C{tls:...}, C{unix:...} upstream), and for UDP proxies C{udp:...} or the
C{HOST:PORT} form with C{"type": "udp"}; checked without the reactor, so a
mistake is one line before anything listens.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from twisted.internet.endpoints import clientFromString

from echoapp._faults import DATAGRAM, PLAIN, STREAM, TLS, offered
from echoapp._proxy.errors import CannotListen, Invalid
from echoapp._proxy.schema import ProxySpec
from echoapp._transports.endpoints import (
    ParseOnlyReactor,
    StreamListen,
    UDPListen,
    describe_address,
    one_line,
)

ENDPOINT_KINDS = {"tcp", "tcp6", "unix", "ssl", "tls", "haproxy", "systemd", "udp"}
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]*\]|[^:\[\]]*):(\d{1,5})$")


def _host_port(text: str) -> tuple[str, int] | None:
    match = _HOST_PORT.match(text)
    if match is None or text.partition(":")[0] in ENDPOINT_KINDS:
        return None
    host, port = match.group(1).strip("[]"), int(match.group(2))
    if port > 65535:
        return None
    return host, port


def toxiproxy_form(text: str) -> tuple[str, int] | None:
    """C{(host, port)} of toxiproxy's C{HOST:PORT} (host C{""} for C{:PORT}); else L{None}."""
    return _host_port(text)


def _escaped(host: str) -> str:
    return host.replace(":", "\\:")


def listen_description(text: str) -> str:
    """toxiproxy's C{HOST:PORT} (C{:PORT} is every interface) as an endpoint string; others as they are."""
    found = _host_port(text)
    if found is None:
        return text
    host, port = found
    if ":" in host:
        return f"tcp6:{port}:interface={_escaped(host)}"
    return f"tcp:{port}:interface={host}" if host else f"tcp:{port}"


def upstream_description(text: str) -> str:
    """toxiproxy's C{HOST:PORT} as a client endpoint string; others as they are."""
    found = _host_port(text)
    if found is None:
        return text
    host, port = found
    return f"tcp:host={_escaped(host)}:port={port}"


def plain_tcp(text: str) -> tuple[str, int] | None:
    """
    C{(host, port)} of an upstream that is plain TCP and nothing more
    (C{HOST:PORT}, C{tcp:HOST:PORT}, C{tcp:host=H:port=P}), which a loop can
    connect to natively; L{None} for anything with more to it (TLS, UNIX,
    a timeout or bind address).
    """
    found = _host_port(text)
    if found is not None:
        # ":PORT" is this host, as toxiproxy dials it: Twisted's endpoint says so, the loop cannot.
        return found if found[0] else None
    kind, _, rest = text.partition(":")
    if kind != "tcp":
        return None
    parts = re.split(r"(?<!\\):", rest)
    named = dict(part.partition("=")[::2] for part in parts if "=" in part)
    bare = [part for part in parts if "=" not in part]
    if len(bare) == 2 and not named:
        named = {"host": bare[0], "port": bare[1]}
    if set(named) != {"host", "port"} or len(parts) != 2 or not named["port"].isdigit():
        return None
    port = int(named["port"])
    return (named["host"].replace("\\:", ":"), port) if 0 < port < 65536 and named["host"] else None


def shown(address: Any) -> str:
    """A listening address as toxiproxy shows it: C{HOST:PORT}, C{[HOST]:PORT}; a UNIX path as a path."""
    text = describe_address(address)
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None or port is None:
        return text.partition(":")[2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check(spec: ProxySpec) -> tuple[StreamListen, Any]:
    """
    The listener and the upstream endpoint, parsed without the reactor.

    @raise Invalid: with a one-line reason (a listen address that is
        none: L{CannotListen}, as toxiproxy finds out when it binds).
    """
    for field_name in ("name", "upstream"):
        if not getattr(spec, field_name):
            raise Invalid(f"missing required field: {field_name}")
    try:
        listen = StreamListen.parse(listen_description(spec.listen or ":0"))
    except ValueError as error:
        raise CannotListen(f"listen {spec.listen!r}: {error}") from None
    try:
        upstream = clientFromString(ParseOnlyReactor(), upstream_description(spec.upstream))
    except TypeError:  # a parameter missing or unknown: Python's words name Twisted's classes
        raise Invalid(
            f"upstream {spec.upstream!r}: not a client endpoint (a parameter missing or unknown)"
        ) from None
    except Exception as error:
        raise Invalid(f"upstream {spec.upstream!r}: {one_line(error)}") from None
    timeout = re.search(r"(?<![^:])timeout=([^:]*)", spec.upstream)
    if timeout is not None and not (timeout[1].isdigit() and int(timeout[1]) > 0):
        raise Invalid(f"upstream {spec.upstream!r}: a timeout is a whole number of seconds over 0")
    return listen, upstream


def is_udp(spec: ProxySpec) -> bool:
    """A UDP proxy: C{"type": "udp"} (toxiproxy would make a TCP one), or a C{udp:} address."""
    return spec.protocol == "udp" or spec.listen.startswith("udp:") or spec.upstream.startswith("udp:")


def udp_listen_description(text: str) -> str:
    """
    C{HOST:PORT} or C{udp:HOST:PORT}, the upstream's form (C{:PORT}: every
    IPv4 interface), as a C{udp:} description; others as they are.
    """
    found = _host_port(text.removeprefix("udp:"))
    if found is None:
        return text
    host, port = found
    return f"udp:{port}:interface={_escaped(host)}" if host else f"udp:{port}"


def udp_upstream(text: str) -> tuple[str, int]:
    """
    C{udp:HOST:PORT} or C{HOST:PORT} (C{[HOST]:PORT} for IPv6), HOST a literal address.

    @raise ValueError: with a one-line reason.
    """
    rest = text[len("udp:") :] if text.startswith("udp:") else text
    host, colon, port = rest.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"UDP upstream {text!r}: expected udp:ADDRESS:PORT with a literal IP address"
        ) from None
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"UDP upstream {text!r}: port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def check_udp(spec: ProxySpec) -> tuple[UDPListen, tuple[str, int]]:
    """
    A UDP proxy's port and upstream address, parsed.

    @raise Invalid: with a one-line reason.
    """
    try:
        listen = UDPListen.parse(udp_listen_description(spec.listen or ":0"))
        upstream = udp_upstream(spec.upstream)
    except ValueError as error:
        raise Invalid(str(error)) from None
    return listen, upstream


def offered_by(spec: ProxySpec, stream: str) -> tuple[str, ...]:
    """
    What a proxy's C{stream} can have its faults applied to, as
    L{echoapp._faults.Faults.check_applies} takes it: datagrams for a UDP
    proxy; the client's side (downstream) is the listener's, TLS or plain;
    the upstream side is TLS for a C{tls:}/C{ssl:} upstream, else plain.
    """
    if is_udp(spec):
        return (DATAGRAM,)
    if stream == "downstream":
        return offered([listen_description(spec.listen or ":0")])
    kind = spec.upstream.partition(":")[0]
    return (STREAM, TLS if kind in ("tls", "ssl") else PLAIN)


def _compared(text: str) -> tuple[str, str]:
    """A listen address's host and port as compared: C{localhost} is the loopback address it binds."""
    description = listen_description(text)
    kind, _, rest = description.partition(":")
    port, _, interface = rest.partition(":interface=")
    interface = {"localhost": "127.0.0.1", "": "0.0.0.0"}.get(interface, interface)
    return interface, port if kind in ("tcp", "tcp6") else description


def same_listen(proxy: Any, listen: str) -> bool:
    """
    Whether C{listen} is where C{proxy} listens (or was asked to): as
    given, as bound (port 0 made real), or the same address spelt another
    way (C{localhost:N} for C{127.0.0.1:N}, as toxiproxy compares them).
    """
    if listen in (proxy.spec.listen, proxy.address):
        return True
    return _compared(listen) in (_compared(proxy.spec.listen), _compared(proxy.address))
