"""
C{twistd echoapp-proxy} as a user runs it: the installed plugin forwards,
applies its faults, and refuses a mistake in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.support import DEADLINE, LOOP, Twistd, free_port, json_file, run_twistd, twistd_on_a_free_port
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
        deep = json_file(self, None)
        with open(deep, "w") as nested:
            nested.write("[" * 100_000 + "]" * 100_000)  # a RecursionError's traceback, before
        many = json_file(self, [{"name": f"p{n}", "upstream": "127.0.0.1:1"} for n in range(2001)])
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
            (["--config", deep], "not JSON: nested too deeply"),
            (["--config", many], "2001 proxies: echoapp-proxy keeps at most 2000"),
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


class RecordTests(SynchronousTestCase):
    """C{echoapp-proxy --record FILE} in a real twistd, and its record over the API."""

    def test_every_proxy_recorded_to_the_file_and_served_by_the_api(self) -> None:
        """
        The command line's proxy and one the API makes later both record
        (the file and memory); C{GET /proxies/NAME/record} is that proxy's
        own timeline, C{?format=pcapng} a capture tshark reassembles, an
        unknown proxy toxiproxy's 404; the file holds both streams.
        """
        from tests.proxy.test_api import call, exchange
        from tests.support import tshark_follow

        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "proxy.pcapng")
        echo = Twistd(["echoapp-echo", "--listen", LOOP])
        self.addCleanup(echo.stop)
        upstream = f"127.0.0.1:{echo.address_port('echoapp-echo')}"
        api_listen = "tcp:{port}:interface=127.0.0.1"
        proxy, api = twistd_on_a_free_port(
            ["echoapp-proxy", "--listen", LOOP, "--upstream", upstream, "--record", path, "--api", api_listen]
        )
        self.addCleanup(proxy.stop)
        first = echo_exchange(proxy.address_port("echoapp-proxy"), b"first through\n")
        self.assertEqual(first, b"first through\n")
        status, made = call(
            api, "POST", "/proxies", {"name": "later", "listen": "127.0.0.1:0", "upstream": upstream}
        )
        self.assertEqual(status, 201, made)
        later = int(made["listen"].rpartition(":")[2])
        self.assertEqual(echo_exchange(later, b"made later\n"), b"made later\n")
        deadline = time.monotonic() + DEADLINE
        while True:  # the proxy's record of a connection ends once both sides have closed
            status, headers, text = exchange(api, "GET", "/proxies/later/record")
            if b"closed" in text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual((status, headers["content-type"]), (200, "text/plain; charset=utf-8"))
        self.assertIn(b'"made later\\n"', text)
        self.assertNotIn(b"first through", text)  # that one is the other proxy's
        status, headers, capture = exchange(api, "GET", "/proxies/later/record?format=pcapng")
        self.assertEqual((status, headers["content-type"]), (200, "application/vnd.tcpdump.pcap"))
        served = os.path.join(directory, "served.pcapng")
        with open(served, "wb") as file:
            file.write(capture)
        self.assertEqual(tshark_follow(served, 0), (b"made later\n", b"made later\n"))
        self.assertEqual(
            call(api, "GET", "/proxies/nothing/record"), (404, {"error": "proxy not found", "status": 404})
        )
        self.assertEqual(call(api, "GET", "/proxies/later/record?format=xml")[0], 400)
        proxy.stop()
        streams = {tshark_follow(path, 0), tshark_follow(path, 1)}
        self.assertEqual(streams, {(b"first through\n",) * 2, (b"made later\n",) * 2})

    def test_record_options_are_checked(self) -> None:
        options = [
            "--listen",
            LOOP,
            "--upstream",
            "127.0.0.1:1",
            "--record",
            "x.pcapng",
            "--record-max-size",
            "x",
        ]
        done = run_twistd(["echoapp-proxy", *options])
        self.assertEqual(done.returncode, 1)
        self.assertIn("--record-max-size: 'x' is not a size such as 16MB", done.stderr)

    def test_without_record_the_api_says_how_to_record(self) -> None:
        proxy, api = twistd_on_a_free_port(["echoapp-proxy", "--api", "tcp:{port}:interface=127.0.0.1"])
        self.addCleanup(proxy.stop)
        from tests.proxy.test_api import call

        call(api, "POST", "/proxies", {"name": "a", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"})
        status, answer = call(api, "GET", "/proxies/a/record")
        self.assertEqual(status, 404)
        self.assertIn("--record FILE", answer["error"])
