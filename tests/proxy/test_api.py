"""
toxiproxy's HTTP API served by echoapp-proxy: the same answers as
toxiproxy's own server, call by call (where its binary is present), and
what echoapp does better: all or nothing, bounded bodies, toxics at start.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from echoapp import testing
from echoapp._proxy.api import MAX_BODY, api_service
from echoapp._proxy.registry import Proxies
from echoapp._proxy.trust import Allowance
from tests.support import (
    CHECKOUT,
    DEADLINE,
    LOOP,
    Twistd,
    free_port,
    make_certificates,
    real_toxiproxy,
    recv_until_closed,
    udp_port_closed,
    udp_replies,
    unix_socket_path,
)

TOXIPROXY = os.environ.get(
    "ECHOAPP_TOXIPROXY",
    os.path.join(os.path.dirname(CHECKOUT), "shared", "tools", "toxiproxy", "toxiproxy-server"),
)


def exchange(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request, as a client sees it: the status, the headers (names in lower case) and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def call(port: int, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """One request, as a client sees it: the status and the JSON (or text) answer."""
    status, _, text = exchange(port, method, path, body, raw)
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text.decode()


def normal(answer: Any) -> Any:
    """An answer without what differs by nature: ports, Go's wording of a JSON syntax error."""
    if isinstance(answer, dict):
        if "error" in answer:
            error = re.sub(r":\d{4,5}\b", ":PORT", str(answer["error"]))
            if error.startswith("bad request body") and "Go struct field" not in error:
                error = "bad request body"
            return {**answer, "error": error}
        fixed = {}
        for key, value in answer.items():
            if key == "listen":
                value = re.sub(r":\d+$", ":PORT", str(value))
            elif key == "toxics" and isinstance(value, list):
                value = sorted((normal(toxic) for toxic in value), key=lambda toxic: toxic["name"])
            fixed[key] = normal(value)
        return fixed
    if isinstance(answer, list):
        return [normal(entry) for entry in answer]
    return answer


BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}


