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

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger

from echoapp import StartupError
from echoapp._limits.connections import Connections
from echoapp._metrics import TCPStats
from echoapp._proxy.addresses import check, is_udp, listen_description, shown
from echoapp._proxy.errors import Exists, Invalid, NotFound, ProxyError
from echoapp._proxy.forward import ProxyFactory, upstream_endpoint
from echoapp._proxy.named import NamedProxy
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import LiveFaultyFactory, ProxyFaults, Toxic
from echoapp._proxy.udp import NamedUDPProxy
from echoapp._transports.listen import StreamListenService
from echoapp._twisted import global_reactor
from echoapp.config import TCPLimits

NAME = "echoapp-proxy"

log = Logger(namespace="echoapp.proxy")


class Proxy(NamedProxy):
    """
    One named proxy: a listener while enabled, forwarding to its upstream
    through its toxics.  Its connections are its own, for limits and for
    the drain; its listener says C{echoapp-proxy listening on ...}.
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

    @property
    def reactor(self) -> Any:
        return self._reactor or global_reactor()

    def drain(self) -> Deferred[Any]:
        """Its clients told the service is stopping, as every echoapp TCP service tells them."""
        return self.connections.drain()

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

    def open(self) -> None:
        """
        Listen, at once (Twisted's stream endpoints bind synchronously).

        @raise CannotListen: for an address it cannot have.
        """
        if self.listener is None:
            listen = self.listen
            if listen.backlog is None:
                listen = replace(listen, backlog=self.connections.limits.max_connections)
            self._start(StreamListenService(listen, self.factory(), self.reactor))
        self.connections.draining = False
        self.spec.enabled = True

    def close(self) -> Deferred[Any]:
        """Stop listening (new clients are refused by the kernel) and cut open connections, as toxiproxy."""
        self.spec.enabled = False
        port = self.port
        plain = self.listen.endpoint.partition(":")[0] in ("tcp", "tcp6") and not self.listen.proxy
        if port is not None and plain:
            # Enabled again, it listens where it did (toxiproxy too): port 0 is pinned to the real one.
            self.spec.listen = shown(port.getHost())
            self.listen = replace(self.listen, endpoint=listen_description(self.spec.listen))
        listener, self.listener = self.listener, None
        for connection in list(self.connections.live):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return maybeDeferred(listener.stopService) if listener is not None else succeed(None)


def ignored_line(proxy: str, toxic: Toxic) -> str:
    """One line naming the attributes a toxic was given that its type does not have."""
    names = ", ".join(repr(name)[:40] for name in toxic.ignored[:8])
    return f"proxy {proxy}, toxic {toxic.name}: ignored attribute(s) {names}: {toxic.type} has none such"


AnyProxy = Proxy | NamedUDPProxy


def _warn_ignored(proxy: AnyProxy) -> None:
    for toxic in proxy.faults.toxics.values():
        if toxic.ignored:
            log.warn("{line}", line=ignored_line(proxy.name, toxic))


class Proxies(Service):
    """
    Every proxy of the process, by name, in creation order: the service
    C{echoapp-proxy} runs.  It listens for the enabled ones at start, and at
    stop closes every listener and then drains every proxy's clients.
    """

    def __init__(
        self,
        limits: TCPLimits | None = None,
        reactor: Any = None,
        seed: int | None = None,
        live: bool = True,
        log_connections: bool = False,
    ) -> None:
        self.setName(NAME)
        self.limits = limits or TCPLimits()
        self.reactor = reactor
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.live = live
        self.log_connections = log_connections
        self.proxies: dict[str, AnyProxy] = {}
        self._listening = False
        self._closing: list[Deferred[Any]] = []

    def make(self, spec: ProxySpec, toxics: Sequence[Toxic] = ()) -> AnyProxy:
        """
        A proxy neither listening nor kept; C{toxics} are its from the start.

        @raise Invalid: for a bad address.
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
            if toxic.name in faults.toxics:
                raise Exists("toxic already exists")
            proxy.check_toxic(toxic)
            faults.set(toxic)
        proxy.owner = self
        return proxy

    def add(self, proxy: AnyProxy) -> AnyProxy:
        """
        Keep C{proxy}, listening if enabled and the service listens.

        @raise Exists: for a name taken.
        @raise CannotListen: for an address taken.
        """
        if proxy.name in self.proxies:
            raise Exists("proxy already exists")
        if proxy.spec.enabled and self._listening:
            proxy.open()
        self.proxies[proxy.name] = proxy
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
        closed.
        """
        self._track(self.proxies.pop(self.get(name).name).close())

    def set_enabled(self, proxy: AnyProxy, enabled: bool) -> None:
        """
        Listen again, or close (its port is closed once L{settled} fires).

        @raise CannotListen: if its address is taken meanwhile.
        """
        if enabled and not proxy.spec.enabled:
            if self._listening:
                proxy.open()
            else:
                proxy.spec.enabled = True
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
        Create or update every proxy of C{batch}, or none.  Whatever must
        listen is opened first, and closed again if anything fails; only then
        are proxies updated and replaced.  A proxy that keeps its address is
        updated in place (its port is never closed and opened again, which
        would race with the close), with the batch's toxics.  toxiproxy
        keeps the proxies before one that failed, and drops the toxics.
        """
        made = [self.make(spec, toxics) for spec, toxics in batch]
        names = [proxy.name for proxy in made]
        if len(set(names)) != len(names):
            raise Exists("proxy already exists")
        opened: list[AnyProxy] = []
        in_place: list[tuple[AnyProxy, AnyProxy]] = []
        fresh: list[tuple[AnyProxy | None, AnyProxy]] = []
        try:
            for new in made:
                old = self.proxies.get(new.name)
                same_kind = old is not None and type(old) is type(new)
                if old is not None and same_kind and new.spec.listen in (old.spec.listen, old.address):
                    if new.spec.enabled and not old.spec.enabled and self._listening:
                        old.open()
                        opened.append(old)
                    in_place.append((old, new))
                else:
                    if new.spec.enabled and self._listening:
                        new.open()
                        opened.append(new)
                    fresh.append((old, new))
        except ProxyError:
            for proxy in opened:
                self._track(proxy.close())
            raise
        result = {}
        for old, new in in_place:
            old.set_upstream(new.spec.upstream)
            old.faults.clear()
            for toxic in new.faults.toxics.values():
                old.faults.set(toxic)
            self.set_enabled(old, new.spec.enabled)
            result[old.name] = old
        for replaced, new in fresh:
            if replaced is not None:
                self._track(replaced.close())
            self.proxies[new.name] = new
            result[new.name] = new
        for proxy in made:
            _warn_ignored(proxy)
        return [result[name] for name in names]

    def update(self, proxy: AnyProxy, spec: ProxySpec) -> AnyProxy:
        """
        toxiproxy's proxy update: a new listen address opens the new port
        before the old one closes (and nothing changes if it cannot); a new
        upstream serves the next connections.
        """
        if is_udp(spec) != isinstance(proxy, NamedUDPProxy):
            kind, other = ("udp", "tcp") if isinstance(proxy, NamedUDPProxy) else ("tcp", "udp")
            raise Invalid(f"a {kind} proxy stays one: delete it and create a {other} proxy")
        if spec.listen not in (proxy.spec.listen, proxy.address):
            [replacement] = self.populate([(spec, list(proxy.faults.toxics.values()))])
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
        super().privilegedStartService()
        self._open_all()

    def startService(self) -> None:
        super().startService()
        self._open_all()

    def _open_all(self) -> None:
        if self._listening:
            return
        log.info("{service} seed={seed}: its random choices repeat with --seed", service=NAME, seed=self.seed)
        opened: list[AnyProxy] = []
        for proxy in self.proxies.values():
            if proxy.spec.enabled:
                try:
                    proxy.open()
                except ProxyError as error:
                    for done in opened:
                        done.close()
                        done.spec.enabled = True
                    raise StartupError(f"{NAME}: proxy {proxy.name}: {error}", f"{error}") from None
                opened.append(proxy)
        self._listening = True

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._listening = False
        stopping = []
        for proxy in self.proxies.values():
            listener, proxy.listener = proxy.listener, None
            if listener is not None:
                stopping.append(maybeDeferred(listener.stopService))
        stopping.extend(proxy.drain() for proxy in self.proxies.values())
        return DeferredList(stopping, consumeErrors=True)
