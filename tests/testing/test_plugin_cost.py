"""
What installing echoapp costs a pytest run that never asks for its
fixtures: echoapp's pytest11 plugin is loaded into every pytest session in
the environment, so loading it must import nothing heavy (no reactor, no
OpenSSL, no services, no metrics), and nothing echoapp imports may show up
in the user's own Prometheus registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import prometheus_client
from twisted.trial.unittest import SynchronousTestCase

import echoapp._monitor  # noqa: F401  (all of echoapp that metrics touch is imported)
from echoapp import _metrics
from tests.support import DEADLINE, installed_env

PROBE = """
import json, os, sys

def test_probe():
    with open(os.environ["ECHOAPP_PROBE"], "w") as out:
        json.dump(sorted(sys.modules), out)
"""

HEAVY = (
    "twisted.internet.reactor",
    "twisted.internet.asyncioreactor",
    "OpenSSL",
    "cryptography",
    "echoapp.services",
    "echoapp._metrics",
    "echoapp.testing",
    "prometheus_client",
)


class PluginCostTests(SynchronousTestCase):
    def modules_of_a_session(self, *options: str) -> set[str]:
        """The modules a pytest session holds by the time its one test runs."""
        directory = tempfile.mkdtemp(prefix="echoapp-plugin-")
        with open(os.path.join(directory, "test_probe.py"), "w") as probe:
            probe.write(PROBE)
        out = os.path.join(directory, "modules.json")
        # pytest-twisted installs a reactor itself, whoever else is loaded.
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:twisted"]
        result = subprocess.run(
            [*command, *options, "test_probe.py"],
            cwd=directory,
            env={**installed_env(), "ECHOAPP_PROBE": out},
            capture_output=True,
            text=True,
            timeout=DEADLINE * 3,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(out) as modules:
            return set(json.load(modules))

    def test_loading_the_plugin_imports_only_itself(self) -> None:
        without = self.modules_of_a_session("-p", "no:echoapp")
        loaded = self.modules_of_a_session()
        self.assertIn("echoapp._pytest_plugin", loaded, "the pytest11 entry point was not loaded")
        self.assertEqual(loaded - without, {"echoapp", "echoapp._pytest_plugin"})
        heavy = sorted(name for name in loaded if name.startswith(HEAVY))
        self.assertEqual(heavy, [])


class OwnRegistryTests(SynchronousTestCase):
    def test_the_global_registry_holds_nothing_of_echoapp(self) -> None:
        stats = _metrics.TCPStats("echoapp-tcp", self.id())
        stats.accepted += 1
        ours = {metric.name for metric in _metrics.REGISTRY.collect()}
        self.assertIn("echoapp_connections", ours)
        theirs = [metric.name for metric in prometheus_client.REGISTRY.collect()]
        self.assertEqual([name for name in theirs if name.startswith("echoapp")], [])

    def test_the_process_metrics_stay_on_echoapps_listener(self) -> None:
        """What /metrics showed before, from the global registry's collectors, it still shows."""
        names = {metric.name for metric in _metrics.REGISTRY.collect()}
        self.assertTrue({"process_cpu_seconds", "python_info", "python_gc_objects_collected"} <= names, names)
