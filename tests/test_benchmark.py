"""The benchmark is not a test, but it must keep working: one short smoke run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

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
