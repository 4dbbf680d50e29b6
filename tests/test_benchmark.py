"""The benchmark is not a test, but it must keep working: one short smoke run."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

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
        names = ["echoapp-proxy UDP, uvloop, latency=0ms on every datagram", "nginx stream, UDP"]
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
