"""
echoapp's pytest plugin (the C{pytest11} entry point): fixtures that start
echoapp peers for a test and stop them after it.

- C{echoapp_peer}: in-process, for tests run with pytest-twisted (the
  reactor in its greenlet): C{peer = echoapp_peer("greeter", faults=...)}.
- C{echoapp_process}: a real C{twistd}, for clients that are not Twisted
  (plain sockets, asyncio, other languages): C{server =
  echoapp_process("echoapp-tcp", "--fault", "latency=100ms")}.

Installing echoapp loads this plugin into every pytest run in that
environment, so loading it costs nothing: it imports pytest and no more.
The fixtures import L{echoapp.testing} (the services, the reactor's
machinery, OpenSSL where there is TLS) when a test asks for one.  Nothing
here imports the reactor: pytest-twisted installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from echoapp import testing

KINDS = ("greeter", "echo", "udp")


@pytest.fixture
def echoapp_peer() -> Iterator[Callable[..., testing.Peer]]:
    """Start C{greeter}, C{echo} or C{udp} in-process; each is stopped and drained after the test."""
    import pytest_twisted  # only for those who use this fixture: it needs pytest-twisted

    from echoapp import testing

    peers: list[testing.Peer] = []

    def start(kind: str = "greeter", **options: Any) -> testing.Peer:
        if kind not in KINDS:
            raise ValueError(f"echoapp_peer: kind is one of {', '.join(KINDS)}, not {kind!r}")
        peer: testing.Peer = getattr(testing, kind)(**options)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        pytest_twisted.blockon(peer.stop())


@pytest.fixture
def echoapp_process() -> Iterator[Callable[..., testing.Process]]:
    """Start a real C{twistd} with an echoapp plugin on a free loopback port; stopped after the test."""
    from echoapp import testing

    processes: list[testing.Process] = []

    def start(plugin: str = "echoapp-tcp", *args: str) -> testing.Process:
        process = testing.Process(plugin, *args).start()
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()
