"""
echoapp's pytest plugin (the C{pytest11} entry point): fixtures that start
echoapp peers for a test and stop them after it.

- C{echoapp_peer}: in-process, for tests run with pytest-twisted (the
  reactor in its greenlet): C{peer = echoapp_peer("greeter", faults=...)}.
- C{echoapp_proxy}: in-process too, echoapp-proxy in front of any server:
  C{peer = echoapp_proxy(upstream="tcp:127.0.0.1:6379", faults=...)}.
- C{echoapp_process}: a real C{twistd}, for clients that are not Twisted
  (plain sockets, asyncio, other languages): C{server =
  echoapp_process("echoapp-tcp", "--fault", "latency=100ms")}.

Nothing here imports the reactor: pytest-twisted installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from echoapp import testing

KINDS: dict[str, Callable[..., testing.Peer]] = {
    "greeter": testing.greeter,
    "echo": testing.echo,
    "udp": testing.udp,
}


@pytest.fixture
def echoapp_peer() -> Iterator[Callable[..., testing.Peer]]:
    """Start C{greeter}, C{echo} or C{udp} in-process; each is stopped and drained after the test."""
    import pytest_twisted  # only for those who use this fixture: it needs pytest-twisted

    peers: list[testing.Peer] = []

    def start(kind: str = "greeter", **options: Any) -> testing.Peer:
        if kind not in KINDS:
            raise ValueError(f"echoapp_peer: kind is one of {', '.join(KINDS)}, not {kind!r}")
        peer = KINDS[kind](**options)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        pytest_twisted.blockon(peer.stop())


@pytest.fixture
def echoapp_proxy() -> Iterator[Callable[..., Any]]:
    """
    Start echoapp-proxy in-process in front of C{upstream} (pytest-twisted):
    C{peer = echoapp_proxy(upstream="tcp:127.0.0.1:6379", faults=...)};
    stopped and drained after the test.
    """
    import pytest_twisted

    from echoapp.testing import proxy  # imported when used: the plugin itself loads nothing heavy

    peers: list[Any] = []

    def start(**options: Any) -> Any:
        peer = proxy(**options)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        pytest_twisted.blockon(peer.stop())


@pytest.fixture
def echoapp_process() -> Iterator[Callable[..., testing.Process]]:
    """Start a real C{twistd} with an echoapp plugin on a free loopback port; stopped after the test."""
    processes: list[testing.Process] = []

    def start(plugin: str = "echoapp-tcp", *args: str) -> testing.Process:
        process = testing.Process(plugin, *args).start()
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()