def script(port: int, taken: int, upstream: str) -> list[tuple[str, int, Any, Any]]:
    """
    The same calls, in order, against either server: what each answered
    (status, body, and the headers a client reads: the content type, a
    request id, no Server).
    """
    a = {"name": "a", "listen": "127.0.0.1:0", "upstream": upstream}
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/version", None),
        ("GET", "/version", BROWSER),
        ("POST", "/proxies", BROWSER),
        ("GET", "/proxies", None),
        ("POST", "/proxies", a),
        ("POST", "/proxies", a),
        ("POST", "/proxies", b"{bad"),
        ("POST", "/proxies", {"listen": "127.0.0.1:0", "upstream": upstream}),
        ("POST", "/proxies", {"name": "b", "listen": "127.0.0.1:0"}),
        ("POST", "/proxies", {"name": "c", "listen": f"127.0.0.1:{taken}", "upstream": upstream}),
        ("POST", "/proxies", {"name": "c", "listen": "bogus", "upstream": upstream}),
        ("POST", "/proxies", {"name": "c", "listen": "127.0.0.1:99999", "upstream": upstream}),
        # The Ruby client sends every field, those it was not given as null.
        ("POST", "/proxies", {"name": "n", "upstream": upstream, "listen": "127.0.0.1:0", "enabled": None}),
        ("PATCH", "/proxies/n", {"enabled": None, "listen": None, "upstream": None}),
        ("PATCH", "/proxies/n", {"enabled": False}),
        ("PATCH", "/proxies/n", {"enabled": True}),
        ("DELETE", "/proxies/n", None),
        ("GET", "/proxies/a", None),
        ("GET", "/proxies/zz", None),
        ("PUT", "/proxies/a", None),
        ("POST", "/proxies/a/toxics", {"type": "latency", "attributes": {"latency": 100}}),
        ("POST", "/proxies/a/toxics", {"type": "latency", "attributes": {"latency": 100}}),
        ("POST", "/proxies/a/toxics", {"type": "nope"}),
        ("POST", "/proxies/a/toxics", {"type": "noop"}),
        ("POST", "/proxies/a/toxics", {"type": None, "name": "t0"}),
        ("POST", "/proxies/a/toxics", {"type": "latency", "stream": "sideways"}),
        ("POST", "/proxies/a/toxics", {"type": "latency", "name": "y", "attributes": {"latency": "abc"}}),
        ("POST", "/proxies/a/toxics", {"type": "latency", "name": "y", "attributes": {"latency": 1.5}}),
        ("POST", "/proxies/a/toxics", {"type": "latency", "name": "y", "attributes": {"jitter": 1 << 63}}),
        ("POST", "/proxies/a/toxics", {"type": "slicer", "name": "y", "attributes": {"average_size": []}}),
        (
            "POST",
            "/proxies/a/toxics",
            {
                "type": "latency",
                "name": "nul",
                "stream": None,
                "toxicity": None,
                "attributes": {"latency": None},
            },
        ),
        ("PATCH", "/proxies/a/toxics/nul", {"toxicity": None, "attributes": None}),
        ("PATCH", "/proxies/a/toxics/nul", {"toxicity": 0.5, "attributes": {"latency": 7}}),
        (
            "POST",
            "/proxies/a/toxics",
            {"type": "bandwidth", "stream": "upstream", "toxicity": 0.5, "attributes": {"rate": 10}},
        ),
        ("POST", "/proxies/a/toxics", {"type": "limit_data", "attributes": {"bytes": 5}}),
        ("POST", "/proxies/a/toxics", {"type": "slicer", "attributes": {"average_size": 5}}),
        (
            "POST",
            "/proxies/a/toxics",
            {"type": "slicer", "name": "s2", "attributes": {"average_size": 9, "size_variation": 4}},
        ),
        (
            "POST",
            "/proxies/a/toxics",
            {"type": "latency", "name": "u", "attributes": {"latency": 1, "bogus": 2}},
        ),
        ("POST", "/proxies/a/toxics", {"type": "reset_peer"}),
        ("POST", "/proxies/a/toxics", {"type": "timeout"}),
        ("POST", "/proxies/a/toxics", {"type": "timeout", "name": "t2", "attributes": {"timeout": 300}}),
        ("POST", "/proxies/a/toxics", {"type": "slow_close"}),
        ("GET", "/proxies/a/toxics", None),
        ("GET", "/proxies/a/toxics/latency_downstream", None),
        ("POST", "/proxies/a/toxics/latency_downstream", {"attributes": {"latency": 5}}),
        ("PATCH", "/proxies/a/toxics/latency_downstream", {"attributes": {"latency": 6}}),
        ("PATCH", "/proxies/a/toxics/nope", {"attributes": {"latency": 6}}),
        ("GET", "/proxies/a/toxics/nope", None),
        ("DELETE", "/proxies/a/toxics/latency_downstream", None),
        ("DELETE", "/proxies/a/toxics/latency_downstream", None),
        ("POST", "/proxies/zz/toxics", {"type": "latency"}),
        ("POST", "/proxies/a", {"enabled": False}),
        ("GET", "/proxies", None),
        ("POST", "/proxies/a", {"enabled": True}),
        ("POST", "/reset", None),
        ("GET", "/proxies", None),
        ("POST", "/populate", [{"name": "p", "listen": "127.0.0.1:0", "upstream": upstream}]),
        ("POST", "/populate", {"x": 1}),
        ("POST", "/populate", [{"name": "z", "listen": "127.0.0.1:0"}]),
        ("DELETE", "/proxies/a", None),
        ("DELETE", "/proxies/a", None),
        ("GET", "/proxies", None),
        ("GET", "/nothing", None),
        ("GET", "/nothing", BROWSER),
    ]
    answers = []
    for method, path, body in calls:
        headers = None
        if body is BROWSER:
            body, headers = None, BROWSER
        raw = body if isinstance(body, bytes) else None
        status, seen, text = exchange(port, method, path, None if raw else body, raw, headers)
        try:
            answer = normal(json.loads(text)) if text else None
        except ValueError:
            answer = text.decode()
        if path == "/version" and status == 200:
            answer = re.sub(rb'"[^"]*"\}', b'"V"}', text)  # byte for byte, but the release
        said = (
            seen.get("content-type"),
            seen.get("x-content-type-options"),
            "x-toxiproxy-request-id" in seen,
            seen.get("server"),
        )
        answers.append((f"{method} {path} {body!r} {headers}"[:110], status, answer, said))
    return answers


def start_api(test: TestCase, allowance: Allowance | None = None) -> tuple[Proxies, int]:
    proxies = Proxies(reactor=reactor)
    api = api_service(proxies, "tcp:0:interface=127.0.0.1", reactor, allowance=allowance)
    proxies.startService()
    api.privilegedStartService()
    api.startService()
    test.addCleanup(proxies.stopService)
    test.addCleanup(api.stopService)
    assert api.port is not None
    return proxies, int(api.port.getHost().port)  # type: ignore[attr-defined]


def holding_a_port(test: TestCase) -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    test.addCleanup(sock.close)
    return int(sock.getsockname()[1])


def connect_result(address: str, payload: bytes = b"ping") -> str:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return recv_until_closed(sock).decode()
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"


