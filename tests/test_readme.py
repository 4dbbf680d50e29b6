"""README.rst is the manual: it must render and mention every option there is."""

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile

from docutils.core import publish_string
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echoapp._client import options as client
from echoapp._tap import compose, echo, everything, proxy, tcp, udp
from tests.support import installed_env

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")


def long_options(options: usage.Options) -> set[str]:
    names = {name for name, *_ in getattr(options, "optParameters", [])}
    names |= {name[len("opt_") :].replace("_", "-") for name in dir(options) if name.startswith("opt_")}
    return names - {"help", "version"}


class ReadmeTests(SynchronousTestCase):
    def setUp(self) -> None:
        with open(README, encoding="utf-8") as readme:
            self.text = readme.read()

    def test_every_option_is_documented(self) -> None:
        for module in (tcp, echo, udp, everything, compose, proxy):
            for name in long_options(module.Options()):
                self.assertIn(f"``--{name}", self.text, f"{module.__name__}: --{name}")

    def test_documented_defaults_are_the_real_ones(self) -> None:
        """Every option table row (``--name``  ``default``) says what --help says."""
        rows = re.findall(r"^``--([\w-]+)``\s+``([^`]*)``", self.text, re.MULTILINE)
        self.assertGreater(len(rows), 15)
        for name, documented in rows:
            defaults = {
                str(row[2])
                for module in (tcp, echo, udp, everything, compose)
                for row in getattr(module.Options, "optParameters", [])
                if row[0] == name
            }
            self.assertIn(documented, defaults or {documented}, f"--{name}")
            self.assertLessEqual(len(defaults), 1, f"--{name} has different defaults in different plugins")

    def test_every_client_option_is_documented(self) -> None:
        for mode in (client.TCPOptions, client.UDPOptions, client.EchoOptions, client.RawOptions):
            for name in long_options(mode()):
                self.assertIn(f"--{name}", self.text.split("\nClient\n", 1)[1], f"{mode.__name__}: --{name}")

    def test_the_two_commands(self) -> None:
        self.assertIn("pip install . && twistd -n echoapp", self.text)
        self.assertIn(
            "pip install '.[test]' && python -m twisted.trial tests"
            " && python -m twisted.trial --reactor=uvloop tests && python -m pytest",
            self.text,
        )

    def test_renders_without_warnings(self) -> None:
        errors = io.StringIO()
        publish_string(
            self.text, writer="null", settings_overrides={"warning_stream": errors, "report_level": 2}
        )
        self.assertEqual(errors.getvalue(), "")

    def test_the_test_peer_examples_run_as_written(self) -> None:
        """The trial, pytest and asyncio examples of "echoapp as a test peer", run as a user would."""
        section = self.text[self.text.index("echoapp as a test peer\n") : self.text.index("Performance and")]
        blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", section)[:3]
        directory = tempfile.mkdtemp(prefix="echoapp-readme-")
        self.addCleanup(shutil.rmtree, directory, True)
        for number, block in enumerate(blocks):
            with open(os.path.join(directory, f"test_example{number}.py"), "w") as out:
                out.write("\n".join(line[4:] for line in block.splitlines()) + "\n")
        trial = subprocess.run(
            [sys.executable, "-m", "twisted.trial", "test_example0"],
            cwd=directory, capture_output=True, text=True, env=installed_env(), timeout=120,
        )  # fmt: skip
        self.assertIn("PASSED (successes=1)", trial.stdout, trial.stdout[-2000:])
        examples = ["test_example1.py", "test_example2.py"]
        pytest = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *examples],
            cwd=directory, capture_output=True, text=True, env=installed_env(), timeout=120,
        )  # fmt: skip
        self.assertIn("2 passed", pytest.stdout, pytest.stdout[-2000:])
