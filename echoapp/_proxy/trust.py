"""
What a client of the API may make the daemon do: the API's trust model.

Whoever can reach the API port drives the daemon, with the daemon's own
rights: every local user, when the API is on loopback.  So a proxy made or
moved through the API listens only where the API itself does (its own
interface, and loopback), on an unprivileged port, and connects upstream
over TCP (or UDP) with no file of the daemon's in the way (no client
certificate, no UNIX socket).  Anything wider is the operator's to allow on
the command line (L{Allowance}: C{--api-allow-listen},
C{--api-allow-unix}, C{--api-allow-privileged-ports}); proxies from the
command line and C{--config} are the operator's and are not checked here.

An empty host (C{":PORT"}, C{"tcp:0"}, no C{listen} at all) means the API's
own interface, not every interface: an API on loopback makes loopback
proxies unless told otherwise.  Checked without the reactor and without
resolving a name (only C{localhost} is known, as loopback).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from echoapp._proxy.addresses import (
    is_udp,
    listen_description,
    toxiproxy_form,
    udp_listen_description,
    upstream_description,
)
from echoapp._proxy.errors import ListenNotAllowed, UpstreamNotAllowed
from echoapp._proxy.schema import ProxySpec
from echoapp._transports.descriptions import split_proxy

EVERY = ("0.0.0.0", "::")  # every interface (IPv4; IPv6 and IPv4 both)
LOOPBACK_NAME = "localhost"
FIRST_UNPRIVILEGED = 1024
# Parameters an upstream from the API may have: none names a file, an
# endpoint inside it, or anything but where to connect from and how long.
UPSTREAM_PARAMETERS = {"host", "port", "timeout", "bindAddress"}
# Parameters naming TLS key, certificate and trust files, a listener's or a
# client's: the daemon's files, so only from a directory the operator allowed.
TLS_FILES = {
    "privateKey",
    "certKey",
    "extraCertChain",
    "dhParameters",
    "certificate",
    "trustRoots",
    "caCertsDir",
}
_PARAMETER = re.compile(r"(?<!\\):(?=[A-Za-z]\w*=)")
_COLON = re.compile(r"(?<!\\):")


def _split(description: str) -> tuple[str, list[str], dict[str, str]]:
    """C{(kind, positional, named)}: a bare IPv6 address after C{key=} needs no escaping."""
    kind, _, rest = description.partition(":")
    chunks = _PARAMETER.split(rest) if rest else []
    positional: list[str] = []
    named: dict[str, str] = {}
    for number, chunk in enumerate(chunks):
        key, equals, value = chunk.partition("=")
        if equals and re.fullmatch(r"[A-Za-z]\w*", key):
            named[key] = value
        elif number == 0:
            positional = _COLON.split(chunk)
    return kind, positional, {key: value.replace("\\:", ":") for key, value in named.items()}


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _under(path: str, directories: Sequence[str]) -> bool:
    """C{path} (symbolic links followed) lies in one of C{directories}."""
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, os.path.realpath(d)]) == os.path.realpath(d) for d in directories)


@dataclass(frozen=True)
class Allowance:
    """
    What the operator lets the API's clients have.

    @ivar home: the API's own interface, where an empty host listens
        (C{0.0.0.0} when the API listens on every interface).
    @ivar interfaces: addresses the operator allowed besides C{home} and
        loopback (C{--api-allow-listen}); C{0.0.0.0} allows every IPv4
        address, C{::} every address.
    @ivar unix: directories whose UNIX sockets the API may listen on and
        connect to (C{--api-allow-unix}); none by default.
    @ivar tls: directories whose TLS key and certificate files the API may
        name (C{--api-allow-tls}): a TLS listener, a client certificate
        upstream.  None by default: it could serve the daemon's own key.
    @ivar privileged: ports under 1024 (C{--api-allow-privileged-ports}).
    """

    home: str = "127.0.0.1"
    interfaces: tuple[str, ...] = ()
    unix: tuple[str, ...] = ()
    tls: tuple[str, ...] = ()
    privileged: bool = False

    def _tls_files_allowed(self, named: dict[str, str]) -> bool:
        files = [named[key] for key in TLS_FILES if key in named]
        return all(os.path.isabs(path) and self.tls and _under(path, self.tls) for path in files)

    @classmethod
    def of_api(cls, api_listen: str, **wider: object) -> Allowance:
        """The allowance of an API on C{api_listen} (an endpoint string): its interface is home."""
        _, description = split_proxy(api_listen)
        kind, _, named = _split(description)
        if kind in ("tcp", "tcp6", "ssl"):
            home = named.get("interface") or ("::" if kind == "tcp6" else "0.0.0.0")
        else:  # a UNIX socket or an inherited one: reachable by whom its file allows, loopback for proxies
            home = "127.0.0.1"
        return cls(home, **wider)  # type: ignore[arg-type]

    def _host_allowed(self, host: str) -> bool:
        if host == LOOPBACK_NAME or host in (self.home, *self.interfaces):
            return True
        address = _address(host)
        if address is None:  # a name: it could be any interface
            return "::" in (self.home, *self.interfaces)
        if address.is_loopback:
            return True
        wide = (self.home, *self.interfaces)
        return "::" in wide or (address.version == 4 and "0.0.0.0" in wide)

    def _refuse_listen(self, listen: str, why: str, option: str = "--api-allow-listen") -> ListenNotAllowed:
        where = " and ".join(dict.fromkeys((self.home, "loopback")))
        return ListenNotAllowed(
            f"listen {listen!r}: {why} (the API listens on {where}; the operator's {option} allows more)"
        )

    def listen(self, spec: ProxySpec) -> str:
        """
        C{spec}'s listen address as the API may have it: an empty host made
        the API's own interface, the rest as given.

        @raise ListenNotAllowed: for anywhere the operator did not allow.
        """
        given = spec.listen
        udp = is_udp(spec)
        proxied, description = split_proxy(
            listen_description(given) if not udp else udp_listen_description(given)
        )
        kind, positional, named = _split(description or ("udp:0" if udp else "tcp:0"))
        if kind == "unix":
            path = named.get("address") or (positional[0] if positional else "")
            if (
                not self.unix
                or not os.path.isabs(path)
                or not _under(os.path.dirname(path) or "/", self.unix)
            ):
                raise self._refuse_listen(
                    given, "a UNIX socket outside the directories allowed", "--api-allow-unix"
                )
            return given
        if kind == "ssl" and not self._tls_files_allowed(named):
            raise self._refuse_listen(
                given, "TLS key files outside the directories allowed", "--api-allow-tls"
            )
        if kind not in ("tcp", "tcp6", "udp", "ssl"):
            raise self._refuse_listen(
                given, f"{kind}: listeners are the operator's", "command line or --config"
            )
        port_text = named.get("port") or (positional[0] if positional else "0")
        if port_text.isdigit() and 0 < int(port_text) < FIRST_UNPRIVILEGED and not self.privileged:
            raise self._refuse_listen(
                given, f"port {port_text} is privileged", "--api-allow-privileged-ports"
            )
        host = named.get("interface", "")
        if host and not self._host_allowed(host):
            raise self._refuse_listen(given, f"{host} is not an interface allowed")
        if host or self.home in EVERY:
            return given  # as given: the API's own interface is every interface
        return self._at_home(given, kind, port_text, proxied, description)

    def _at_home(self, given: str, kind: str, port: str, proxied: bool, description: str) -> str:
        """C{given}, which names no host, on the API's own interface, in the form it was given."""
        home = self.home
        bare = given.removeprefix("udp:")
        if not bare or toxiproxy_form(bare) is not None:  # "", ":PORT", "udp::PORT"
            where = f"[{home}]:{port}" if ":" in home else f"{home}:{port}"
            return ("udp:" if given.startswith("udp:") else "") + where
        if kind in ("tcp", "tcp6"):
            description = ("tcp6" if ":" in home else "tcp") + description[len(kind) :]
        escaped = home.replace(":", "\\:")
        return ("haproxy:" if proxied else "") + f"{description}:interface={escaped}"

    def upstream(self, spec: ProxySpec) -> None:
        """
        @raise UpstreamNotAllowed: for an upstream that is not TCP (or UDP)
            to a host and port, or that names a file of the daemon's.
        """
        if is_udp(spec):
            return  # a literal address and port, nothing else (checked when it is made)
        given = spec.upstream
        kind, positional, named = _split(upstream_description(given))
        if kind == "unix":
            path = named.get("path") or (positional[0] if positional else "")
            if self.unix and os.path.isabs(path) and _under(path, self.unix):
                return
            raise UpstreamNotAllowed(
                f"upstream {given!r}: a UNIX socket outside the directories allowed "
                "(the operator allows some with --api-allow-unix)"
            )
        if kind not in ("tcp", "tcp6", "tls", "ssl"):
            raise UpstreamNotAllowed(f"upstream {given!r}: the API connects over TCP, TLS or UDP only")
        if not self._tls_files_allowed(named):
            raise UpstreamNotAllowed(
                f"upstream {given!r}: TLS files outside the directories allowed (see --api-allow-tls)"
            )
        extra = sorted(set(named) - UPSTREAM_PARAMETERS - TLS_FILES)
        if extra:
            raise UpstreamNotAllowed(
                f"upstream {given!r}: {', '.join(extra)} is the operator's to give (command line, --config)"
            )

    def admit(self, spec: ProxySpec, listen: bool = True, upstream: bool = True) -> ProxySpec:
        """
        C{spec} as the API may have it (C{listen}, C{upstream}: whether each
        is new and so checked).

        @raise ListenNotAllowed: see L{listen}.
        @raise UpstreamNotAllowed: see L{upstream}.
        """
        if upstream:
            self.upstream(spec)
        return replace(spec, listen=self.listen(spec)) if listen else spec