def left_open(address: str, payload: bytes = b"ping") -> str:
    """Send and keep the connection open: what comes back before the proxy ends it, and how."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(payload)
        try:
            return recv_until_closed(sock).decode() or "closed"
        except ConnectionResetError:
            return "reset"


class ToxiproxyComparisonTests(TestCase):
    async def test_same_answers_as_toxiproxy_call_by_call(self) -> None:
        if not os.access(TOXIPROXY, os.X_OK):
            raise SkipTest(f"no toxiproxy-server at {TOXIPROXY} (set ECHOAPP_TOXIPROXY)")
        taken = holding_a_port(self)
        upstream = f"127.0.0.1:{free_port()}"
        theirs_port = real_toxiproxy(self, TOXIPROXY)
        theirs = script(theirs_port, taken, upstream)
        _, ours_port = start_api(self)
        ours = await deferToThread(script, ours_port, taken, upstream)
        self.maxDiff = None
        self.assertEqual([mine for mine, other in zip(ours, theirs, strict=True) if mine != other], [])


class ApiTests(TestCase):
    def setUp(self) -> None:
        self.echo = testing.echo(self)
        self.proxies, self.port = start_api(self)
        self.upstream = f"127.0.0.1:{self.echo.port}"

    async def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        return await deferToThread(call, self.port, method, path, body, raw)

    async def test_port_0_answers_the_real_port_and_forwards(self) -> None:
        status, made = await self.call(
            "POST", "/proxies", {"name": "e", "listen": "127.0.0.1:0", "upstream": self.upstream}
        )
        self.assertEqual(status, 201)
        self.assertNotEqual(made["listen"], "127.0.0.1:0")
        self.assertEqual(await deferToThread(connect_result, made["listen"]), "ping")

    async def test_disabled_refuses_and_enabled_listens_again(self) -> None:
        _, made = await self.call(
            "POST", "/proxies", {"name": "e", "listen": "127.0.0.1:0", "upstream": self.upstream}
        )
        status, disabled = await self.call("POST", "/proxies/e", {"enabled": False})
        self.assertEqual((status, disabled["enabled"], disabled["listen"]), (200, False, made["listen"]))
        self.assertEqual(await deferToThread(connect_result, made["listen"]), "refused")
        await self.call("POST", "/proxies/e", {"enabled": True})
        self.assertEqual(await deferToThread(connect_result, made["listen"]), "ping")

    async def test_toxics_change_what_a_client_gets(self) -> None:
        _, made = await self.call(
            "POST", "/proxies", {"name": "e", "listen": "127.0.0.1:0", "upstream": self.upstream}
        )
        await self.call("POST", "/proxies/e/toxics", {"type": "limit_data", "attributes": {"bytes": 2}})
        self.assertEqual(await deferToThread(connect_result, made["listen"]), "pi")
        await self.call("POST", "/proxies/e/toxics/limit_data_downstream", {"attributes": {"bytes": 3}})
        self.assertEqual(await deferToThread(connect_result, made["listen"]), "pin")
        await self.call("DELETE", "/proxies/e/toxics/limit_data_downstream")
        await self.call("POST", "/proxies/e/toxics", {"type": "reset_peer", "stream": "upstream"})
        self.assertEqual(await deferToThread(connect_result, made["listen"]), "reset")
        await self.call("POST", "/reset")
        self.assertEqual(await deferToThread(connect_result, made["listen"]), "ping")

    async def test_the_timeout_toxic_drops_data_and_closes_with_a_fin(self) -> None:
        _, made = await self.call(
            "POST", "/proxies", {"name": "e", "listen": "127.0.0.1:0", "upstream": self.upstream}
        )
        await self.call("POST", "/proxies/e/toxics", {"type": "timeout", "attributes": {"timeout": 200}})
        self.assertEqual(await deferToThread(left_open, made["listen"]), "closed")

    async def test_an_unknown_attribute_is_200_with_one_line_that_names_it(self) -> None:
        await self.call("POST", "/proxies", {"name": "e", "listen": "127.0.0.1:0", "upstream": self.upstream})

        def post() -> tuple[int, str | None, Any]:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
            try:
                body = {"type": "latency", "attributes": {"latency": 5, "latncy": 9}}
                connection.request("POST", "/proxies/e/toxics", body=json.dumps(body))
                response = connection.getresponse()
                return response.status, response.getheader("X-Echoapp-Ignored"), json.loads(response.read())
            finally:
                connection.close()

        status, said, answer = await deferToThread(post)
        self.assertEqual(
            (status, answer["attributes"]), (200, {"latency": 5, "jitter": 0}), "toxiproxy's answer"
        )
        assert said is not None
        self.assertIn("'latncy'", said)
        self.assertIn("latency_downstream", said)

    async def test_a_udp_proxy_through_the_api(self) -> None:
        greeter = testing.udp(self)
        upstream = f"127.0.0.1:{greeter.port}"
        status, made = await self.call(
            "POST", "/proxies", {"name": "u", "type": "udp", "listen": "127.0.0.1:0", "upstream": upstream}
        )
        self.assertEqual((status, made["type"]), (201, "udp"))
        self.assertNotEqual(made["listen"], "127.0.0.1:0", "the real port")
        port = int(made["listen"].rsplit(":", 1)[1])
        self.assertEqual(await deferToThread(udp_replies, port, b"Al", 1), [b"Hello, Al!"])
        status, _ = await self.call(
            "POST", "/proxies/u/toxics", {"type": "echoapp", "attributes": {"loss": 1}, "name": "gone"}
        )
        self.assertEqual(status, 200)
        self.assertEqual(await deferToThread(udp_replies, port, b"Al"), [], "every reply lost")
        status, refused = await self.call(
            "POST", "/proxies/u/toxics", {"type": "bandwidth", "attributes": {"rate": 10}}
        )
        self.assertEqual(status, 400)
        self.assertIn("applies to TCP services only", refused["error"])
        await self.call("DELETE", "/proxies/u/toxics/gone")
        await self.call("POST", "/proxies/u", {"enabled": False})
        self.assertTrue(udp_port_closed(port), "disabled: the port is let go")
        await self.call("POST", "/proxies/u", {"enabled": True})
        self.assertEqual(
            await deferToThread(udp_replies, port, b"Al", 1), [b"Hello, Al!"], "the same port again"
        )
        status, listed = await self.call("GET", "/proxies")
        self.assertEqual((status, listed["u"]["type"], listed["u"]["listen"]), (200, "udp", made["listen"]))
        status, answer = await self.call("POST", "/proxies/u", {"type": "tcp"})
        self.assertEqual(status, 400, answer)

    async def test_an_update_to_its_own_address_is_refused(self) -> None:
        """
        A proxy made on port 0 listens on a port of its own: an update
        that points its upstream there is a loop, refused as a create
        naming it is (it was accepted, the spec's port being 0).
        """
        for kind in ("tcp", "udp"):
            name = f"self-{kind}"
            spec = {"name": name, "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}
            if kind == "udp":
                spec["type"] = "udp"
            status, made = await self.call("POST", "/proxies", spec)
            self.assertEqual(status, 201)
            status, answer = await self.call("POST", f"/proxies/{name}", {"upstream": made["listen"]})
            self.assertEqual(status, 400, (kind, answer))
            self.assertIn("is its own listen address", answer["error"])

    async def test_an_update_cannot_change_a_proxys_kind(self) -> None:
        _, made = await self.call(
            "POST", "/proxies", {"name": "e", "listen": "127.0.0.1:0", "upstream": self.upstream}
        )
        for change in ({"upstream": "udp:127.0.0.1:53"}, {"listen": "udp:127.0.0.1:0"}, {"type": "udp"}):
            status, answer = await self.call("POST", "/proxies/e", change)
            self.assertEqual(status, 400, (change, answer))
            self.assertIn("a tcp proxy stays one", answer["error"])
        self.assertEqual(await self.call("GET", "/proxies/e"), (200, made), "nothing changed")
        self.assertEqual(await deferToThread(connect_result, made["listen"]), "ping")

    async def test_a_half_close_is_refused_on_a_tls_listener(self) -> None:
        """limit_data half-closes; TLS cannot: refused, not logged as active and doing nothing."""
        try:
            import OpenSSL  # noqa: F401
        except ImportError:
            self.skipTest("TLS needs pyOpenSSL")
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        paths = make_certificates(directory)
        _, self.port = start_api(self, Allowance(tls=(directory,)))  # the operator's --api-allow-tls
        keys = f"privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        listen = f"ssl:0:interface=127.0.0.1:{keys}"
        await self.call("POST", "/proxies", {"name": "s", "listen": listen, "upstream": self.upstream})
        status, answer = await self.call(
            "POST", "/proxies/s/toxics", {"type": "limit_data", "attributes": {"bytes": 3}}
        )
        self.assertEqual(status, 400)
        self.assertIn("needs a listener without TLS", answer["error"])
        status, _ = await self.call(
            "POST",
            "/proxies/s/toxics",
            {"type": "limit_data", "stream": "upstream", "attributes": {"bytes": 3}},
        )
        self.assertEqual(status, 200, "the upstream side is plain TCP: it can half-close")

    async def test_populate_keeps_what_came_before_a_failure_and_applies_toxics(self) -> None:
        """
        As toxiproxy: the proxies before the entry that fails stay, and the
        500 names them; echoapp applies a populate's toxics too.
        """
        taken = holding_a_port(self)
        good = {"name": "g", "listen": "127.0.0.1:0", "upstream": self.upstream}
        bad = {"name": "h", "listen": f"127.0.0.1:{taken}", "upstream": self.upstream}
        status, answer = await self.call("POST", "/populate", [good, bad])
        self.assertEqual(status, 500)
        self.assertEqual([proxy["name"] for proxy in answer["proxies"]], ["g"])
        _, listed = await self.call("GET", "/proxies")
        self.assertEqual(
            sorted(listed), ["g"], "the one before the failure stays, the failed one is not made"
        )
        with_toxic = {**good, "toxics": [{"type": "limit_data", "attributes": {"bytes": 1}}]}
        status, answer = await self.call("POST", "/populate", [with_toxic])
        self.assertEqual(status, 201)
        self.assertEqual(await deferToThread(connect_result, answer["proxies"][0]["listen"]), "p")

    async def test_populate_keeps_an_unchanged_proxy_and_its_toxics(self) -> None:
        """
        toxiproxy keeps a proxy whose address and upstream are unchanged as
        it is, toxics included, and compares addresses as bound
        (C{localhost:N} is C{127.0.0.1:N}): no rebuild, no address in use.
        """
        status, answer = await self.call(
            "POST", "/populate", [{"name": "k", "listen": "127.0.0.1:0", "upstream": self.upstream}]
        )
        self.assertEqual(status, 201)
        listen = answer["proxies"][0]["listen"]
        toxic = {"name": "t", "type": "latency", "attributes": {"latency": 5}}
        self.assertEqual((await self.call("POST", "/proxies/k/toxics", toxic))[0], 200)
        port = listen.rpartition(":")[2]
        for again in (listen, f"localhost:{port}"):
            status, answer = await self.call(
                "POST", "/populate", [{"name": "k", "listen": again, "upstream": self.upstream}]
            )
            self.assertEqual(status, 201, again)
            [kept] = answer["proxies"]
            self.assertEqual((kept["listen"], [t["name"] for t in kept["toxics"]]), (listen, ["t"]), again)

    async def test_a_taken_address_leaves_no_proxy(self) -> None:
        taken = holding_a_port(self)
        status, answer = await self.call(
            "POST", "/proxies", {"name": "t", "listen": f"127.0.0.1:{taken}", "upstream": "127.0.0.1:1"}
        )
        self.assertEqual(status, 500)
        self.assertEqual(answer["error"], f"listen tcp 127.0.0.1:{taken}: bind: address already in use")
        self.assertEqual(await self.call("GET", "/proxies"), (200, {}))
        status, _ = await self.call(
            "POST", "/proxies", {"name": "t", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}
        )
        self.assertEqual(status, 201, "the name was not left taken")

    async def test_odd_values_are_said_in_the_apis_words_and_briefly(self) -> None:
        """
        No Python internals in an answer (a parameter a client endpoint
        lacks), no value echoed whole (a toxicity of 4,000 digits), no
        upstream that can never connect (a timeout of 0 or under), and a
        lone surrogate in a name is U+FFFD, as Go's decoder reads it (it
        made the log line that named it vanish).
        """
        for upstream, said in [
            ("tcp:127.0.0.1\\:19001", "not a client endpoint (a parameter missing or unknown)"),
            ("tcp:host=127.0.0.1:port=1:timeout=0", "a timeout is a whole number of seconds over 0"),
            ("tcp:host=127.0.0.1:port=1:timeout=-5", "a timeout is a whole number of seconds over 0"),
        ]:
            spec = {"name": "odd", "listen": "127.0.0.1:0", "upstream": upstream}
            status, answer = await self.call("POST", "/proxies", spec)
            self.assertEqual(status, 400, upstream)
            self.assertTrue(answer["error"].endswith(said), answer)
        spec = {"name": "x\ud800", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}
        status, made = await self.call("POST", "/proxies", raw=json.dumps(spec).encode())
        self.assertEqual((status, made["name"]), (201, "x\ufffd"))
        huge = b'{"type": "latency", "toxicity": ' + b"9" * 4000 + b"}"
        status, answer = await self.call("POST", f"/proxies/{quote(made['name'])}/toxics", raw=huge)
        self.assertEqual(status, 400)
        self.assertLess(len(answer["error"]), 120, answer["error"])

    async def test_a_failed_reset_keeps_what_it_did_before(self) -> None:
        """
        A reset goes through the proxies in turn, as toxiproxy's: one that
        cannot listen again (its port taken while it was disabled) stops it,
        and the proxies before it keep their reset (the manual says so).
        """
        port = free_port()
        for name, listen in (("first", "127.0.0.1:0"), ("second", f"127.0.0.1:{port}")):
            spec = {"name": name, "listen": listen, "upstream": "127.0.0.1:1"}
            self.assertEqual((await self.call("POST", "/proxies", spec))[0], 201)
            toxic = {"name": "slow", "type": "latency", "attributes": {"latency": 50}}
            self.assertEqual((await self.call("POST", f"/proxies/{name}/toxics", toxic))[0], 200)
        self.assertEqual((await self.call("POST", "/proxies/second", {"enabled": False}))[0], 200)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen(1)
            status, _ = await self.call("POST", "/reset")
        self.assertEqual(status, 500)
        self.assertEqual(await self.call("GET", "/proxies/first/toxics"), (200, []))
        status, toxics = await self.call("GET", "/proxies/second/toxics")
        self.assertEqual([toxic["name"] for toxic in toxics], ["slow"])

    async def test_names_and_toxics_are_bounded(self) -> None:
        """
        A name of a proxy or a toxic is at most 256 characters, and a proxy
        has at most 100 toxics: each is in every answer that lists it, and
        every chunk looks at every toxic (20,000 cost 12 ms a round trip).
        """
        long = "n" * 257
        status, answer = await self.call(
            "POST", "/proxies", {"name": long, "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}
        )
        self.assertEqual(
            (status, answer["error"]), (400, "bad request body: name is longer than 256 characters")
        )
        proxy = {"name": "n" * 256, "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}
        self.assertEqual((await self.call("POST", "/proxies", proxy))[0], 201)
        toxics = f"/proxies/{'n' * 256}/toxics"
        status, answer = await self.call("POST", toxics, {"name": long, "type": "latency"})
        self.assertEqual(
            (status, answer["error"]), (400, "bad request body: name is longer than 256 characters")
        )
        for number in range(100):
            status, _ = await self.call("POST", toxics, {"name": f"t{number}", "type": "latency"})
            self.assertEqual(status, 200, number)
        status, answer = await self.call("POST", toxics, {"name": "t100", "type": "latency"})
        self.assertEqual((status, answer["error"]), (400, "too many toxics: a proxy has at most 100"))

    async def test_a_body_over_the_bound_is_refused_unread(self) -> None:
        status, answer = await self.call("POST", "/populate", raw=b"[" + b" " * MAX_BODY + b"]")
        self.assertEqual(status, 413)
        self.assertIn("request body over", answer["error"])

    async def test_nothing_crashes_it(self) -> None:
        for body in [
            b"null",
            b"[]",
            b"1",
            b'"x"',
            b"{",
            b"[1]",
            b'[{"name": 1}]',
            b"\xff\xfe",
            b'{"name": {"x": 1}}',
        ]:
            for path in ["/proxies", "/populate", "/proxies/x/toxics", "/proxies/x"]:
                status, answer = await self.call("POST", path, raw=body)
                self.assertIn(
                    status, (201, 400, 404, 409) if body == b"[]" else (400, 404, 409), (path, body, answer)
                )
                self.assertNotIn("\n", json.dumps(answer))
        self.assertEqual((await self.call("GET", "/version"))[0], 200)


class OutOfRangeTests(TestCase):
    """
    Values no fault can have are a 400 with one line, and nothing logged as
    a failure: each of these was a 500 with a 2 KB traceback.  toxiproxy
    answers 400 beyond int64 (in its Go words, pinned in the comparison
    above); echoapp's faults also stop at a day and a terabyte.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.proxies, self.port = start_api(self)

    async def refused(self, raw: bytes, path: str = "/proxies/e/toxics") -> str:
        proxy = {"name": "e", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}
        await deferToThread(call, self.port, "POST", "/proxies", proxy)  # 201, then 409
        status, answer = await deferToThread(call, self.port, "POST", path, None, raw)
        self.assertEqual(status, 400, answer)
        self.assertEqual(answer["status"], 400)
        self.assertNotIn("\n", answer["error"])
        if path.endswith("/toxics"):
            self.assertEqual(self.proxies.get("e").faults.toxics, {}, "nothing applied")
        failures = [event for event in self.events if "log_failure" in event]
        self.assertEqual(failures, [], "no traceback for a client's mistake")
        return str(answer["error"])

    def toxic(self, kind: str, attributes: str) -> bytes:
        return f'{{"type": "{kind}", "attributes": {attributes}}}'.encode()

    async def test_latency_of_10_to_the_12_ms(self) -> None:
        error = await self.refused(self.toxic("latency", '{"latency": 1000000000000}'))
        self.assertIn("latency", error)

    async def test_latency_of_2_to_the_63(self) -> None:
        error = await self.refused(self.toxic("latency", f'{{"latency": {1 << 63}}}'))
        self.assertIn("of type int64", error)

    async def test_latency_of_10_to_the_400(self) -> None:
        await self.refused(self.toxic("latency", '{"latency": 1' + "0" * 400 + "}"))
        await self.refused(self.toxic("latency", '{"latency": 1e400}'))

    async def test_rate_of_10_to_the_12(self) -> None:
        error = await self.refused(self.toxic("bandwidth", '{"rate": 1000000000000}'))
        self.assertIn("rate", error)

    async def test_timeout_of_10_to_the_15(self) -> None:
        await self.refused(self.toxic("timeout", '{"timeout": 1000000000000000}'))

    async def test_reset_peer_of_10_to_the_15(self) -> None:
        await self.refused(self.toxic("reset_peer", '{"timeout": 1000000000000000}'))

    async def test_slow_close_of_10_to_the_15(self) -> None:
        await self.refused(self.toxic("slow_close", '{"delay": 1000000000000000}'))

    async def test_slicer_delay_of_10_to_the_15(self) -> None:
        await self.refused(self.toxic("slicer", '{"average_size": 10, "delay": 1000000000000000}'))

    async def test_limit_data_of_2_to_the_62(self) -> None:
        await self.refused(self.toxic("limit_data", f'{{"bytes": {1 << 62}}}'))

    async def test_an_update_out_of_range_changes_nothing(self) -> None:
        await self.refused(self.toxic("latency", '{"latency": -1}'))
        latency = {"type": "latency", "attributes": {"latency": 5}}
        status, _ = await deferToThread(call, self.port, "POST", "/proxies/e/toxics", latency)
        self.assertEqual(status, 200)
        update = {"attributes": {"jitter": 10**12}}
        path = "/proxies/e/toxics/latency_downstream"
        status, answer = await deferToThread(call, self.port, "PATCH", path, update)
        self.assertEqual(status, 400, answer)
        self.assertEqual(self.proxies.get("e").faults.toxics["latency_downstream"].attributes["jitter"], 0)

    async def test_json_nested_100000_deep(self) -> None:
        for path in ("/proxies/e/toxics", "/proxies", "/populate", "/proxies/e"):
            error = await self.refused(b"[" * 100_000 + b"]" * 100_000, path)
            self.assertIn("bad request body", error)


