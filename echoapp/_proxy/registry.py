"""
The named proxies of one C{echoapp-proxy} process: created from the command
line, a C{--config} file (toxiproxy's populate format) or the HTTP API, each
with its listener, its upstream, its toxics and its own limits.

A proxy forwards TCP (L{Proxy}) or UDP (L{NamedUDPProxy}); its addresses are
read by L{echoapp._proxy.addresses}.  Every change is all or nothing: a proxy
that cannot listen is not kept, and a batch (L{Proxies.populate}) that fails
anywhere leaves the proxies as they were.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

from echoapp import StartupError
from echoapp._limits.connections import Connections
from echoapp._metrics import TCPStats
from echoapp._proxy.addresses import check, check_udp, is_udp, listen_description, shown
from echoapp._proxy.errors import Exists, Invalid, NotFound, ProxyError
from echoapp._proxy.forward import ProxyFactory, upstream_endpoint
from echoapp._proxy.named import ProxyService, check_toxic
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import LiveFaultyFactory, ProxyFaults, Toxic
from echoapp._proxy.udp import NamedUDPProxy
from echoapp._transports.listen import StreamListenService
from echoapp._twisted import global_reactor
from echoapp.config import TCPLimits
from echoapp.services import DrainService, FaultNotice, stream_listener

NAME = "echoapp-proxy"

log = Logger(namespace="echoapp.proxy")


class Proxy(ProxyService):
    """
    One named TCP proxy: a listener while enabled, forwarding to its
    upstream through its toxics.  Its connections are its own, for limits
    and for the drain (a L{DrainService} child, as every echoapp TCP
    service has); its listener says C{echoapp-proxy listening on ...}.
    """

    KIND = "TCP"

    def __init__(
        self,
        spec: ProxySpec,
        faults: ProxyFaults,
        limits: TCPLimits,
        live: bool,
        reactor: Any = None,
        log_connections: bool = False,
    ) -> None:
        super().__init__(spec, faults)
        self.listen, _ = check(spec)
        self.connections = Connections(limits)
        self._reactor = reactor
        self._live = live
        self._log_connections = log_connections
        self._factory: Any = None
        DrainService(self.connections).setServiceParent(self)

    @property
    def reactor(self) -> Any:
        return self._reactor or global_reactor()

    def factory(self) -> Any:
        """Built once, at the first listen, when the reactor is the one that runs."""
        if self._factory is None:
            upstream = upstream_endpoint(self.reactor, self.spec.upstream)
            wrap = None
            if self._live:

                def wrap(factory: Any) -> Any:
                    return LiveFaultyFactory(factory, self.faults, "upstream")

            factory: Any = ProxyFactory(
                upstream,
                wrap,
                connections=self.connections,
                clock=self._reactor,
                stats=TCPStats(NAME, str(self.listen)),
                log_connections=self._log_connections,
            )
            if self._live:
                factory = LiveFaultyFactory(factory, self.faults, "downstream")
            self._factory = factory
        return self._factory

    def set_upstream(self, upstream: str) -> None:
        """Forward the next connections to C{upstream} (checked by the caller): the endpoint first."""
        if self._factory is not None:
            inner = getattr(self._factory, "wrappedFactory", self._factory)
            inner.upstream = upstream_endpoint(self.reactor, upstream)
        self.spec.upstream = upstream

    def _listener(self) -> StreamListenService:
        self.connections.draining = False
        return stream_listener(self.listen, self.factory(), self.connections, self.reactor)

    def _forget_port(self, port: Any) -> None:
        if self.listen.endpoint.partition(":")[0] in ("tcp", "tcp6") and not self.listen.proxy:
            self.spec.listen = shown(port.getHost())
            self.listen = replace(self.listen, endpoint=listen_description(self.spec.listen))

    def close(self) -> Deferred[Any]:
        """Stop listening (new clients are refused by the kernel) and cut open connections, as toxiproxy."""
        closing = super().close()
        for connection in list(self.connections.live):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return closing


def ignored_line(proxy: str, toxic: Toxic) -> str:
    """One line naming the attributes a toxic was given that its type does not have."""
    names = ", ".join(repr(name)[:40] for name in toxic.ignored[:8])
    return f"proxy {proxy}, toxic {toxic.name}: ignored attribute(s) {names}: {toxic.type} has none such"


AnyProxy = Proxy | NamedUDPProxy


def _warn_ignored(proxy: AnyProxy) -> None:
    for toxic in proxy.faults.toxics.values():
        if toxic.ignored:
            log.warn("{line}", line=ignored_line(proxy.proxy_name, toxic))


def _host_port(text: str) -> tuple[str, str]:
    """A listen address's host and port as compared: C{localhost} is the loopback address it binds."""
    description = listen_description(text)
    kind, _, rest = description.partition(":")
    port, _, interface = rest.partition(":interface=")
    interface = {"localhost": "127.0.0.1", "": "0.0.0.0"}.get(interface, interface)
    return interface, port if kind in ("tcp", "tcp6") else description


