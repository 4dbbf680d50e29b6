"""
The API cannot take what proxied clients need: a proxy's listener counts
against the process's descriptor ceiling (a create that would leave no room
is refused in one line), and a batch of thousands of proxies (populate,
reset) never stalls the other proxies' traffic.  Real twistd processes, on
this run's reactor, on loopback.
"""

from __future__ import annotations

import http.client
import io
import json
import resource
import socket
import threading
import time
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from echoapp._proxy import registry
from echoapp._proxy.api import ToxiproxyResource
from echoapp._proxy.registry import Proxies
from echoapp._proxy.schema import ProxySpec
from tests.support import DEADLINE, LOOP, Twistd

RLIMIT = 200  # descriptors: a ceiling the test reaches in a second
BATCH = 1800  # proxies in one populate: the figure, under the body cap
PING_EVERY = 0.01  # seconds
WORST_WAIT = 0.15  # seconds: 48 ms measured; toxiproxy 9 ms; a batch done at once 1,500-2,200 ms


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE * 3)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body).encode())
        response = connection.getresponse()
        text = response.read()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text.decode()
    finally:
        connection.close()


def low_rlimit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (RLIMIT, RLIMIT))


class Pinger(threading.Thread):
    """A ping every L{PING_EVERY} through a proxy to an echo: the longest any waited."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.worst = 0.0
        self.count = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.sock:
            while not self.stopping.is_set():
                sent = time.monotonic()
                self.sock.sendall(b"p")
                if self.sock.recv(1) != b"p":
                    raise AssertionError("the echo did not answer")
                self.worst = max(self.worst, time.monotonic() - sent)
                self.count += 1
                time.sleep(PING_EVERY)

    def stop(self) -> None:
        self.stopping.set()
        self.join(DEADLINE)


class ApiLimitTests(SynchronousTestCase):
    def running(self, *args: str, preexec: Any = None, expect: int = 1) -> Twistd:
        server = Twistd(list(args), preexec=preexec, expect=expect)
        self.addCleanup(server.stop)
        return server

    def test_a_proxy_that_would_leave_no_descriptor_is_refused(self) -> None:
        """
        At a low RLIMIT_NOFILE the API stops making proxies while there is
        room for a client, so the first proxy's clients are still served or
        told the server is busy, never reset by accept()'s EMFILE.
        """
        echo = self.running("echoapp-echo", "--listen", LOOP)
        upstream = f"127.0.0.1:{echo.address_port('echoapp-echo')}"
        api = self.running("echoapp-proxy", "--api", LOOP, "--max-per-peer", "1000", preexec=low_rlimit)
        port = api.address_port("echoapp-proxy")
        made: list[str] = []
        for number in range(RLIMIT):
            status, answer = request(port, "POST", "/proxies", {"name": f"p{number}", "upstream": upstream})
            if status != 201:
                break
            made.append(answer["listen"])
        else:
            self.fail(f"{RLIMIT} proxies made at RLIMIT_NOFILE {RLIMIT}")
        self.assertEqual(status, 500)
        self.assertIn("too many open files", answer["error"])
        self.assertNotIn("\n", answer["error"])
        host, _, first = made[0].rpartition(":")
        heard = []
        for _ in range(8):
            with socket.create_connection((host, int(first)), timeout=DEADLINE) as client:
                client.sendall(b"ping")
                client.shutdown(socket.SHUT_WR)
                try:
                    heard.append(client.recv(100))
                except ConnectionResetError:
                    heard.append(b"reset")
        self.assertEqual(heard, [b"ping"] * len(heard), "a quarter of the ceiling is kept for connections")
        self.assertNotIn("EMFILE", api.output)
        self.assertEqual(request(port, "GET", "/version")[0], 200, "the operator still gets through")

    def test_a_populate_and_a_reset_of_thousands_leave_other_traffic_flowing(self) -> None:
        echo = self.running("echoapp-echo", "--listen", LOOP)
        upstream = f"127.0.0.1:{echo.address_port('echoapp-echo')}"
        api = self.running("echoapp-proxy", "--api", LOOP, "--listen", LOOP, "--upstream", upstream, expect=2)
        port = api.address_port("echoapp-proxy", 1)  # the proxies' listeners start first, then the API's
        pinger = Pinger(api.address_port("echoapp-proxy", 0))
        pinger.start()
        self.addCleanup(pinger.stop)
        time.sleep(0.2)  # a few pings to start from
        batch = [
            {"name": f"p{number}", "listen": "127.0.0.1:0", "upstream": upstream} for number in range(BATCH)
        ]
        seen: list[int] = []

        def look() -> None:  # while the populate runs: requests wait their turn, and see all of it or none
            time.sleep(0.1)
            request(port, "GET", "/version")  # a readiness probe touches no proxy: answered at once
            seen.append(len(request(port, "GET", "/proxies")[1]))

        looking = threading.Thread(target=look)
        looking.start()
        status, answer = request(port, "POST", "/populate", batch)
        looking.join(DEADLINE)
        self.assertEqual((status, len(answer["proxies"])), (201, BATCH))
        lines = api.output.splitlines()
        probe = next(number for number, line in enumerate(lines) if '"GET /version' in line)
        last = max(number for number, line in enumerate(lines) if "echoapp-proxy listening on" in line)
        self.assertLess(probe, last, "GET /version is answered while the populate's proxies are still made")
        self.assertIn(seen, ([1], [BATCH + 1]))
        during_populate = pinger.worst
        status, _ = request(port, "POST", "/reset")
        self.assertEqual(status, 204)
        pinger.stop()
        self.assertGreater(pinger.count, 10)
        self.assertLess(during_populate, WORST_WAIT, f"a ping waited {during_populate * 1000:.0f} ms")
        self.assertLess(pinger.worst, WORST_WAIT, f"a ping waited {pinger.worst * 1000:.0f} ms")


def answered(resource: ToxiproxyResource, method: bytes, path: bytes, body: Any = None) -> DummyRequest:
    """A request rendered by the API's resource, as twisted.web renders it: finished now or later."""
    made = DummyRequest(path.strip(b"/").split(b"/"))
    made.method = method
    made.content = io.BytesIO(b"" if body is None else json.dumps(body).encode())
    resource.render(made)
    return made


