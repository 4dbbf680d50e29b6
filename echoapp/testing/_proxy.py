"""
echoapp-proxy in a test's reactor: L{proxy} puts faults in front of any
server the test talks to, on a loopback port the kernel chooses.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from echoapp._faults import Faults
from echoapp._proxy.errors import ProxyError
from echoapp._proxy.registry import AnyProxy, Proxies
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import Toxic
from echoapp.config import TCPLimits

DOWN, UP = "faults_downstream", "faults_upstream"


def _toxic(name: str, stream: str, faults: Faults) -> Toxic:
    return Toxic(name, "echoapp", stream, faults.fraction, faults, {"fault": str(faults)})


class ProxyPeer:
    """
    A running proxy: where it listens, its faults each way (settable; open
    connections see a change), L{down}/L{up}, its seed, and L{stop}.
    """

    def __init__(self, proxies: Proxies, proxy: AnyProxy) -> None:
        self.proxies = proxies
        self.proxy = proxy
        self._address = proxy.port.getHost()

    @property
    def host(self) -> str:
        return str(self._address.host)

    @property
    def port(self) -> int:
        return int(self._address.port)

    def _get(self, name: str) -> Faults:
        toxic = self.proxy.faults.toxics.get(name)
        return toxic.faults if toxic is not None else Faults()

    def _set(self, name: str, stream: str, faults: Faults) -> None:
        present = name in self.proxy.faults.toxics
        try:
            if faults:
                toxic = _toxic(name, stream, faults)
                (self.proxy.replace_toxic if present else self.proxy.add_toxic)(toxic)
            elif present:
                self.proxy.remove_toxic(name)
        except ProxyError as error:
            raise ValueError(str(error)) from None

    @property
    def faults(self) -> Faults:
        """What goes wrong with what the server sends the client (C{fraction} is the toxicity)."""
        return self._get(DOWN)

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._set(DOWN, "downstream", faults)

    @property
    def faults_upstream(self) -> Faults:
        """What goes wrong with what the client sends the server."""
        return self._get(UP)

    @faults_upstream.setter
    def faults_upstream(self, faults: Faults) -> None:
        self._set(UP, "upstream", faults)

    @property
    def seed(self) -> int:
        """The seed of every random choice: pass C{seed=} to repeat a run exactly."""
        return self.proxy.faults.seed

    def down(self) -> Deferred[Any]:
        """Stop listening and cut open connections: new clients are refused by the kernel."""
        return self.proxy.close()

    def up(self) -> None:
        """Listen again, on the same port."""
        self.proxies.set_enabled(self.proxy, True)

    def stop(self) -> Deferred[Any]:
        """Stop listening, and drain the clients."""
        return maybeDeferred(self.proxies.stopService)


def proxy(
    test: Any = None,
    *,
    upstream: str,
    listen: str = "tcp:0:interface=127.0.0.1",
    faults: Faults | None = None,
    faults_upstream: Faults | None = None,
    seed: int | None = None,
    reactor: Any = None,
    **limits: Any,
) -> ProxyPeer:
    """
    A proxy to C{upstream} (an endpoint string or C{HOST:PORT}; C{udp:}
    addresses on both sides make a UDP proxy); with a trial C{test},
    stopped at its cleanup.  A fault the proxy cannot apply (UDP loss on
    TCP, bandwidth on UDP) is a L{ValueError} in one line.  C{limits} are L{TCPLimits}
    fields (C{max_connections}, C{idle_timeout}, ...).
    """
    given = [f for f in (faults, faults_upstream) if f is not None and f.seed is not None]
    if seed is None and given:
        seed = given[0].seed
    proxies = Proxies(TCPLimits(**limits), reactor, seed)
    toxics = [_toxic(DOWN, "downstream", faults)] if faults else []
    toxics += [_toxic(UP, "upstream", faults_upstream)] if faults_upstream else []
    try:
        made = proxies.add(proxies.make(ProxySpec("proxy", listen, upstream), toxics))
    except ProxyError as error:
        raise ValueError(str(error)) from None
    proxies.privilegedStartService()
    proxies.startService()
    peer = ProxyPeer(proxies, made)
    if test is not None:
        test.addCleanup(peer.stop)
    return peer
