"""README.rst is the manual: it must render and mention every option there is."""

import os
import re

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echoapp.tap import compose, echo, everything, tcp, udp

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
        for module in (tcp, echo, udp, everything, compose):
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
        from echoapp.client import options as client

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
        import io

        from docutils.core import publish_string

        errors = io.StringIO()
        publish_string(
            self.text, writer="null", settings_overrides={"warning_stream": errors, "report_level": 2}
        )
        self.assertEqual(errors.getvalue(), "")
