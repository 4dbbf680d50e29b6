"""
What every named proxy is, TCP or UDP: a service in the tree like every
other echoapp service, its listener a child while it is enabled (so the
walkers that serve health, drain and C{echoapp.testing}'s addresses see it),
with its spec, its toxics, the address it shows, toxiproxy's JSON for it,
and the edits toxiproxy's API makes, each raising the proxies' own errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from echoapp import StartupError
from echoapp._limits.descriptors import DESCRIPTORS, HoldsDescriptor
from echoapp._proxy.addresses import check, check_udp, is_udp, offered_by, shown
from echoapp._proxy.errors import CannotListen, Exists, Invalid, NoRoom, NotFound
from echoapp._proxy.loops import check_tcp_loop, check_udp_loop
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import ProxyFaults, Toxic, toxics_json
from echoapp._record import Recorder, RecordingDatagramProtocol, RecordingFactory
from echoapp._transports.listen import UDPListenService

NAME = "echoapp-proxy"
# What share of the descriptor ceiling proxies opened while running may
# hold with their listeners and connections: the rest is for clients, and
# for the operator's own call to the API that deletes proxies.
LISTENERS_SHARE = 0.75
MAX_TOXICS = 100  # toxics a proxy may have (toxiproxy sets no bound)

log = Logger(namespace="echoapp.proxy")


def check_toxic(spec: ProxySpec, toxic: Toxic) -> None:
    """
    @raise Invalid: for a toxic the proxy C{spec} describes cannot have.
    """
    try:
        toxic.faults.check_applies(*offered_by(spec, toxic.direction))
    except ValueError as error:
        kind = "UDP" if is_udp(spec) else "TCP"
        raise Invalid(f"toxic {toxic.name} on {kind} proxy {spec.name}: {error}") from None


class ProxyService(HoldsDescriptor, MultiService):
    """
    One named proxy.  In the tree it is unnamed (its listener's lines speak
    as C{echoapp-proxy}, as every listener speaks as its service); its name
    is its spec's.  L{KIND} names its kind in a refusal; a subclass says how
    it listens (L{_listener}) and what an upstream change means.

    Its listening socket is a descriptor of the process's like a
    connection's, counted against the same ceiling while it listens: a proxy
    opened while the proxies run is refused (L{NoRoom}) past
    L{LISTENERS_SHARE} of the ceiling, so that clients are always served or
    told C{server busy} (never reset by C{accept()}'s C{EMFILE}) and the
    operator's API call gets through.
    """

    KIND = ""
    # Where the wire record of this proxy's clients is kept: a test's (echoapp.testing), else its
    # parent's (the proxies of echoapp-proxy --record: every proxy, those the API makes too), or none.
    recorder: Recorder | None = None

    def __init__(self, spec: ProxySpec, faults: ProxyFaults) -> None:
        super().__init__()
        self.spec = spec
        self.faults = faults
        self.listener: Any = None

    @property
    def proxy_name(self) -> str:
        """The proxy's name, as toxiproxy's API and the registry know it."""
        return self.spec.name

    def _listener(self) -> Service:
        """A new listener for the proxy's address (not yet started)."""
        raise NotImplementedError()

    def _forget_port(self, port: Any) -> None:
        """
        The port is closing: enabled again, it listens where it did (toxiproxy
        too), so a port 0 is pinned to the real one.
        """

    # --- toxics: the one place a toxic is added, replaced or removed ---

    def check_toxic(self, toxic: Toxic) -> None:
        """
        @raise Invalid: for a toxic its stream cannot have (UDP loss on TCP;
            bandwidth, slicing or resets on UDP; a half-close over TLS; a
            stalled handshake without TLS).
        """
        check_toxic(self.spec, toxic)

    def add_toxic(self, toxic: Toxic) -> None:
        """
        A new toxic; open connections see it.

        @raise Exists: for a name taken.
        @raise Invalid: for a toxic its stream cannot have, or one past L{MAX_TOXICS}.
        """
        if toxic.name in self.faults.toxics:
            raise Exists("toxic already exists")
        if len(self.faults.toxics) >= MAX_TOXICS:  # each costs every chunk a look: 20,000 cost 12 ms
            raise Invalid(f"too many toxics: a proxy has at most {MAX_TOXICS}")
        self.check_toxic(toxic)
        self.faults.set(toxic)

    def replace_toxic(self, toxic: Toxic) -> None:
        """
        The toxic of C{toxic}'s name, replaced in its place.

        @raise NotFound: if there is none.
        @raise Invalid: for a toxic its stream cannot have.
        """
        self.toxic(toxic.name)
        self.check_toxic(toxic)
        self.faults.set(toxic)

    def remove_toxic(self, name: str) -> None:
        """
        @raise NotFound: if there is no toxic C{name}.
        """
        self.faults.remove(self.toxic(name).name)

    def toxic(self, name: str) -> Toxic:
        """
        @raise NotFound: if there is no toxic C{name}.
        """
        found = self.faults.toxics.get(name)
        if found is None:
            raise NotFound("toxic not found")
        return found

    # --- listening ---

    @property
    def port(self) -> Any:
        """The listening port while enabled, else L{None}."""
        return self.listener.port if self.listener is not None else None

    @property
    def address(self) -> str:
        """Where it listens now (the real port for port 0), or as it was asked while disabled."""
        port = self.port
        return shown(port.getHost()) if port is not None else self.spec.listen

    def open(self) -> None:
        """
        Listen, at once, if the proxies run (else when they start): the
        listener becomes this service's child.

        @raise CannotListen: for an address it cannot have.
        """
        if self.listener is not None:
            self.spec.enabled = True
            return
        if self.running:
            self._hold_room()
        listener = self._listener()
        recorder = self.recorder if self.recorder is not None else getattr(self.parent, "recorder", None)
        if recorder is not None:
            self._record(listener, recorder)
        try:
            listener.setServiceParent(self)  # binds now when running: stream endpoints bind synchronously
        except StartupError as error:
            listener.disownServiceParent()
            self.release_descriptor()
            raise CannotListen(str(error.code)) from None
        self.spec.enabled = True
        self.listener = listener

    def _record(self, listener: Any, recorder: Recorder) -> None:
        """Each client's connection (a UDP proxy's: each source) recorded, outermost: toxics' actions too."""

        def note() -> str:
            toxics = [f"{name} {toxic.faults}" for name, toxic in self.faults.toxics.items()]
            return f"seed {self.faults.seed}, toxics: {', '.join(toxics) or 'none'}"

        if isinstance(listener, UDPListenService):
            listener.protocol = RecordingDatagramProtocol(listener.protocol, recorder, NAME, note, self)
        else:
            listener.factory = RecordingFactory(listener.factory, recorder, NAME, note, self)

    def _hold_room(self) -> None:
        """
        Count the listener's descriptor, if it leaves room for connections.

        @raise NoRoom: if it would not.
        """
        ceiling = DESCRIPTORS.limit()
        if not self._descriptor_held and DESCRIPTORS.open + 1 > ceiling * LISTENERS_SHARE:
            raise NoRoom(
                f"listen {self.spec.listen!r}: too many open files: {DESCRIPTORS.open} of the "
                f"{ceiling} descriptors for listeners and connections are held, and a quarter is kept "
                "for connections (raise the process's RLIMIT_NOFILE)"
            )
        self.hold_descriptor()

    def close(self) -> Deferred[Any]:
        """Stop listening; the Deferred fires once the port is closed."""
        self.spec.enabled = False
        listener, self.listener = self.listener, None
        self.release_descriptor()
        if listener is None:
            return succeed(None)
        if listener.port is not None:
            self._forget_port(listener.port)
        return maybeDeferred(listener.disownServiceParent)

    def startService(self) -> None:
        """Count the listener, if privilegedStartService did not (a proxy added to a running tree)."""
        if self.listener is not None and not self.running:
            self.hold_descriptor()
        super().startService()

    def privilegedStartService(self) -> None:
        """Listen (if enabled), or stop start-up with one line naming the proxy."""
        if self.listener is not None:
            self.hold_descriptor()  # the operator's proxies listen whatever the room: start-up is theirs
        try:
            super().privilegedStartService()
        except StartupError as error:
            code = str(error.code)
            raise StartupError(f"echoapp-proxy: proxy {printable(self.proxy_name)}: {code}", code) from None

    def stopService(self) -> Deferred[None] | None:
        """Stop listening: the listener's descriptor is given back with it."""
        self.release_descriptor()
        return super().stopService()

    def as_json(self) -> dict[str, Any]:
        """toxiproxy's shape, field for field (its C{Logger} is always empty)."""
        return {
            "name": self.proxy_name,
            "listen": self.address,
            "upstream": self.spec.upstream,
            "enabled": self.spec.enabled,
            "Logger": {},
            "toxics": toxics_json(self.faults),
        }


# Control characters as escapes: a name is the API client's, and reaches the
# log and a header (a raw ESC repainted the operator's terminal).
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]}
_SEPARATORS_AND_OVERRIDES = [0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_CONTROLS |= {code: f"\\u{code:04x}" for code in _SEPARATORS_AND_OVERRIDES}
_CONTROLS[ord("\\")] = "\\\\"  # a backslash of the name's own, told from an escape


def printable(text: str) -> str:
    """
    C{text} for a log line: its control characters as C{\\xNN} (line
    and paragraph separators and bidirectional overrides as C{\\uNNNN}),
    a backslash doubled.
    """
    return text.translate(_CONTROLS)


def ignored_line(proxy: str, toxic: Toxic) -> str:
    """One line naming the attributes a toxic was given that its type does not have."""
    names = ", ".join(repr(name)[:40] for name in toxic.ignored[:8])
    named = f"proxy {printable(proxy)}, toxic {printable(toxic.name)}"
    return f"{named}: ignored attribute(s) {names}: {toxic.type} has none such"


def warn_ignored(proxy: ProxyService) -> None:
    """Say, in one line each, the attributes its toxics were given that their types do not have."""
    for toxic in proxy.faults.toxics.values():
        if toxic.ignored:
            log.warn("{line}", line=ignored_line(proxy.proxy_name, toxic))


def check_proxy(spec: ProxySpec, toxics: Sequence[Toxic] = ()) -> None:
    """
    What L{Proxies.make} would refuse, checked without making anything (the
    command line's check, before the reactor runs).

    @raise Invalid: for a bad address or a toxic it cannot have.
    @raise CannotListen: for a listen address that is none.
    @raise Exists: for two toxics of one name.
    """
    check_udp(spec) if is_udp(spec) else check(spec)
    (check_udp_loop if is_udp(spec) else check_tcp_loop)(spec)  # a proxy to itself: refused in one line
    names: set[str] = set()
    for toxic in toxics:
        if toxic.name in names:
            raise Exists("toxic already exists")
        names.add(toxic.name)
        check_toxic(spec, toxic)
