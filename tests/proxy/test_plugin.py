"""
C{twistd echoapp-proxy} as a user runs it: the installed plugin forwards,
applies its faults, and refuses a mistake in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.support import DEADLINE, LOOP, Twistd, free_port, json_file, run_twistd
from tests.test_twistd import echo_exchange


class PluginTests(SynchronousTestCase):
    def running(self, *args: str, expect: int = 1) -> Twistd:
        server = Twistd(list(args), expect=expect)
        self.addCleanup(server.stop)
        return server

    def test_forwards_with_a_fault_each_way(self) -> None:
        echo = self.running("echoapp-echo", "--listen", LOOP)
        upstream = f"tcp:127.0.0.1:{echo.address_port('echoapp-echo')}"
        proxy = self.running(
            "echoapp-proxy", "--listen", LOOP, "--upstream", upstream, "--fault", "half-close-after-bytes=10"
        )
        got = echo_exchange(proxy.address_port("echoapp-proxy"), b"0123456789abcdef")
        self.assertEqual(got, b"0123456789", "the downstream fault cuts what comes back after 10 bytes")
        self.assertIn("seed=", proxy.output)

    def test_upstream_fault(self) -> None:
        echo = self.running("echoapp-echo", "--listen", LOOP)
        upstream = f"127.0.0.1:{echo.address_port('echoapp-echo')}"
        proxy = self.running(
            "echoapp-proxy",
            "--listen",
            LOOP,
            "--upstream",
            upstream,
            "--fault-upstream",
            "half-close-after-bytes=4",
        )
        self.assertEqual(echo_exchange(proxy.address_port("echoapp-proxy"), b"0123456789"), b"0123")

    def test_config_file_creates_proxies_with_their_toxics(self) -> None:
        echo = self.running("echoapp-echo", "--listen", LOOP)
        config = [
            {
                "name": "echo",
                "listen": "127.0.0.1:0",
                "upstream": f"127.0.0.1:{echo.address_port('echoapp-echo')}",
                "toxics": [{"type": "limit_data", "attributes": {"bytes": 3}}],
            }
        ]
        proxy = self.running("echoapp-proxy", "--config", json_file(self, config))
        self.assertEqual(echo_exchange(proxy.address_port("echoapp-proxy"), b"abcdef"), b"abc")

    def test_composed_with_twisted_web_in_one_process(self) -> None:
        """echoapp-compose: a server (twisted.web) and its faulty front, as the README's example."""
        with tempfile.TemporaryDirectory() as docroot:
            with open(os.path.join(docroot, "index.html"), "w") as page:
                page.write("served by twisted.web")
            web = free_port()
            server = self.running(
                "echoapp-compose",
                "--service",
                f"web --listen tcp:{web}:interface=127.0.0.1 --path {docroot}",
                "--service",
                f"echoapp-proxy --listen {LOOP} --upstream tcp:127.0.0.1:{web} --fault latency=50ms",
            )
            started = time.monotonic()
            url = f"http://127.0.0.1:{server.address_port('echoapp-proxy')}/index.html"
            with urllib.request.urlopen(url, timeout=DEADLINE) as response:
                self.assertEqual(response.read(), b"served by twisted.web")
            self.assertGreaterEqual(
                time.monotonic() - started, 0.05, "a lower bound: the latency was applied"
            )

    def test_metrics_count_the_proxy(self) -> None:
        echo = self.running("echoapp-echo", "--listen", LOOP)
        metrics = free_port()
        proxy = self.running(
            "echoapp-proxy",
            "--listen",
            LOOP,
            "--upstream",
            f"127.0.0.1:{echo.address_port('echoapp-echo')}",
            "--metrics",
            f"tcp:{metrics}:interface=127.0.0.1",
            expect=2,
        )
        port = proxy.address_port("echoapp-proxy")
        self.assertEqual(echo_exchange(port, b"counted"), b"counted")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=DEADLINE) as response:
            text = response.read().decode()
        self.assertRegex(text, r'echoapp_connections_total\{listener="[^"]+",service="echoapp-proxy"\} 1.0')

    def test_mistakes_are_one_line(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            file.write('[{"name": "a", "upstream": "127.0.0.1:1", "toxics": [{"type": "nope"}]}]')
        self.addCleanup(os.unlink, file.name)
        for args, said in [
            (["--listen", LOOP], "--listen and --upstream come in pairs"),
            ([], "nothing to proxy"),
            (["--listen", "tcp:nope", "--upstream", "127.0.0.1:1"], "proxy proxy:"),
            (
                ["--listen", LOOP, "--upstream", "127.0.0.1:1", "--fault", "latency=fast"],
                "--fault: fault latency",
            ),
            (
                ["--listen", "udp:0", "--upstream", "udp:127.0.0.1:53", "--fault", "slice=1"],
                "--fault: fault slice: applies to TCP services only (--listen udp:0 is UDP)",
            ),
            (
                ["--listen", LOOP, "--upstream", "127.0.0.1:1", "--fault-upstream", "reorder=0.5"],
                "--fault-upstream: fault reorder: applies to UDP services only",
            ),
            (["--config", file.name], "invalid toxic type at proxy 1"),
            (["--config", "/nonexistent.json"], "No such file"),
        ]:
            result = run_twistd(["echoapp-proxy", *args])
            self.assertEqual(result.returncode, 1, args)
            self.assertIn(said, result.stderr)
            self.assertNotIn("Traceback", result.stderr + result.stdout)
            self.assertEqual(len(result.stderr.strip().splitlines()), 2, result.stderr)


class FaultOptionTests(SynchronousTestCase):
    def test_repeated_fault_means_one_thing_on_every_plugin(self) -> None:
        """
        C{--fault} given twice is one parse of both, the last value of a key
        winning, on echoapp-proxy as on echoapp-tcp: not one toxic per
        option, which added two 50 ms latencies into 100 ms.
        """
        from echoapp._tap import proxy, tcp

        given = ["--fault", "latency=50ms", "--fault", "latency=50ms,jitter=1ms"]
        greeter = tcp.Options()
        greeter.parseOptions(given)
        front = proxy.Options()
        front.parseOptions(["--listen", LOOP, "--upstream", "127.0.0.1:1", *given])
        [(_, toxics)] = front["proxies"]
        self.assertEqual([toxic.faults for toxic in toxics], [greeter["faults"]])
        self.assertEqual((toxics[0].faults.latency, toxics[0].faults.jitter), (0.05, 0.001))


class StartupTests(SynchronousTestCase):
    def test_discovering_the_plugins_imports_nothing_heavy(self) -> None:
        """
        twistd imports every plugin module to list its plugins: ours name a
        module to import when used, and import nothing of echoapp's, of
        twisted.web, TLS or prometheus then (start-up speed itself is in
        benchmarks/startup.py).
        """
        heavy = ("echoapp", "twisted.web", "OpenSSL", "prometheus_client", "twisted.internet.reactor")
        code = (
            "import sys; import twisted.plugins.echoapp_plugins, twisted.plugins.echoapp_reactors; "
            f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
        )
        found = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE, check=True
        )
        self.assertEqual(found.stdout.strip(), "[]", found.stderr)


class SelfLoopOptionTests(SynchronousTestCase):
    def test_a_proxy_to_its_own_address_is_one_line(self) -> None:
        """On the command line as through the API: refused before anything listens, in one line."""
        from twisted.python import usage

        from echoapp._tap import proxy

        port = free_port()
        for listen, upstream in (
            (f"127.0.0.1:{port}", f"127.0.0.1:{port}"),
            (f"udp:{port}", f"udp:127.0.0.1:{port}"),
        ):
            options = proxy.Options()
            with self.assertRaises(usage.UsageError) as caught:
                options.parseOptions(["--listen", listen, "--upstream", upstream])
            self.assertIn("is its own listen address", str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))
