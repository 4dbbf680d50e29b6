"""
The proxies as services (L{echoapp._proxy.registry}): each proxy a child of
the tree, its listener a child while enabled, so that the walkers every
echoapp service answers to (listeners, health, drain) see echoapp-proxy too.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.trial.unittest import TestCase

from echoapp import testing
from echoapp._monitor import healthy
from echoapp._proxy.errors import CannotListen, Exists, NotFound
from echoapp._proxy.named import ProxyService
from echoapp._proxy.registry import Proxies
from echoapp._proxy.schema import ProxySpec
from echoapp._transports.listen import descendants, listeners
from echoapp.services import DrainService
from tests.support import DEADLINE, LOOP, free_port, recv_until_closed, unix_socket_path, wait_until


def ports(tree: Any) -> list[int]:
    """The ports of every listener a walk of C{tree} finds."""
    return sorted(listener.port.getHost().port for listener in listeners(tree) if listener.port is not None)


class ProxiesAsServicesTests(TestCase):
    def started(self) -> Proxies:
        proxies = Proxies()
        proxies.privilegedStartService()
        proxies.startService()
        self.addCleanup(proxies.stopService)
        return proxies

    def test_every_walker_sees_the_proxies_listeners(self) -> None:
        echo = testing.echo(self)
        proxies = self.started()
        first = proxies.add(proxies.make(ProxySpec("a", LOOP, f"127.0.0.1:{echo.port}")))
        second = proxies.add(proxies.make(ProxySpec("b", LOOP, f"127.0.0.1:{echo.port}")))
        self.assertEqual(ports(proxies), sorted([first.port.getHost().port, second.port.getHost().port]))
        self.assertTrue(healthy(proxies))
        drains = [service for service in descendants(proxies) if isinstance(service, DrainService)]
        self.assertEqual(len(drains), 2, "each TCP proxy drains its own clients, as every TCP service")

    async def test_disabled_and_removed_proxies_leave_the_tree(self) -> None:
        echo = testing.echo(self)
        proxies = self.started()
        proxy = proxies.add(proxies.make(ProxySpec("a", LOOP, f"127.0.0.1:{echo.port}")))
        port = proxy.port.getHost().port
        proxies.set_enabled(proxy, False)
        await proxies.settled()
        self.assertEqual(ports(proxies), [])
        self.assertTrue(healthy(proxies), "a disabled proxy is not an unhealthy one")
        proxies.set_enabled(proxy, True)
        self.assertEqual(ports(proxies), [port], "enabled again, on the same port")
        proxies.remove("a")
        await proxies.settled()
        self.assertEqual(ports(proxies), [])
        self.assertEqual([child for child in proxies if isinstance(child, ProxyService)], [])

    def test_refusals_are_the_proxies_own(self) -> None:
        proxies = self.started()
        proxies.add(proxies.make(ProxySpec("a", LOOP, "127.0.0.1:1")))
        self.assertRaises(Exists, proxies.add, proxies.make(ProxySpec("a", LOOP, "127.0.0.1:1")))
        self.assertRaises(NotFound, proxies.get, "nope")
        taken = proxies.get("a").address
        with self.assertRaises(CannotListen):
            proxies.add(proxies.make(ProxySpec("b", taken, "127.0.0.1:1")))
        self.assertEqual(sorted(proxies.proxies), ["a"], "a proxy that cannot listen is not kept")
        self.assertEqual(len(listeners(proxies)), 1)


class LoopTests(TestCase):
    """
    A proxy whose upstream is its own address is refused when made, and two
    proxies pointed at each other cut the connection that comes round again,
    so one client cannot make the process connect to itself without end
    (18,011 descriptors in 6 s with --max-per-peer 100000, before).
    """

    def test_a_tcp_proxy_to_itself_is_refused(self) -> None:
        from echoapp._proxy.errors import Invalid
        from echoapp.config import TCPLimits

        port = free_port()
        proxies = Proxies(TCPLimits(max_per_peer=100_000))
        with self.assertRaises(Invalid) as caught:
            proxies.make(ProxySpec("self", f"127.0.0.1:{port}", f"127.0.0.1:{port}"))
        self.assertIn("is its own listen address", str(caught.exception))

    async def test_two_proxies_pointed_at_each_other_cut_the_loop(self) -> None:
        await self.cut_loop("127.0.0.1")

    async def test_a_loop_through_an_ipv4_mapped_upstream_is_cut(self) -> None:
        """
        An upstream written as an IPv4-mapped IPv6 address is the same
        host: its connection's ends (IPv6) are the arriving one's (IPv4).
        It went round 130 times, until the per-peer limit stopped it.
        """
        await self.cut_loop("[::ffff:127.0.0.1]")

    async def cut_loop(self, upstream_host: str) -> None:
        from twisted.internet.threads import deferToThread

        from echoapp._limits.descriptors import DESCRIPTORS
        from echoapp.config import TCPLimits

        first, second = free_port(), free_port()
        proxies = Proxies(TCPLimits(max_per_peer=100_000, max_connections=100_000))
        proxies.privilegedStartService()
        proxies.startService()
        self.addCleanup(proxies.stopService)
        before = DESCRIPTORS.open
        proxies.add(proxies.make(ProxySpec("a", f"127.0.0.1:{first}", f"{upstream_host}:{second}")))
        proxies.add(proxies.make(ProxySpec("b", f"127.0.0.1:{second}", f"{upstream_host}:{first}")))
        listeners_held = DESCRIPTORS.open - before
        got = await deferToThread(reset_or_bytes, first)
        self.assertIn(got, ("reset", b""), "the client is cut, not served by a loop")
        await wait_until(lambda: DESCRIPTORS.open - before == listeners_held, "every hop's descriptor back")

    async def test_a_chain_of_proxies_is_not_a_loop(self) -> None:
        from twisted.internet.threads import deferToThread

        echo = testing.echo(self)
        proxies = self.started_proxies()
        front = free_port()
        back = proxies.add(proxies.make(ProxySpec("back", LOOP, f"127.0.0.1:{echo.port}")))
        proxies.add(proxies.make(ProxySpec("front", f"127.0.0.1:{front}", back.address)))
        self.assertEqual(await deferToThread(echo_through, front, b"chained"), b"chained")

    async def test_a_proxy_on_a_unix_socket_is_updated(self) -> None:
        """
        The loop check of an update reads where a proxy listens only when
        that is a host and port: a UNIX socket's path is no listen address
        (every update of the operator's UNIX proxy failed with it).
        """
        from dataclasses import replace

        path = unix_socket_path(self, "u.sock")
        proxies = self.started_proxies()
        proxy = proxies.add(proxies.make(ProxySpec("u", f"unix:{path}", "127.0.0.1:1")))
        updated = proxies.update(proxy, replace(proxy.spec, upstream="127.0.0.1:2"))
        self.assertEqual(updated.spec.upstream, "127.0.0.1:2")
        proxies.update(updated, replace(updated.spec, enabled=False))
        self.assertFalse(updated.spec.enabled)
        await wait_until(lambda: not os.path.exists(path), "the disabled proxy's socket closed")

    def started_proxies(self) -> Proxies:
        proxies = Proxies()
        proxies.privilegedStartService()
        proxies.startService()
        self.addCleanup(proxies.stopService)
        return proxies


def reset_or_bytes(port: int) -> object:
    """Connect, send, read to the end: C{"reset"} for a reset, else the bytes."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            sock.sendall(b"round and round")
            return recv_until_closed(sock)
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


def echo_through(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_closed(sock)