def same_listen(proxy: AnyProxy, listen: str) -> bool:
    """
    Whether C{listen} is where C{proxy} listens (or was asked to): as
    given, as bound (port 0 made real), or the same address spelt another
    way (C{localhost:N} for C{127.0.0.1:N}, as toxiproxy compares them).
    """
    if listen in (proxy.spec.listen, proxy.address):
        return True
    return _host_port(listen) in (_host_port(proxy.spec.listen), _host_port(proxy.address))


def check_proxy(spec: ProxySpec, toxics: Sequence[Toxic] = ()) -> None:
    """
    What L{Proxies.make} would refuse, checked without making anything (the
    command line's check, before the reactor runs).

    @raise Invalid: for a bad address or a toxic it cannot have.
    @raise CannotListen: for a listen address that is none.
    @raise Exists: for two toxics of one name.
    """
    check_udp(spec) if is_udp(spec) else check(spec)
    names: set[str] = set()
    for toxic in toxics:
        if toxic.name in names:
            raise Exists("toxic already exists")
        names.add(toxic.name)
        check_toxic(spec, toxic)


class PopulateFailed(ProxyError):
    """
    A populate stopped at the entry that failed (C{cause}); the proxies
    before it (C{kept}) stay, as toxiproxy keeps them.
    """

    def __init__(self, cause: ProxyError, kept: list[AnyProxy]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.kept = kept


class Proxies(MultiService):
    """
    Every proxy of the process, by name, in creation order: the service
    C{echoapp-proxy} runs, each proxy a child service with its listener
    (while enabled) and its drain, so that stopping the tree closes every
    listener and then drains every proxy's clients.  The seed is said at
    start (L{FaultNotice}), as every service with faults says it.
    """

    def __init__(
        self,
        limits: TCPLimits | None = None,
        reactor: Any = None,
        seed: int | None = None,
        live: bool = True,
        log_connections: bool = False,
    ) -> None:
        super().__init__()
        self.setName(NAME)
        self.limits = limits or TCPLimits()
        self.reactor = reactor
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.live = live
        self.log_connections = log_connections
        self.proxies: dict[str, AnyProxy] = {}
        self._closing: list[Deferred[Any]] = []
        FaultNotice(self).setServiceParent(self)

    @property
    def faults(self) -> str:
        """What L{FaultNotice} says of the faults: each proxy has its own toxics."""
        return "the toxics of each proxy"

    def make(self, spec: ProxySpec, toxics: Sequence[Toxic] = ()) -> AnyProxy:
        """
        A proxy neither listening nor kept; C{toxics} are its from the start.

        @raise Invalid: for a bad address or a toxic it cannot have.
        @raise Exists: for two toxics of one name.
        """
        faults = ProxyFaults(self.seed, self.reactor)
        proxy: AnyProxy
        if is_udp(spec):
            spec.protocol = "udp"
            proxy = NamedUDPProxy(spec, faults, self.limits, self.reactor)
        else:
            live = self.live or bool(toxics)
            proxy = Proxy(spec, faults, self.limits, live, self.reactor, self.log_connections)
        for toxic in toxics:
            proxy.add_toxic(toxic)
        return proxy

    def add(self, proxy: AnyProxy) -> AnyProxy:
        """
        Keep C{proxy}, a child of the tree, listening if enabled and the tree runs.

        @raise Exists: for a name taken.
        @raise CannotListen: for an address taken.
        """
        if proxy.proxy_name in self.proxies:
            raise Exists("proxy already exists")
        proxy.setServiceParent(self)
        if proxy.spec.enabled:
            try:
                proxy.open()
            except ProxyError:
                proxy.disownServiceParent()
                raise
        self.proxies[proxy.proxy_name] = proxy
        _warn_ignored(proxy)
        return proxy

    def get(self, name: str) -> AnyProxy:
        """
        The proxy called C{name}.

        @raise NotFound: if there is none.
        """
        try:
            return self.proxies[name]
        except KeyError:
            raise NotFound("proxy not found") from None

    def remove(self, name: str) -> None:
        """
        Close the proxy and forget it; the answer waits until its port is
        closed (L{settled}).

        @raise NotFound: if there is none.
        """
        proxy = self.proxies.pop(self.get(name).proxy_name)
        self._track(proxy.close())
        self._track(maybeDeferred(proxy.disownServiceParent))

    def set_enabled(self, proxy: AnyProxy, enabled: bool) -> None:
        """
        Listen again, or close (its port is closed once L{settled} fires).

        @raise CannotListen: if its address is taken meanwhile.
        """
        if enabled and not proxy.spec.enabled:
            proxy.open()
        elif not enabled and proxy.spec.enabled:
            self._track(proxy.close())

    def _track(self, closing: Deferred[Any]) -> None:
        self._closing.append(closing)

        def done(result: Any) -> Any:
            self._closing.remove(closing)
            return result

        closing.addBoth(done)

    def settled(self) -> Deferred[Any]:
        """
        Fires once every port closed so far is closed: a closed port is
        closed in a later turn of the reactor, and a client told "disabled"
        must find it refused.
        """
        return DeferredList(list(self._closing), consumeErrors=True)

    def populate(self, batch: Sequence[tuple[ProxySpec, Sequence[Toxic]]]) -> list[AnyProxy]:
        """
        toxiproxy's populate: each proxy of C{batch} in turn is created, or
        replaces the one of its name.  One whose address and upstream are
        unchanged is kept as it is, toxics included (the batch's toxics,
        echoapp's own addition, replace them if given); one that keeps its
        address is updated in place (its port is never closed and opened
        again, which would race with the close).

        @raise PopulateFailed: at the first that fails; those before it stay.
        """
        done: list[AnyProxy] = []
        for spec, toxics in batch:
            try:
                done.append(self._put(spec, toxics))
            except ProxyError as error:
                raise PopulateFailed(error, done) from None
        for proxy in done:
            _warn_ignored(proxy)
        return done

    def _put(self, spec: ProxySpec, toxics: Sequence[Toxic]) -> AnyProxy:
        new = self.make(spec, toxics)
        old = self.proxies.get(spec.name)
        if old is None:
            return self.add(new)
        if type(old) is not type(new) or not same_listen(old, spec.listen):
            self.remove(old.proxy_name)
            return self.add(new)
        if spec.upstream != old.spec.upstream:
            old.set_upstream(spec.upstream)
        if toxics:
            old.faults.clear()
            for toxic in new.faults.toxics.values():
                old.faults.set(toxic)
        self.set_enabled(old, spec.enabled)
        return old

    def update(self, proxy: AnyProxy, spec: ProxySpec) -> AnyProxy:
        """
        toxiproxy's proxy update: a new listen address opens the new port
        before the old one closes (and nothing changes if it cannot); a new
        upstream serves the next connections.
        """
        if is_udp(spec) != isinstance(proxy, NamedUDPProxy):
            kind, other = ("udp", "tcp") if isinstance(proxy, NamedUDPProxy) else ("tcp", "udp")
            raise Invalid(f"a {kind} proxy stays one: delete it and create a {other} proxy")
        if not same_listen(proxy, spec.listen):
            replacement = self.make(spec, list(proxy.faults.toxics.values()))
            del self.proxies[proxy.proxy_name]
            try:
                self.add(replacement)
            except ProxyError:
                self.proxies[proxy.proxy_name] = proxy
                raise
            self._track(proxy.close())
            self._track(maybeDeferred(proxy.disownServiceParent))
            return replacement
        self.make(spec)  # the new upstream checked before anything changes
        proxy.set_upstream(spec.upstream)
        self.set_enabled(proxy, spec.enabled)
        return proxy

    def reset(self) -> None:
        """toxiproxy's C{/reset}: every proxy enabled, every toxic gone."""
        for proxy in self.proxies.values():
            proxy.faults.clear()
            self.set_enabled(proxy, True)

    def privilegedStartService(self) -> None:
        """Listen for every enabled proxy, or stop start-up with one line and listen for none."""
        try:
            super().privilegedStartService()
        except StartupError:
            for proxy in self.proxies.values():
                if proxy.listener is not None and proxy.listener.port is not None:
                    proxy.listener.stopService()
            raise
