"""
The package as a maintainer publishes it and as other projects install it:
no cap on Twisted, a LICENSE, one version, a changelog kept with towncrier,
the classifiers, and an sdist that carries what its own tests need.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import echoapp
from tests.support import CHECKOUT, DEADLINE


def checkout(*parts: str) -> str:
    return os.path.join(CHECKOUT, *parts)


def metadata() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(checkout("setup.cfg"))
    return parser


class MetadataTests(SynchronousTestCase):
    def test_no_upper_bound_on_twisted(self) -> None:
        """Every later Twisted installs beside echoapp; CI tests the floor."""
        requires = [line.strip() for line in metadata()["options"]["install_requires"].splitlines()]
        twisted = [line for line in requires if line.lower().startswith("twisted")]
        self.assertEqual(len(twisted), 1)
        self.assertRegex(twisted[0], r"^twisted>=[\d.]+$")

    def test_the_test_extra_runs_the_docs_tests(self) -> None:
        """
        README's "whole test suite" installs the test extra only: it holds
        what tests/test_docs.py builds the manual with, or every docs test
        skips there.
        """
        extras = metadata()["options.extras_require"]

        def names(extra: str) -> set[str]:
            lines = [line.split("#")[0].strip() for line in extras[extra].splitlines()]
            return {re.split(r"[<>=!\[; ]", line)[0].lower() for line in lines if line}

        self.assertEqual({"sphinx", "furo", "sphinx-intl"} - names("test"), set())

    def test_one_version(self) -> None:
        self.assertEqual(metadata()["metadata"]["version"], "attr: echoapp.__version__")
        self.assertRegex(echoapp.__version__, r"^\d+\.\d+\.\d+")

    def test_license(self) -> None:
        with open(checkout("LICENSE"), encoding="utf-8") as license_file:
            text = license_file.read()
        self.assertTrue(text.startswith("MIT License"))
        self.assertIn("echoapp maintainers", text)
        self.assertEqual(metadata()["metadata"]["license_files"], "LICENSE")

    def test_classifiers(self) -> None:
        classifiers = set(metadata()["metadata"]["classifiers"].split("\n"))
        wanted = {
            "Framework :: Twisted",
            "License :: OSI Approved :: MIT License",
            "Typing :: Typed",
            "Topic :: System :: Networking",
        } | {f"Programming Language :: Python :: 3.{minor}" for minor in (10, 11, 12, 13)}
        self.assertEqual(wanted - classifiers, set())
        self.assertEqual(metadata()["options"]["python_requires"], ">=3.10")


class ChangelogTests(SynchronousTestCase):
    def types(self) -> set[str]:
        with open(checkout("pyproject.toml"), encoding="utf-8") as pyproject:
            return set(re.findall(r'^directory = "(\w+)"$', pyproject.read(), re.MULTILINE)) - {
                "newsfragments"
            }

    def test_twisteds_fragment_types(self) -> None:
        self.assertEqual(self.types(), {"feature", "bugfix", "doc", "removal", "misc"})

    def test_every_fragment_has_a_known_type(self) -> None:
        for name in os.listdir(checkout("newsfragments")):
            if name.startswith("."):
                continue
            parts = name.split(".")
            self.assertIn(parts[1] if len(parts) > 1 else "", self.types(), name)

    def test_towncrier_builds_the_changelog(self) -> None:
        if importlib.util.find_spec("towncrier") is None:
            raise SkipTest("towncrier is in the test extra: pip install '.[test]'")
        result = subprocess.run(
            [sys.executable, "-m", "towncrier", "build", "--draft", "--version", echoapp.__version__],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=DEADLINE * 3,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(checkout("CHANGELOG.rst"), encoding="utf-8") as changelog:
            self.assertIn(".. towncrier release notes start", changelog.read())


class SdistTests(SynchronousTestCase):
    def test_the_sdist_carries_its_tests(self) -> None:
        """What README's test command needs from an unpacked sdist (it lacked 29 test modules' helpers)."""
        if importlib.util.find_spec("build") is None or importlib.util.find_spec("setuptools") is None:
            raise SkipTest("build (the test extra) and setuptools make the sdist here")
        out = tempfile.mkdtemp(prefix="echoapp-sdist-")
        result = subprocess.run(
            [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-x", "--outdir", out, CHECKOUT],
            capture_output=True,
            text=True,
            timeout=DEADLINE * 6,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        (sdist,) = os.listdir(out)
        with tarfile.open(os.path.join(out, sdist)) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        tracked = subprocess.run(
            ["git", "ls-files", "tests", "tac", "deploy", "benchmarks", "docs"],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
        )
        wanted = set(tracked.stdout.split()) if tracked.returncode == 0 else set()
        wanted |= {"tests/__init__.py", "tests/conftest.py", "tests/support.py", "tests/tap/__init__.py"}
        wanted |= {"tac/echoapp.tac", "deploy/Dockerfile", "benchmarks/run.py"}
        wanted |= {"LICENSE", "CHANGELOG.rst", "README.rst", "setup.cfg", "pyproject.toml"}
        wanted |= {".dockerignore"}  # tests/test_deploy.py reads it
        self.assertEqual(wanted - names, set())
        with open(checkout("docs", "howto", "install.rst"), encoding="utf-8") as file:
            install = re.sub(r"\s+", " ", file.read())
        [said] = re.findall(r"from the unpacked sdist \(which carries ([^)]*)\)", install)
        for directory in re.findall(r"``(\w+)/``", said):
            self.assertTrue(
                any(name.startswith(f"{directory}/") for name in names), f"install.rst: {directory}/"
            )
        self.assertNotIn("not ``", said, "install.rst says the sdist lacks what it carries")
        self.assertEqual([name for name in names if "/run-" in name or "dropin.cache" in name], [])