class ApiBoundsTests(SynchronousTestCase):
    """What grows with the number of proxies is bounded, or done a slice of the reactor's time at a time."""

    def api(self, count: int) -> tuple[Clock, Proxies, ToxiproxyResource]:
        clock = Clock()
        proxies = Proxies(reactor=clock)
        for number in range(count):  # disabled: nothing listens, so no reactor is needed
            proxies.add(proxies.make(ProxySpec(f"p{number}", "127.0.0.1:0", "127.0.0.1:1", enabled=False)))
        return clock, proxies, ToxiproxyResource(proxies)

    def test_the_listing_is_made_in_slices(self) -> None:
        """
        GET /proxies lets the reactor serve other connections between
        slices: made at once, 4,000 proxies held them all for 30-140 ms.
        Here a slice is one proxy, so five proxies take five turns.
        """
        self.patch(registry, "SLICE", 0.0)
        clock, _, resource = self.api(5)
        turns: list[float] = []
        take_turn = clock.callLater
        clock.callLater = lambda delay, *a, **k: turns.append(delay) or take_turn(delay, *a, **k)  # type: ignore[method-assign]
        request = answered(resource, b"GET", b"/proxies")
        self.assertFalse(request.finished, "not made at once")
        clock.advance(0)
        self.assertTrue(request.finished)
        self.assertGreaterEqual(turns.count(0), 5, "a turn of the reactor for each proxy")
        listing = json.loads(b"".join(request.written))
        self.assertEqual(sorted(listing), [f"p{number}" for number in range(5)])
        self.assertEqual(
            listing["p3"],
            {"name": "p3", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "enabled": False}
            | {"Logger": {}, "toxics": []},
        )
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])

    def test_a_proxy_past_the_bound_is_refused_in_one_line(self) -> None:
        """
        Past L{registry.MAX_PROXIES}, a create is a 400 and a populate
        keeps the proxies before the one refused, as toxiproxy keeps them.
        """
        self.patch(registry, "MAX_PROXIES", 3)
        clock, proxies, resource = self.api(2)
        spec = {"name": "third", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "enabled": False}
        self.assertEqual(
            json.loads(b"".join(answered(resource, b"POST", b"/proxies", spec).written))["name"], "third"
        )
        refused = answered(resource, b"POST", b"/proxies", dict(spec, name="fourth"))
        self.assertEqual(refused.responseCode, 400)
        error = json.loads(b"".join(refused.written))["error"]
        self.assertEqual(error, "too many proxies: echoapp-proxy keeps at most 3")
        self.assertEqual(sorted(proxies.proxies), ["p0", "p1", "third"])
        batch = [dict(spec, name="p0", upstream="127.0.0.1:2"), dict(spec, name="fifth")]
        populated = answered(resource, b"POST", b"/populate", batch)
        for _ in range(10):
            clock.advance(0)
        answer = json.loads(b"".join(populated.written))
        self.assertEqual((populated.responseCode, answer["error"]), (400, error))
        self.assertEqual([proxy["upstream"] for proxy in answer["proxies"]], ["127.0.0.1:2"])
        self.assertEqual(len(proxies.proxies), 3, "a proxy replaced is not one more")

    def test_a_name_reaches_the_log_and_headers_without_its_control_characters(self) -> None:
        """
        A proxy's and a toxic's names are the API client's: said in the log
        and the C{X-Echoapp-Ignored} header, an ESC or a newline in them is
        an escape, not a terminal's colour change or a line of its own.
        """
        _, proxies, resource = self.api(0)
        name = "db\x1b[2J\nforged\u202e\\x1b"  # and an override, and an escape's look-alike
        proxies.add(proxies.make(ProxySpec(name, "127.0.0.1:0", "127.0.0.1:1", enabled=False)))
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        toxic = {"name": "t\x1b]0;x\x07", "type": "latency", "attributes": {"latency": 1, "jiter": 5}}
        made = DummyRequest([b"proxies", name.encode(), b"toxics"])
        made.method = b"POST"
        made.content = io.BytesIO(json.dumps(toxic).encode())
        resource.render(made)
        self.assertEqual(made.responseCode, 200, "toxiproxy's 200, the attribute left out")
        [header] = made.responseHeaders.getRawHeaders(b"x-echoapp-ignored")
        lines = [formatEvent(event) for event in logged if "ignored attribute" in formatEvent(event)]
        self.assertEqual(len(lines), 1)
        for said in (header.decode(), lines[0]):
            self.assertIn("proxy db\\x1b[2J\\x0aforged\\u202e\\\\x1b, toxic t\\x1b]0;x\\x07:", said)
            self.assertFalse([c for c in said if ord(c) < 0x20], said)

    def test_a_populates_body_is_checked_in_slices_before_any_proxy_is_made(self) -> None:
        """
        A populate's body is checked whole before a proxy is made (a
        mistake in its last entry makes none, as toxiproxy's check of
        missing fields), a slice of the reactor's time at a time: 2,500
        proxies with a toxic each took some 45 ms to check at once.
        """
        self.patch(registry, "SLICE", 0.0)
        clock, proxies, resource = self.api(0)
        turns: list[float] = []
        take_turn = clock.callLater
        clock.callLater = lambda delay, *a, **k: turns.append(delay) or take_turn(delay, *a, **k)  # type: ignore[method-assign]
        entry = {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "enabled": False}
        batch = [dict(entry, name=f"p{n}", toxics=[{"type": "latency"}]) for n in range(5)]
        batch[-1]["toxics"] = [{"type": "nope"}]
        request = answered(resource, b"POST", b"/populate", batch)
        self.assertFalse(request.finished, "not checked at once")
        clock.advance(0)
        self.assertGreaterEqual(turns.count(0), 4, "a turn of the reactor for each proxy checked")
        answer = json.loads(b"".join(request.written))
        self.assertEqual((request.responseCode, answer["proxies"]), (400, None))
        self.assertIn("at proxy 5", answer["error"])
        self.assertEqual(proxies.proxies, {})
        batch[-1]["toxics"] = []
        made = answered(resource, b"POST", b"/populate", batch)
        clock.advance(0)
        self.assertEqual((made.responseCode, len(proxies.proxies)), (201, 5))
