"""
echoapp-proxy for a test: L{proxy} puts faults in front of any server the
test talks to, on a loopback port the kernel chooses (in the test's reactor
or on echoapp's reactor thread, as L{echoapp.testing._peer.place} says).
"""

from __future__ import annotations

import dataclasses
from unittest import TestCase

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime

from echoapp import services
from echoapp._faults import Faults
from echoapp._proxy.errors import ProxyError
from echoapp._proxy.registry import AnyProxy, Proxies
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import Toxic
from echoapp._record import Recorder
from echoapp.config import TCPLimits
from echoapp.testing._peer import ProxyPeer, place, started
from echoapp.testing._wire import TEST_RECORD_BYTES, capture_for

DOWN, UP = "faults_downstream", "faults_upstream"


def _toxic(name: str, stream: str, faults: Faults) -> Toxic:
    return Toxic(name, "echoapp", stream, faults.fraction, faults, {"fault": str(faults)})


class RunningProxy(ProxyPeer):
    """
    The one proxy of its own L{Proxies}: its faults are two named toxics,
    one each way; its record is of the client side (what the client sent
    and was sent, the downstream toxics' actions): its listener is recorded.
    """

    def __init__(self, proxies: Proxies, proxy: AnyProxy, recorder: Recorder) -> None:
        self._proxies = proxies
        self._proxy = proxy
        self._recording = recorder
        address = proxy.port.getHost()
        # A UNIX listener has a path, not a host and port: no address to list.
        has_port = hasattr(address, "host") and hasattr(address, "port")
        self._where = [(str(address.host), int(address.port))] if has_port else []

    @property
    def name(self) -> str:
        return "echoapp-proxy"

    def _addresses(self) -> list[tuple[str, int]]:
        return self._where  # the same port when up again

    def _get(self, name: str) -> Faults:
        toxic = self._proxy.faults.toxics.get(name)
        return toxic.faults if toxic is not None else Faults()

    def _set(self, name: str, stream: str, faults: Faults) -> None:
        present = name in self._proxy.faults.toxics
        try:
            if faults:
                toxic = _toxic(name, stream, faults)
                (self._proxy.replace_toxic if present else self._proxy.add_toxic)(toxic)
            elif present:
                self._proxy.remove_toxic(name)
        except ProxyError as error:
            raise ValueError(str(error)) from None

    def _faults(self) -> Faults:
        return self._get(DOWN)

    def _set_faults(self, faults: Faults) -> None:
        self._set(DOWN, "downstream", faults)

    def _faults_upstream(self) -> Faults:
        return self._get(UP)

    def _set_faults_upstream(self, faults: Faults) -> None:
        self._set(UP, "upstream", faults)

    def _seed(self) -> int:
        return self._proxy.faults.seed

    def _recorder(self) -> Recorder:
        return self._recording

    def _down(self) -> Deferred[None]:
        return self._proxy.close().addCallback(lambda _: None)

    def _up(self) -> None:
        self._proxies.set_enabled(self._proxy, True)

    def _stop(self) -> Deferred[None]:
        if not self._proxies.running:
            return succeed(None)
        return maybeDeferred(self._proxies.stopService)


def proxy(
    test: TestCase | None = None,
    *,
    upstream: str,
    listen: str = "tcp:0:interface=127.0.0.1",
    faults: Faults | None = None,
    faults_upstream: Faults | None = None,
    seed: int | None = None,
    reactor: IReactorTime | None = None,
    limits: TCPLimits | None = None,
    **fields: object,
) -> ProxyPeer:
    """
    A proxy to C{upstream} (an endpoint string or C{HOST:PORT}; C{udp:}
    addresses on both sides make a UDP proxy); with a trial C{test},
    stopped at its cleanup.  A fault the proxy cannot apply (UDP loss on
    TCP, bandwidth on UDP) is a L{ValueError} in one line.  C{limits}, or
    its fields by name (C{max_connections}, C{idle_timeout}, ...), are the
    proxy's L{TCPLimits}.
    """
    given = [f for f in (faults, faults_upstream) if f is not None and f.seed is not None]
    if seed is None and given:
        seed = given[0].seed
    tcp_limits = dataclasses.replace(limits, **fields) if limits is not None else TCPLimits(**fields)  # type: ignore[arg-type]
    on, thread = place(test, reactor)
    toxics = [_toxic(DOWN, "downstream", faults)] if faults else []
    toxics += [_toxic(UP, "upstream", faults_upstream)] if faults_upstream else []

    def start() -> RunningProxy:
        proxies = Proxies(tcp_limits, on, seed)
        recorder = Recorder(on, TEST_RECORD_BYTES)
        services.recorded(proxies, recorder, capture_for(test))  # no listener yet: the capture file, if any
        try:
            made = proxies.make(ProxySpec("proxy", listen, upstream), toxics)
            made.recorder = recorder  # its listener records, each time it listens
            proxies.add(made)
        except ProxyError as error:
            raise ValueError(str(error)) from None
        proxies.privilegedStartService()
        proxies.startService()
        return RunningProxy(proxies, made, recorder)

    return started(test, thread, start)
