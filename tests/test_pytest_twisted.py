"""
echoapp driven from pytest-twisted, the way a project that uses echoapp as a
known-good peer would test against it: the reactor runs in pytest-twisted's
greenlet and the tests are coroutines.  (Plain pytest functions; trial does
not collect them, and echoapp's pytest plugin runs them after every trial
TestCase.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.trial.unittest import SynchronousTestCase

from echoapp import services
from tests.support import CHECKOUT, listeners


class LineCollector(Protocol):
    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.data = b""
        self.got: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.data.count(b"\n") >= self.wanted and not self.got.called:
            self.got.callback(self.data)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


@pytest.fixture
def everything() -> Iterator[dict[str, int]]:
    service = services.everything(
        tcp=["tcp:0:interface=127.0.0.1"],
        udp=["udp:0:interface=127.0.0.1"],
        echo_listen=["tcp:0:interface=127.0.0.1"],
    )
    service.privilegedStartService()
    service.startService()
    ports = {listener.parent.name: listener.port.getHost().port for listener in listeners(service)}
    yield ports
    pytest_twisted.blockon(service.stopService())


@pytest_twisted.ensureDeferred
async def test_tcp_greeter_conversation(everything: dict[str, int]) -> None:
    client = LineCollector(wanted=3)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", everything["echoapp-tcp"])
    await connectProtocol(endpoint, client)
    client.transport.write(b"pytest\r\nexit\n")  # type: ignore[union-attr]
    assert await client.got == b"Welcome!\r\nHello, pytest!\r\nGoodbye!\n"
    await client.closed


@pytest_twisted.ensureDeferred
async def test_udp_greeter_reply(everything: dict[str, int]) -> None:
    answer: Deferred[bytes] = Deferred()

    class Client(DatagramProtocol):
        def startProtocol(self) -> None:
            self.transport.write(b"datagram\n", ("127.0.0.1", everything["echoapp-udp"]))  # type: ignore[union-attr]

        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            answer.callback(datagram)

    port = reactor.listenUDP(0, Client(), interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        assert await answer == b"Hello, datagram!\n"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_echo_round_trip(everything: dict[str, int]) -> None:
    client = LineCollector(wanted=2)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", everything["echoapp-echo"])
    await connectProtocol(endpoint, client)
    client.transport.write(b"\xffone\ntwo\n")  # type: ignore[union-attr]
    assert await client.got == b"\xffone\ntwo\n"
    client.transport.loseConnection()  # type: ignore[union-attr]
    await client.closed


def test_trial_temporary_paths_are_outside_the_checkout() -> None:
    """A pytest run leaves no C{tests.*/} folder (of TLS keys, say) in the checkout: conftest.py."""

    class Scratch(SynchronousTestCase):
        def test(self) -> None:
            pass

    path = os.path.abspath(Scratch("test").mktemp())
    assert not path.startswith(CHECKOUT + os.sep), path
