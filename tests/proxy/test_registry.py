"""
The proxies as services (L{echoapp._proxy.registry}): each proxy a child of
the tree, its listener a child while enabled, so that the walkers every
echoapp service answers to (listeners, health, drain) see echoapp-proxy too.
"""

from __future__ import annotations

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
from tests.support import LOOP


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
