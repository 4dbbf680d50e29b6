"""The benchmark is not a test, but it must keep working: one short smoke run."""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support import DEADLINE, free_port, listens

RUN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "run.py")


class BenchmarkSmokeTests(SynchronousTestCase):
    def test_smoke_run_measures_and_reports(self) -> None:
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            self.skipTest("the load generator needs a C compiler")
        with tempfile.TemporaryDirectory() as output:
            result = subprocess.run(
                [sys.executable, RUN, "--smoke", "--output", output],
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            with open(os.path.join(output, "latest.md")) as report:
                text = report.read()
            self.assertTrue(os.path.exists(os.path.join(output, "latest.rst")))
        self.assertIn("### ping-pong, 64 B lines, 50 connections", text)
        rows = [line for line in text.splitlines() if line.startswith("| echoapp-tcp, default reactor |")]
        self.assertEqual(len(rows), 3)  # two scenarios and the idle-connection table
        for row in rows[:2]:
            requests_per_second = float(row.split("|")[3].split()[0])
            self.assertGreater(requests_per_second, 0)
        self.assertIn("done", result.stderr)  # the progress display reached its end


def bench_module(name: str) -> Any:
    """A module of the benchmark (it is a script directory, not a package)."""
    directory = os.path.dirname(RUN)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return importlib.import_module(name)


def servers_module(name: str) -> Any:
    """A module of benchmarks/servers (scripts too, not a package)."""
    directory = os.path.join(os.path.dirname(RUN), "servers")
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return importlib.import_module(name)


class BenchmarkCommandLineTests(SynchronousTestCase):
    """The benchmark's own command line, as a new user meets it."""

    def test_without_uvloop_says_what_to_install_before_starting_anything(self) -> None:
        with tempfile.TemporaryDirectory() as shadow:
            with open(os.path.join(shadow, "uvloop.py"), "w") as fake:
                fake.write("raise ImportError('no uvloop here')\n")
            env = {**os.environ, "PYTHONPATH": shadow}
            result = subprocess.run(
                [sys.executable, RUN, "--smoke", "--contender", "echoapp-tcp, uvloop reactor"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip().splitlines()[-1][:31], "benchmarks/run.py: the uvloop c")
        self.assertIn("pip install '.[bench]'", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertNotIn("round 1", result.stderr, "nothing was started")

    def test_every_option_has_help(self) -> None:
        result = subprocess.run([sys.executable, RUN, "--help"], capture_output=True, text=True, timeout=60)
        text = " ".join(result.stdout.split())
        for option, words in {
            "--rounds": "rounds; each runs every contender once",
            "--scenario": "run this scenario; repeatable",
            "--contender": "run this server; repeatable",
            "--output": "by default a new benchmarks/results/run-DATE-TIME",
            "--repeat-noisy": "CPU steal",
        }.items():
            self.assertIn(option, text)
            self.assertIn(words, text)

    def test_one_scenario_runs_that_one_only(self) -> None:
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            self.skipTest("the load generator needs a C compiler")
        with tempfile.TemporaryDirectory() as output:
            result = subprocess.run(
                [sys.executable, RUN, "--smoke", "--scenario", "50", "--output", output],
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            with open(os.path.join(output, "latest.md")) as report:
                titles = [line for line in report.read().splitlines() if line.startswith("### ")]
        self.assertEqual(
            titles, ["### ping-pong, 64 B lines, 50 connections", "### CPU steal per round (noisy above 5%)"]
        )
        self.assertIn(f"Results in {output}", result.stdout)

    def test_results_go_to_a_fresh_directory_by_default(self) -> None:
        run = bench_module("run")
        path = run.default_output(0.0)
        self.assertEqual(os.path.dirname(path), os.path.join(os.path.dirname(RUN), "results"))
        self.assertRegex(os.path.basename(path), r"^run-\d{8}-\d{6}$")

    def test_steal_per_round(self) -> None:
        measure = bench_module("measure")
        self.assertEqual(measure.cpu_times("cpu  100 0 50 800 0 0 0 50 0 0\n"), (1000, 50))
        self.assertEqual(measure.cpu_times("cpu  10 0 5 80\n"), (95, 0), "no steal column: none")
        self.assertAlmostEqual(measure.steal_share((1000, 50), (2000, 130)), 0.08)
        self.assertEqual(measure.steal_share((1000, 50), (1000, 50)), 0.0)
        report = bench_module("report")
        results = measure.Results(steal=[0.01, 0.08])
        args = argparse.Namespace(scenarios=[], idle=0, contenders=None)
        [(title, _, rows)] = report.tables(results, args)
        self.assertEqual(title, "CPU steal per round (noisy above 5%)")
        self.assertEqual(rows, [["1", "1.0%", ""], ["2", "8.0%", "noisy"]])

    def test_a_server_that_does_not_start_says_so_on_a_line_of_its_own(self) -> None:
        measure = bench_module("measure")
        self.patch(
            measure, "CONTENDERS", {"never": lambda port: [sys.executable, "-c", "raise SystemExit(3)"]}
        )
        error = self.assertRaises(SystemExit, measure.start_server, "never", 1)
        message = str(error.code)
        self.assertTrue(message.startswith("\nnever did not start; to see why, run it by hand:"), message)
        self.assertIn("raise SystemExit(3)", message)

    def test_behind_haproxy_keeps_working(self) -> None:
        contenders = bench_module("contenders")
        if not contenders.have_haproxy() or (shutil.which("cc") is None and shutil.which("gcc") is None):
            self.skipTest("needs haproxy and a C compiler (.ci/run installs haproxy)")
        with tempfile.TemporaryDirectory() as output:
            result = subprocess.run(
                [
                    sys.executable,
                    RUN,
                    "--smoke",
                    "--scenario",
                    "50",
                    "--scenario",
                    "idle",
                    "--output",
                    output,
                    "--contender",
                    "echoapp-tcp behind HAProxy, 2 instances",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            with open(os.path.join(output, "latest.md")) as report:
                text = report.read()
        rows = [
            line
            for line in text.splitlines()
            if line.startswith("| echoapp-tcp behind HAProxy, 2 instances |")
        ]
        self.assertEqual(
            len(rows), 1, "measured through HAProxy, and no idle-memory row for several processes"
        )
        self.assertGreater(float(rows[0].split("|")[3].split()[0]), 0)


class UDPProxyScenarioTests(SynchronousTestCase):
    """The UDP proxy scenario keeps working: a UDP echo upstream, the load generator's udpecho mode."""

    def test_udp_proxies_measured_beside_nginx(self) -> None:
        contenders = bench_module("contenders")
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            self.skipTest("the load generator needs a C compiler")
        if not contenders.have_nginx_stream():
            self.skipTest(
                "needs nginx and its stream module (.ci/run installs nginx-light, libnginx-mod-stream)"
            )
        names = ["echoapp-proxy UDP, uvloop, latency=1ms on every datagram", "nginx stream, UDP"]
        with tempfile.TemporaryDirectory() as output:
            command = [sys.executable, RUN, "--smoke", "--scenario", "udpproxy", "--output", output]
            for name in names:
                command += ["--contender", name]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            with open(os.path.join(output, "latest.md")) as report:
                text = report.read()
        self.assertIn("### UDP through a proxy to a UDP echo, 64 B datagrams, 8 in flight", text)
        for name in names:
            [row] = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
            cells = [cell.strip() for cell in row.split("|")]
            self.assertGreater(float(cells[3].split()[0]), 0, "datagrams came back through the proxy")
            # A smoke run beside the rest of the suite can stall once, long
            # enough for the load generator to count one window (8 in
            # flight) lost; anything lost for a reason loses far more.
            self.assertLessEqual(int(cells[-2]), 8, f"{name}: at most one window lost")

    def test_without_nginx_says_what_to_install(self) -> None:
        run = bench_module("run")
        contenders = bench_module("contenders")
        self.patch(run, "have_nginx_stream", lambda: False)
        args = argparse.Namespace(contenders=["nginx stream, UDP"])
        self.assertIn("apt-get install nginx-light libnginx-mod-stream", run.needs(args))
        self.patch(contenders, "have_nginx_stream", lambda: False)
        self.assertNotIn("nginx stream, UDP", contenders.every_contender(), "the default run leaves it out")


class ProxyContenderTests(SynchronousTestCase):
    """
    The proxy rows with a toxic measure what they say: each proxy has the
    same toxic, given the same way (toxiproxy's API), and it acts on every
    chunk.  (A latency of 0 ms once given on echoapp-proxy's command line
    was no fault at all: its "toxic" rows measured the quiet path.)
    """

    def setUp(self) -> None:
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            self.skipTest("the C echo upstream needs a C compiler")
        self.contenders = bench_module("contenders")
        self.contenders.compiled("epoll_server")

    def started(self, kind: str) -> tuple[int, int]:
        """servers/proxied.py's C{kind}, its (port, API port), stopped at cleanup."""
        script = os.path.join(self.contenders.SERVERS, "proxied.py")
        for _attempt in range(5):  # another test may take a port first: the proxy exits, and goes again
            port, api = free_port(), free_port()
            process = subprocess.Popen(
                [sys.executable, script, kind, str(port), str(api)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.addCleanup(process.wait)
            self.addCleanup(process.terminate)
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline and process.poll() is None:
                if listens(process.pid, port) and listens(process.pid, api):
                    return port, api
                time.sleep(0.05)
        self.fail(f"{kind} did not start")

    def toxics(self, api: int) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", api, timeout=5)
        self.addCleanup(connection.close)
        connection.request("GET", "/proxies/echo/toxics")
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        return json.loads(response.read())

    def fastest_round_trip(self, port: int) -> float:
        """The shortest of 10 echoes of 64 bytes through the proxy, in seconds."""
        shortest = DEADLINE
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            for _ in range(10):
                began = time.monotonic()
                sock.sendall(b"x" * 63 + b"\n")
                got = b""
                while len(got) < 64:
                    chunk = sock.recv(100)
                    self.assertTrue(chunk, "the proxy closed")
                    got += chunk
                shortest = min(shortest, time.monotonic() - began)
        return shortest

    def test_echoapp_toxic_rows_hold_every_reply(self) -> None:
        proxied = servers_module("proxied")
        toxic = json.loads(proxied.TOXIC)
        for kind in ("echoapp-toxic", "echoapp-uvloop-toxic"):
            port, api = self.started(kind)
            [shown] = self.toxics(api)
            self.assertEqual(shown["attributes"], toxic["attributes"], kind)
            self.assertEqual((shown["type"], shown["stream"]), ("latency", "downstream"))
            self.assertEqual(shown["toxicity"], 1)
            # Every reply is held for the latency: no echo is back sooner (a bound below, not a speed).
            self.assertGreater(self.fastest_round_trip(port), proxied.LATENCY_MS / 1000 / 2, kind)

    def test_sparing_row_has_the_toxic_of_toxicity_0(self) -> None:
        _, api = self.started("echoapp-uvloop-spared")
        [shown] = self.toxics(api)
        self.assertEqual(shown["toxicity"], 0)
        self.assertEqual(shown["attributes"]["latency"], servers_module("proxied").LATENCY_MS)

    def test_toxiproxy_has_the_same_toxic(self) -> None:
        if not os.access(self.contenders.TOXIPROXY, os.X_OK):
            self.skipTest("no toxiproxy-server (in shared/tools beside the checkout, or ECHOAPP_TOXIPROXY)")
        _, theirs = self.started("toxiproxy-toxic")
        _, ours = self.started("echoapp-toxic")
        self.assertEqual(self.toxics(ours), self.toxics(theirs))
