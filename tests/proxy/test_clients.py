"""
toxiproxy's own clients, unchanged, driving a real C{twistd echoapp-proxy
--api}: C{toxiproxy-python} (PyPI) and C{toxiproxy-node-client} (npm), each
in front of real upstreams (echoapp's echo, Twisted's own C{twistd web},
and echoapp's UDP greeter through a UDP proxy), the effect of every change
measured on a real socket.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import (
    CHECKOUT,
    DEADLINE,
    LOOP,
    Twistd,
    installed_env,
    serve_on_a_free_port,
    twistd_path,
    udp_port_closed,
    udp_replies,
)

NODE_DIR = os.path.join(CHECKOUT, "tests", "node")
PAGE = b"a page served by twistd web\n" * 40


def exchange(port: int, payload: bytes) -> str:
    """What a real client gets: the bytes, or C{refused} / C{reset}."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
            return got.decode("latin-1")
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


class Upstreams(SynchronousTestCase):
    """
    An echoapp echo, a C{twistd web}, an echoapp UDP greeter and
    C{echoapp-proxy --api} with no proxy, as toxiproxy starts.
    """

    def setUp(self) -> None:
        echo = Twistd(["echoapp-echo", "--listen", LOOP])
        self.addCleanup(echo.stop)
        self.echo = f"127.0.0.1:{echo.address_port('echoapp-echo')}"
        greeter = Twistd(["echoapp-udp", "--listen", "udp:0:interface=127.0.0.1"])
        self.addCleanup(greeter.stop)
        self.udp = f"127.0.0.1:{greeter.address_port('echoapp-udp')}"
        self.web = f"127.0.0.1:{self.twistd_web()}"
        api = Twistd(["echoapp-proxy", "--api", LOOP])
        self.addCleanup(api.stop)
        self.api_port = api.address_port("echoapp-proxy")

    def twistd_web(self) -> int:
        """
        C{twistd web} serving L{PAGE} on a free port: ours once it serves
        the page (L{serve_on_a_free_port}).
        """
        directory = tempfile.mkdtemp(prefix="echoapp-web-")
        self.addCleanup(shutil.rmtree, directory, True)
        with open(os.path.join(directory, "page.txt"), "wb") as page:
            page.write(PAGE)
        command = [twistd_path(), "-n", "--pidfile=", "web", "--path", directory, "--listen"]

        def ours(port: int) -> bool:
            answer = exchange(port, b"GET /page.txt HTTP/1.0\r\nHost: x\r\n\r\n")
            return answer.startswith("HTTP/1.0 200") and answer.endswith(PAGE.decode())

        return serve_on_a_free_port(self, command, ours, "twistd web", cwd=directory, env=installed_env())


class PythonClientTests(Upstreams):
    def test_toxiproxy_python_drives_echoapp_proxy(self) -> None:
        try:
            from toxiproxy import Toxiproxy
            from toxiproxy.exceptions import InvalidToxic
        except ImportError:
            raise SkipTest("toxiproxy-python is not installed (it is in the test extra)") from None
        server = Toxiproxy()
        server.update_api_consumer("127.0.0.1", self.api_port)
        self.assertTrue(server.running())
        echo = server.create(upstream=self.echo, name="echo", listen="127.0.0.1:0")
        port = port_of(echo.listen)
        self.assertNotEqual(port, 0, "port 0 answers the real port")
        self.assertEqual(exchange(port, b"hello"), "hello")

        echo.add_toxic(type="limit_data", attributes={"bytes": 3})
        self.assertEqual(exchange(port, b"hello"), "hel")
        self.assertEqual(set(echo.toxics()), {"limit_data_downstream"})
        echo.destroy_toxic("limit_data_downstream")
        self.assertEqual(exchange(port, b"hello"), "hello")

        with echo.down():
            self.assertEqual(exchange(port, b"hello"), "refused")
        self.assertEqual(exchange(port, b"hello"), "hello")

        echo.add_toxic(type="reset_peer", stream="upstream", attributes={"timeout": 0})
        self.assertEqual(exchange(port, b"hello"), "reset")
        self.assertTrue(server.reset())
        self.assertEqual(exchange(port, b"hello"), "hello")

        echo.add_toxic(type="latency", attributes={"latency": 200})
        started = time.monotonic()
        self.assertEqual(exchange(port, b"slow"), "slow")
        self.assertGreaterEqual(
            time.monotonic() - started, 0.2, "a lower bound: the reply waited the latency"
        )
        server.reset()

        web = server.create(upstream=self.web, name="web")
        request = b"GET /page.txt HTTP/1.0\r\nHost: x\r\n\r\n"
        answer = exchange(port_of(web.listen), request)
        self.assertTrue(answer.startswith("HTTP/1.0 200") and answer.endswith(PAGE.decode()), answer[:200])
        web.add_toxic(type="limit_data", attributes={"bytes": 12})
        self.assertEqual(exchange(port_of(web.listen), request), "HTTP/1.0 200")
        self.assertEqual(set(server.proxies()), {"echo", "web"})

        # A UDP proxy: udp: addresses (toxiproxy-python sends no "type").
        dns = server.create(upstream=f"udp:{self.udp}", name="dns", listen="udp:127.0.0.1:0")
        self.assertEqual(udp_replies(port_of(dns.listen), b"Al"), [b"Hello, Al!"])
        dns.add_toxic(type="latency", attributes={"latency": 200})
        started = time.monotonic()
        self.assertEqual(udp_replies(port_of(dns.listen), b"Al"), [b"Hello, Al!"])
        self.assertGreaterEqual(time.monotonic() - started, 0.2, "the reply waited the latency")
        with self.assertRaises(InvalidToxic):
            dns.add_toxic(type="bandwidth", name="no", attributes={"rate": 1})
        with dns.down():
            self.assertTrue(udp_port_closed(port_of(dns.listen)), "down: the port is let go")
        dns.destroy_toxic("latency_downstream")
        self.assertEqual(udp_replies(port_of(dns.listen), b"Al"), [b"Hello, Al!"])
        server.destroy_all()
        self.assertEqual(server.proxies(), {})


class NodeClientTests(Upstreams):
    def test_toxiproxy_node_client_drives_echoapp_proxy(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise SkipTest("node is not installed (Debian's nodejs)")
        if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "toxiproxy-node-client")):
            raise SkipTest("tests/node has no node_modules: run `npm ci` there (.ci/run does)")
        api = f"http://127.0.0.1:{self.api_port}"
        result = subprocess.run(
            [node, os.path.join(NODE_DIR, "drive.js"), api, self.echo, self.web, self.udp],
            capture_output=True,
            text=True,
            timeout=DEADLINE * 3,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        seen = json.loads(result.stdout)
        self.assertEqual(
            {key: value for key, value in seen.items() if key not in ("version", "web")},
            {
                "plain": "hello",
                "limited": "he",
                "updated": "hell",
                "removed": "hello",
                "disabled": "refused",
                "enabled": "hello",
                "reset_peer": "reset",
                "after_reset": "hello",
                "web_limited": "HTTP/1.0 200",
                "udp": ["Hello, Ned!"],
                "udp_duplicated": ["Hello, Ned!", "Hello, Ned!"],
                "names": ["node_echo", "node_udp", "node_web"],
                "names_after": [],
            },
        )
        self.assertEqual(seen["web"], "HTTP/1.0 200 OK")
        self.assertTrue(seen["version"])
