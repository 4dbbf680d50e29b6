"""
README.rst is the overview and the PyPI page: short, renders there (twine
check --strict, no relative images or links), its commands and examples run
as written, and every link into the manual names a page that docs/ has.
The manual itself is tested by tests/test_docs.py.
"""

import glob
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from docutils.core import publish_string
from twisted.trial.unittest import SynchronousTestCase

from echoapp._tap import echo, everything, tcp, udp
from echoapp._transports import endpoints
from tests.support import CHECKOUT, DEADLINE, LOOP, Twistd, installed_env

README = os.path.join(CHECKOUT, "README.rst")
PUBLISHED = "https://echoapp.readthedocs.io/en/latest/"
PLUGINS = {"echoapp": everything, "echoapp-tcp": tcp, "echoapp-echo": echo, "echoapp-udp": udp}


def literal_blocks(text: str) -> list[str]:
    """The C{::} literal blocks, dedented."""
    found = re.findall(r"::\n\n((?:    .*\n|\n)+)", text)
    return ["\n".join(line[4:] for line in block.rstrip("\n").splitlines()) + "\n" for block in found]


class ReadmeTests(SynchronousTestCase):
    def setUp(self) -> None:
        with open(README, encoding="utf-8") as readme:
            self.text = readme.read()

    def test_is_an_overview(self) -> None:
        self.assertLessEqual(len(self.text.splitlines()), 250)
        for audience in ("For learners", "For operators", "For test authors"):
            self.assertIn(f"\n{audience}\n", self.text)

    def test_the_two_commands(self) -> None:
        self.assertIn("pip install . && twistd -n echoapp", self.text)
        self.assertIn(
            "pip install '.[test]' && python -m twisted.trial -j2 tests"
            " && python -m twisted.trial --reactor=uvloop tests && python -m pytest -n 2",
            self.text,
        )

    def test_the_defaults_it_names_are_the_real_ones(self) -> None:
        for default in (
            endpoints.DEFAULT_TCP_LISTEN,
            endpoints.DEFAULT_ECHO_LISTEN,
            endpoints.DEFAULT_UDP_LISTEN,
        ):
            self.assertIn(f"``{default}``", self.text)

    def test_renders_without_warnings(self) -> None:
        errors = io.StringIO()
        publish_string(
            self.text, writer="null", settings_overrides={"warning_stream": errors, "report_level": 1}
        )
        self.assertEqual(errors.getvalue(), "")

    def test_nothing_relative_for_pypi(self) -> None:
        """PyPI shows the README alone: an image or a link must be absolute to work there."""
        self.assertEqual(re.findall(r"\.\. (?:image|figure):: (?!https://)\S+", self.text), [])
        targets = re.findall(r"^\.\. _[^:]+: (\S+)$", self.text, re.MULTILINE)
        self.assertGreater(len(targets), 15)
        for target in targets:
            self.assertTrue(target.startswith("https://"), target)

    def test_every_link_into_the_manual_names_a_page_it_has(self) -> None:
        pages = re.findall(re.escape(PUBLISHED) + r"(\S+)\.html", self.text)
        self.assertGreater(len(pages), 15)
        for page in pages:
            self.assertTrue(os.path.exists(os.path.join(CHECKOUT, "docs", page + ".rst")), page)

    def test_passes_twine_check_strict(self) -> None:
        """The long description as PyPI will render it: an sdist, then twine check --strict."""
        try:
            import build  # noqa: F401
            import twine  # noqa: F401
        except ImportError:
            self.skipTest("build and twine are not installed: pip install '.[docs]'")
        out = tempfile.mkdtemp(prefix="echoapp-sdist-")
        self.addCleanup(shutil.rmtree, out, True)
        built = subprocess.run(
            [sys.executable, "-m", "build", "--sdist", "--outdir", out, CHECKOUT],
            capture_output=True, text=True, timeout=DEADLINE * 6,
        )  # fmt: skip
        if built.returncode != 0 and "No module named" in built.stdout + built.stderr:
            self.skipTest(f"cannot build an sdist here: {built.stderr.strip()[-200:]}")
        self.assertEqual(built.returncode, 0, built.stdout[-2000:] + built.stderr[-2000:])
        checked = subprocess.run(
            [sys.executable, "-m", "twine", "check", "--strict", *glob.glob(os.path.join(out, "*.tar.gz"))],
            capture_output=True, text=True, timeout=DEADLINE * 3,
        )  # fmt: skip
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        self.assertIn("PASSED", checked.stdout)

    def test_the_learners_example_prints_what_it_shows(self) -> None:
        """The tutorial's own client, unchanged, against echoapp-tcp: the lines README shows."""
        [block] = [block for block in literal_blocks(self.text) if "seed_tcp_client.py" in block]
        command, *shown = block.splitlines()[1:]
        self.assertEqual(command, "$ python docs/tutorial/seed_tcp_client.py")
        server = Twistd(["echoapp-tcp", "--listen", LOOP])
        self.addCleanup(server.stop)
        ran = subprocess.run(
            [sys.executable, os.path.join(CHECKOUT, "docs", "tutorial", "seed_tcp_client.py"),
             str(server.address_port("echoapp-tcp"))],
            capture_output=True, text=True, timeout=DEADLINE, env=installed_env(),
        )  # fmt: skip
        self.assertEqual(ran.stdout.splitlines(), shown)

    def test_the_test_authors_example_runs_as_written(self) -> None:
        [block] = [block for block in literal_blocks(self.text) if "TestCase" in block]
        directory = tempfile.mkdtemp(prefix="echoapp-readme-")
        self.addCleanup(shutil.rmtree, directory, True)
        with open(os.path.join(directory, "test_example.py"), "w") as out:
            out.write(block)
        trial = subprocess.run(
            [sys.executable, "-m", "twisted.trial", "test_example"],
            cwd=directory, capture_output=True, text=True, env=installed_env(), timeout=120,
        )  # fmt: skip
        self.assertIn("PASSED (successes=1)", trial.stdout, trial.stdout[-2000:])

    def test_the_command_lines_parse(self) -> None:
        """Every twistd command README shows is accepted by that plugin's own options."""
        commands = [shlex.split(line.strip().lstrip("$ ")) for line in self.text.splitlines()
                    if line.strip().lstrip("$ ").startswith("twistd -n")]  # fmt: skip
        self.assertGreaterEqual(len(commands), 2)
        for words in commands:
            [plugin] = [word for word in words if word in PLUGINS]
            PLUGINS[plugin].Options().parseOptions(words[words.index(plugin) + 1 :])
