"""
The named proxies of one C{echoapp-proxy} process: created from the command
line, a C{--config} file (toxiproxy's populate format) or the HTTP API, each
with its listener, its upstream, its toxics and its own limits.

A proxy forwards TCP (L{Proxy}) or UDP (L{NamedUDPProxy}); its addresses are
read by L{echoapp._proxy.addresses}.  A proxy that cannot listen is not
kept; a batch (L{Proxies.populate}) or a reset that fails at one proxy keeps
what it did to those before it, as toxiproxy's do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.task import Cooperator

from echoapp import StartupError
from echoapp._limits.connections import Connections
from echoapp._metrics import TCPStats
from echoapp._proxy.addresses import check, is_udp, listen_description, same_listen, shown
from echoapp._proxy.errors import Exists, Invalid, NotFound, PopulateFailed, ProxyError
from echoapp._proxy.forward import ProxyFactory, upstream_endpoint
from echoapp._proxy.loops import check_tcp_loop
from echoapp._proxy.named import NAME, ProxyService, warn_ignored
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import LiveFaultyFactory, ProxyFaults, Toxic
from echoapp._proxy.udp import NamedUDPProxy
from echoapp._record import Recorder
from echoapp._transports.listen import StreamListenService
from echoapp._twisted import global_reactor
from echoapp.config import TCPLimits
from echoapp.services import DrainService, FaultNotice, stream_listener

# Seconds of the reactor's time a batch (populate, reset) takes at once:
# between slices the reactor serves every other connection, so a batch of
# thousands of proxies never stalls the traffic of the others.
SLICE = 0.01
# Proxies one process keeps (toxiproxy sets no bound): what grows with
# their number and cannot be sliced, the collector's full pass over every
# object of the process, took 75 ms at 4,000 proxies; 30-65 at this many.
MAX_PROXIES = 2000


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
        check_tcp_loop(spec)  # a proxy to its own address would connect to itself without end
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


AnyProxy = Proxy | NamedUDPProxy


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
        self.recorder: Recorder | None = None  # with --record: every proxy's listener records to it
        self.proxies: dict[str, AnyProxy] = {}
        self._closing: list[Deferred[Any]] = []
        self._cooperator: Cooperator | None = None
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
        @raise Invalid: past L{MAX_PROXIES}.
        """
        if proxy.proxy_name in self.proxies:
            raise Exists("proxy already exists")
        if len(self.proxies) >= MAX_PROXIES:
            raise Invalid(f"too many proxies: echoapp-proxy keeps at most {MAX_PROXIES}")
        proxy.setServiceParent(self)
        if proxy.spec.enabled:
            try:
                proxy.open()
            except ProxyError:
                proxy.disownServiceParent()
                raise
        self.proxies[proxy.proxy_name] = proxy
        warn_ignored(proxy)
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

    def populate(
        self,
        batch: Sequence[tuple[ProxySpec, Sequence[Toxic]]],
        admit: Callable[[ProxySpec, AnyProxy | None], ProxySpec] | None = None,
    ) -> Deferred[list[AnyProxy]]:
        """
        toxiproxy's populate: each proxy of C{batch} in turn is created, or
        replaces the one of its name.  One whose address and upstream are
        unchanged is kept as it is, toxics included (the batch's toxics,
        echoapp's own addition, replace them if given); one that keeps its
        address is updated in place (its port is never closed and opened
        again, which would race with the close).  C{admit}, if given, may
        refuse or change each spec first (the API's trust), given the proxy
        of its name if there is one.

        The batch is done in slices of the reactor's time (L{SLICE}), so
        that other proxies' traffic flows meanwhile; the Deferred fires with
        the proxies once all are done.

        @raise PopulateFailed: (the Deferred fails) at the first that fails;
            those before it stay.
        """
        done: list[AnyProxy] = []

        def each() -> Iterator[None]:
            for spec, toxics in batch:
                try:
                    given = admit(spec, self.proxies.get(spec.name)) if admit is not None else spec
                    done.append(self._put(given, toxics))
                except ProxyError as error:
                    raise PopulateFailed(error, done) from None
                yield None

        def warned(_: object) -> list[AnyProxy]:
            for proxy in done:
                warn_ignored(proxy)
            return done

        return self.in_slices(each()).addCallback(warned)

    def in_slices(self, steps: Iterator[None]) -> Deferred[Any]:
        """
        Run C{steps} a slice of L{SLICE} seconds at a time, the reactor
        serving everything else between slices (one L{Cooperator} per
        registry, on its reactor).
        """
        if self._cooperator is None:

            def budget() -> Callable[[], bool]:
                deadline = time.monotonic() + SLICE
                return lambda: time.monotonic() >= deadline

            clock = self.reactor or global_reactor()
            self._cooperator = Cooperator(
                terminationPredicateFactory=budget, scheduler=lambda step: clock.callLater(0, step)
            )
        return self._cooperator.coiterate(steps)

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
        # The new upstream checked before anything changes, against where the
        # proxy listens now (a proxy made on port 0 has its real port; a UNIX
        # socket's path is no address to write a listen with).
        bound = proxy.port is not None and getattr(proxy.port.getHost(), "port", None) is not None
        self.make(replace(spec, listen=proxy.address) if bound else spec)
        proxy.set_upstream(spec.upstream)
        self.set_enabled(proxy, spec.enabled)
        return proxy

    def reset(self) -> Deferred[Any]:
        """
        toxiproxy's C{/reset}: every proxy enabled, every toxic gone; in
        slices, as L{populate}.  A proxy removed meanwhile is passed over.
        """

        def each() -> Iterator[None]:
            for proxy in list(self.proxies.values()):
                if self.proxies.get(proxy.proxy_name) is proxy:
                    # Enabled first, as toxiproxy: one that cannot listen keeps its toxics.
                    self.set_enabled(proxy, True)
                    proxy.faults.clear()
                yield None

        return self.in_slices(each())

    def privilegedStartService(self) -> None:
        """Listen for every enabled proxy, or stop start-up with one line and listen for none."""
        try:
            super().privilegedStartService()
        except StartupError:
            for proxy in self.proxies.values():
                if proxy.listener is not None and proxy.listener.port is not None:
                    proxy.listener.stopService()
            raise