def unix_server(path: str, answer: bytes) -> socket.socket:
    """A private UNIX server that answers each connection with C{answer} and closes."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                client.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server


class ApiTrustTests(TestCase):
    """Through the API on loopback, as a local user would try it."""

    def setUp(self) -> None:
        self.echo = testing.echo(self)
        self.upstream = f"127.0.0.1:{self.echo.port}"
        self.proxies, self.port = start_api(self)

    async def call(
        self, method: str, path: str, body: Any = None, port: int | None = None
    ) -> tuple[int, Any]:
        return await deferToThread(call, port or self.port, method, path, body)

    def bound_host(self, name: str) -> str:
        return str(self.proxies.get(name).port.getHost().host)

    def assert_one_line(self, answer: Any, status: int) -> None:
        self.assertEqual(answer["status"], status)
        self.assertNotIn("\n", answer["error"])

    async def test_a_private_unix_socket_is_not_published(self) -> None:
        path = unix_socket_path(self, "private.sock")
        server = unix_server(path, b"secret")
        self.addCleanup(server.close)
        body = {"name": "d", "listen": "127.0.0.1:0", "upstream": f"unix:{path}"}
        status, answer = await self.call("POST", "/proxies", body)
        self.assertEqual(status, 400)
        self.assert_one_line(answer, 400)
        status, answer = await self.call("POST", "/proxies", {**body, "listen": "0.0.0.0:2375"})
        self.assertEqual(status, 400)
        self.assertEqual(await self.call("GET", "/proxies"), (200, {}), "nothing made")
        _, port = start_api(self, Allowance(unix=(os.path.dirname(path),)))
        status, made = await self.call("POST", "/proxies", body, port)
        self.assertEqual(status, 201, "allowed by the operator")

        def through() -> bytes:
            with socket.create_connection(
                ("127.0.0.1", int(made["listen"].rsplit(":", 1)[1])), DEADLINE
            ) as sock:
                return recv_until_closed(sock)

        self.assertEqual(await deferToThread(through), b"secret")

    async def test_no_listen_listens_where_the_api_does(self) -> None:
        for name, listen in [("a", None), ("b", ""), ("c", ":0"), ("d", "tcp:0")]:
            body = {"name": name, "upstream": self.upstream}
            if listen is not None:
                body["listen"] = listen
            status, made = await self.call("POST", "/proxies", body)
            self.assertEqual(status, 201, listen)
            self.assertEqual(self.bound_host(name), "127.0.0.1", listen)
            self.assertTrue(made["listen"].startswith("127.0.0.1:"), made)
            self.assertEqual(await deferToThread(connect_result, made["listen"]), "ping")

    async def test_every_interface_is_refused_as_toxiproxy_refuses_a_listen(self) -> None:
        for listen in ["0.0.0.0:0", "[::]:0", "tcp:0:interface=0.0.0.0"]:
            status, answer = await self.call(
                "POST", "/proxies", {"name": "w", "listen": listen, "upstream": self.upstream}
            )
            self.assertEqual(status, 500, listen)
            self.assert_one_line(answer, 500)
        self.assertEqual(await self.call("GET", "/proxies"), (200, {}))

    async def test_a_loopback_proxy_is_not_moved_to_every_interface(self) -> None:
        _, made = await self.call(
            "POST", "/proxies", {"name": "lo", "listen": "127.0.0.1:0", "upstream": self.upstream}
        )
        for method in ("POST", "PATCH"):
            status, answer = await self.call(method, "/proxies/lo", {"listen": "0.0.0.0:0"})
            self.assertEqual(status, 500)
            self.assert_one_line(answer, 500)
        self.assertEqual(await self.call("GET", "/proxies/lo"), (200, made), "unchanged")
        self.assertEqual(self.bound_host("lo"), "127.0.0.1")
        status, _ = await self.call("PATCH", "/proxies/lo", {"enabled": False})
        self.assertEqual(status, 200, "what the request does not change is not checked")

    async def test_no_socket_file_where_the_client_says(self) -> None:
        path = unix_socket_path(self, "made.sock")
        status, answer = await self.call(
            "POST", "/proxies", {"name": "u", "listen": f"unix:{path}", "upstream": self.upstream}
        )
        self.assertEqual(status, 500)
        self.assert_one_line(answer, 500)
        self.assertFalse(os.path.exists(path))

    async def test_a_privileged_port_is_refused(self) -> None:
        status, answer = await self.call(
            "POST", "/proxies", {"name": "p", "listen": "127.0.0.1:80", "upstream": self.upstream}
        )
        self.assertEqual(status, 500)
        self.assertIn("privileged", answer["error"])

    async def test_populate_keeps_what_came_before_a_refusal(self) -> None:
        good = {"name": "g", "listen": "127.0.0.1:0", "upstream": self.upstream}
        wide = {"name": "w", "listen": "0.0.0.0:0", "upstream": self.upstream}
        status, answer = await self.call("POST", "/populate", [good, wide])
        self.assertEqual(status, 500)
        self.assertEqual([proxy["name"] for proxy in answer["proxies"]], ["g"])
        self.assertEqual(sorted((await self.call("GET", "/proxies"))[1]), ["g"])

    async def test_the_operator_allows_every_interface(self) -> None:
        proxies, port = start_api(self, Allowance(interfaces=("0.0.0.0",)))
        body = {"name": "e", "listen": "0.0.0.0:0", "upstream": self.upstream}
        self.assertEqual((await self.call("POST", "/proxies", body, port))[0], 201)
        self.assertEqual(proxies.get("e").port.getHost().host, "0.0.0.0")


class ReadmeCurlTests(SynchronousTestCase):
    def test_every_curl_line_of_the_readme_answers(self) -> None:
        """The manual's curl lines, run as written against a real twistd (ports swapped for free ones)."""
        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("curl is not installed")
        with open(os.path.join(CHECKOUT, "docs", "howto", "proxy.rst"), encoding="utf-8") as readme:
            commands = (line.strip().removeprefix("$ ") for line in readme)  # a console block's prompt
            lines = [line for line in commands if line.startswith("curl -s") and ":8474" in line]
        self.assertGreaterEqual(len(lines), 13)
        echo = Twistd(["echoapp-echo", "--listen", LOOP])
        self.addCleanup(echo.stop)
        api = Twistd(["echoapp-proxy", "--api", LOOP])
        self.addCleanup(api.stop)
        swaps = {
            "localhost:8474": f"127.0.0.1:{api.address_port('echoapp-proxy')}",
            "127.0.0.1:6379": f"127.0.0.1:{echo.address_port('echoapp-echo')}",
            "127.0.0.1:8080": f"127.0.0.1:{echo.address_port('echoapp-echo')}",
        }
        for line in lines:
            for old, new in swaps.items():
                line = line.replace(old, new)
            args = shlex.split(line)[1:]
            result = subprocess.run(
                [curl, *args, "-w", "\\n%{http_code}"], capture_output=True, text=True, timeout=DEADLINE
            )
            body, _, code = result.stdout.rpartition("\n")
            self.assertIn(code, ("200", "201", "204"), f"{line}: {result.stdout}")
            if body:
                json.loads(body)
