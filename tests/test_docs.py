"""
The documentation site (docs/) is tested like code: it builds with warnings
as errors, in English and in Chinese; every code example runs (the tutorial's
files against real servers, Python and YAML blocks, and every twistd and
echoapp-client command line parses with the real options); every relative
link of the built HTML resolves; the reference lists every option, fault and
metric the code has; the Chinese catalog has no untranslated or stale
paragraph; and headless Chromium shows a reader the title, the navigation
and an option row.
"""

from __future__ import annotations

import atexit
import dataclasses
import html.parser
import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.application.service import IServiceCollection
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echoapp._client import options as client_options
from echoapp._faults import Faults
from echoapp._metrics import METRICS
from echoapp._tap import compose, echo, everything, proxy, tcp, udp
from tests.support import CHECKOUT, DEADLINE, LOOP, ULOOP, Twistd, installed_env, twistd_path

DOCS = os.path.join(CHECKOUT, "docs")
TUTORIAL = os.path.join(DOCS, "tutorial")
PUBLISHED = "https://echoapp.readthedocs.io/en/latest/"
ZH_PUBLISHED = "https://echoapp.readthedocs.io/zh-cn/latest/"  # Read the Docs' translation project
CATALOG = os.path.join(DOCS, "locale", "zh_CN", "LC_MESSAGES", "tutorial.po")
PLUGINS: dict[str, Any] = {
    "echoapp": everything,
    "echoapp-tcp": tcp,
    "echoapp-echo": echo,
    "echoapp-udp": udp,
    "echoapp-compose": compose,
    "echoapp-proxy": proxy,
}
CLIENT_MODES = {
    "tcp": client_options.TCPOptions,
    "udp": client_options.UDPOptions,
    "echo": client_options.EchoOptions,
    "raw": client_options.RawOptions,
}

_built: dict[tuple[str, ...], str] = {}


def have_sphinx() -> bool:
    try:
        import furo  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError:
        return False
    return True


def needs_the_test_extra(test: SynchronousTestCase) -> None:
    """The examples run under pytest and pytest-twisted: skip, saying so, where only the docs extra is."""
    import importlib.util

    for module in ("pytest", "pytest_twisted", "uvloop"):
        if importlib.util.find_spec(module) is None:
            test.skipTest(f"{module} is not installed: the examples need pip install '.[test]'")


def build(test: SynchronousTestCase, builder: str = "html", *settings: str) -> str:
    """Build docs/ once per builder and settings in this run, with -W; the output directory."""
    if not have_sphinx():
        test.skipTest("Sphinx and furo are not installed: pip install '.[docs]'")
    key = (builder, *settings)
    if key not in _built:
        out = tempfile.mkdtemp(prefix="echoapp-docs-")
        atexit.register(shutil.rmtree, out, True)
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder,
             *settings, "-d", os.path.join(out, ".doctrees"), DOCS, out],
            capture_output=True, text=True, timeout=DEADLINE * 15,
        )  # fmt: skip
        test.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        test.assertEqual(result.stderr.strip(), "", "warnings")
        _built[key] = out
    return _built[key]


def sources() -> Iterator[tuple[str, str]]:
    """Every page of docs/ (relative path, text)."""
    for directory, subdirectories, files in os.walk(DOCS):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(("_", "locale"))]
        for name in sorted(files):
            if name.endswith(".rst"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as page:
                    yield os.path.relpath(path, DOCS), page.read()


def blocks(language: str) -> Iterator[tuple[str, str]]:
    """The C{.. code-block:: LANGUAGE} blocks of every page, dedented: (page, code)."""
    pattern = re.compile(rf"^( *)\.\. code-block:: {language}\n\n((?:\1 +.*\n|\n)+)", re.MULTILINE)
    for page, text in sources():
        for match in pattern.finditer(text):
            lines = match[2].rstrip("\n").splitlines()
            indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
            yield page, "\n".join(line[indent:] for line in lines) + "\n"


def literal_blocks(text: str) -> Iterator[str]:
    """The C{::} literal blocks of a reST text (README's examples), dedented."""
    for match in re.finditer(r"::\n\n((?:(?: +.*)?\n)+)", text):
        yield textwrap.dedent(match[1]).strip("\n") + "\n"


def command_lines() -> Iterator[tuple[str, list[str], str]]:
    """Every twistd and echoapp-client command in console and literal blocks: (page, words, next line)."""
    for page, text in sources():
        lines = text.splitlines()
        for number, line in enumerate(lines):
            following = lines[number + 1].strip() if number + 1 < len(lines) else ""
            line = line.strip()
            line = re.sub(r"^[$#] ", "", line)
            line = line.replace("/opt/echoapp/bin/", "")  # the systemd how-to's virtual environment
            for command in re.split(r" && | \| ", line):
                if command.startswith(("twistd ", "echoapp-client ", "PYTHONPATH=. twistd ")):
                    if command.endswith("\\") or "..." in command or "&" in command.replace("&&", ""):
                        continue  # a continued line, or a sketch with "..."
                    yield page, shlex.split(command.split(" > ")[0].split(" < ")[0]), following


# --- Running the tutorial's files ---------------------------------------------

LISTENING = re.compile(r"(?:listening on (?:tcp:|udp:)?127\.0\.0\.1:|starting on )(\d+)")


class Server:
    """A tutorial server (or twistd) as a subprocess, ready once it says its port."""

    def __init__(
        self,
        test: SynchronousTestCase,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: str = TUTORIAL,
    ) -> None:
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env or installed_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        test.addCleanup(self.stop)
        self.output = ""
        end = time.monotonic() + DEADLINE
        assert self.process.stdout is not None
        while time.monotonic() < end:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output += line
            found = LISTENING.search(line)
            if found:
                self.port = int(found[1])
                return
        raise AssertionError(f"{args} did not say where it listens:\n{self.output}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_client(name: str, port: int) -> str:
    result = subprocess.run(
        [sys.executable, os.path.join(TUTORIAL, name), str(port)],
        capture_output=True, text=True, timeout=DEADLINE, env=installed_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def documented_output(page: str, command: str) -> str:
    """The lines a console block of C{page} shows after C{$ command}, up to the next prompt."""
    with open(os.path.join(DOCS, page), encoding="utf-8") as file:
        text = file.read()
    after = text.split(f"$ {command}\n", 1)[1]
    lines = []
    for line in after.splitlines():
        line = line.strip()
        if not line or line.startswith("$"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def printed(page: str, runs: str) -> str:
    """The one command line of C{page}'s console blocks that runs C{runs}, as printed (no prompt)."""
    with open(os.path.join(DOCS, page), encoding="utf-8") as file:
        found = [line.strip()[2:] for line in file if line.strip().startswith("$ ") and runs in line.split()]
    assert len(found) == 1, f"{page}: one command that runs {runs}, not {found}"
    return found[0]


def as_a_shell_runs(command: str) -> tuple[list[str], dict[str, str]]:
    """
    C{command}'s words and environment as a shell runs it: leading
    C{NAME=value} words set the environment (and nothing else does: the
    test's own PYTHONPATH is left out), C{twistd} is the installed one.
    """
    words, env = shlex.split(command), installed_env()
    while re.match(r"[A-Za-z_]\w*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words[0] == "twistd":
        words[0] = twistd_path()
    return words, env


def tutorial_directory(test: SynchronousTestCase) -> str:
    """A copy of docs/tutorial/, where the tutorial runs its commands (twistd writes its pid file there)."""
    directory = os.path.join(tempfile.mkdtemp(prefix="echoapp-tutorial-"), "tutorial")
    test.addCleanup(shutil.rmtree, os.path.dirname(directory), True)
    shutil.copytree(
        TUTORIAL, directory, ignore=shutil.ignore_patterns("__pycache__", "twistd.*", "dropin.cache")
    )
    return directory


class TutorialTests(SynchronousTestCase):
    """Every step of the tutorial, run as the page says, prints what the page shows."""

    def setUp(self) -> None:
        self.tcp_output = documented_output("tutorial/seeds.rst", "python seed_tcp_client.py 9999")
        self.udp_output = documented_output("tutorial/seeds.rst", "python seed_udp_client.py 9999")
        self.assertIn("b'Hello, Tracy!'", self.tcp_output)

    def tcp_server(self, *args: str, env: dict[str, str] | None = None) -> None:
        server = Server(self, list(args), env)
        self.assertEqual(run_client("seed_tcp_client.py", server.port), self.tcp_output)

    def test_the_threaded_seed_greeter(self) -> None:
        self.tcp_server(sys.executable, "seed_threaded_greeter.py", "0")

    def test_the_socketserver_seed_greeter(self) -> None:
        self.tcp_server(sys.executable, "seed_socketserver_greeter.py", "0")

    def test_the_seed_tcp_client_against_echoapp_unchanged(self) -> None:
        server = Twistd(["echoapp-tcp", "--listen", LOOP])
        self.addCleanup(server.stop)
        self.assertEqual(
            run_client("seed_tcp_client.py", server.address_port("echoapp-tcp")), self.tcp_output
        )

    def test_the_seed_udp_greeter(self) -> None:
        server = Server(self, [sys.executable, "seed_udp_greeter.py", "0"])
        self.assertEqual(run_client("seed_udp_client.py", server.port), self.udp_output)

    def test_the_seed_udp_client_against_echoapp_unchanged(self) -> None:
        server = Twistd(["echoapp-udp", "--listen", ULOOP])
        self.addCleanup(server.stop)
        self.assertEqual(
            run_client("seed_udp_client.py", server.address_port("echoapp-udp")), self.udp_output
        )

    def test_the_twisted_protocol_and_factory(self) -> None:
        self.tcp_server(sys.executable, "twisted_greeter.py", "0")

    def test_the_twisted_datagram_protocol(self) -> None:
        server = Server(self, [sys.executable, "twisted_udp_greeter.py", "0"])
        self.assertEqual(run_client("seed_udp_client.py", server.port), self.udp_output)

    def run_as_printed(self, runs: str, port: dict[str, str] | None = None, tac: bool = False) -> None:
        """
        The tutorial's command that runs C{runs}, exactly as deploying.rst
        prints it, in (a copy of) docs/tutorial/ as its first page says;
        only the port differs, a free one: C{port} replaces the printed
        endpoint, or a C{.tac} file's C{GREETER_LISTEN} names it.
        """
        words, env = as_a_shell_runs(printed("tutorial/deploying.rst", runs))
        words = [(port or {}).get(word, word) for word in words]
        if tac:
            env["GREETER_LISTEN"] = LOOP
        directory = tutorial_directory(self)
        server = Server(self, words, env, cwd=directory)
        self.assertEqual(run_client("seed_tcp_client.py", server.port), self.tcp_output)

    def test_the_twistd_plugin(self) -> None:
        self.assertTrue(os.path.exists(os.path.join(TUTORIAL, "twisted", "plugins", "tutorial_greeter.py")))
        self.run_as_printed("tutorial-greeter", port={"tcp:9999:interface=127.0.0.1": LOOP})

    def test_the_tac_file(self) -> None:
        """It imports twisted_greeter.py from beside it: as printed, without the test's PYTHONPATH."""
        self.run_as_printed("greeter.tac", tac=True)

    def test_echoapps_greeter_in_a_tac_file(self) -> None:
        self.run_as_printed("echoapp_greeter.tac", tac=True)

    def test_every_file_is_shown_and_run(self) -> None:
        """No tutorial file is left out of the pages, nor out of the tests above."""
        shown = "".join(text for page, text in sources() if page.startswith("tutorial"))
        with open(__file__, encoding="utf-8") as this:
            tests = this.read()
        for directory, _, files in os.walk(TUTORIAL):
            for name in files:
                if name.endswith((".py", ".tac")):
                    relative = os.path.relpath(os.path.join(directory, name), TUTORIAL)
                    self.assertIn(f"literalinclude:: {relative}", shown, relative)
                    self.assertIn(repr(name).replace("'", '"'), tests.replace("'", '"'), name)


# --- Every other example -------------------------------------------------------


class ExampleTests(SynchronousTestCase):
    def test_python_blocks_run(self) -> None:
        """Trial tests under trial, pytest tests under pytest, .tac code builds its application."""
        needs_the_test_extra(self)
        directory = tempfile.mkdtemp(prefix="echoapp-docs-examples-")
        self.addCleanup(shutil.rmtree, directory, True)
        trial, pytest, tac, pytest_tests = [], [], 0, 0
        for number, (page, code) in enumerate(blocks("python")):
            if "TestCase" in code:
                trial.append(f"test_docs_example{number}")
            elif "def test_" in code:
                pytest.append(f"test_docs_example{number}.py")
                pytest_tests += code.count("def test_")
            elif "application = " in code:
                namespace: dict[str, Any] = {}
                exec(compile(code, page, "exec"), namespace)
                services = list(IServiceCollection(namespace["application"]))
                self.assertGreaterEqual(len(services), 2, page)
                tac += 1
                continue
            else:
                self.fail(f"{page}: a Python example that no test runs:\n{code}")
            with open(os.path.join(directory, f"test_docs_example{number}.py"), "w") as out:
                out.write(code)
        self.assertEqual((len(trial) > 0, len(pytest) > 1, tac > 0), (True, True, True))
        ran = subprocess.run(
            [sys.executable, "-m", "twisted.trial", *trial],
            cwd=directory, capture_output=True, text=True, env=installed_env(), timeout=DEADLINE * 6,
        )  # fmt: skip
        self.assertIn(f"PASSED (successes={len(trial)})", ran.stdout, ran.stdout[-2000:])
        ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest],
            cwd=directory, capture_output=True, text=True, env=installed_env(), timeout=DEADLINE * 6,
        )  # fmt: skip
        self.assertIn(f"{pytest_tests} passed", ran.stdout, ran.stdout[-2000:])

    def test_a_suite_of_the_trial_and_pytest_examples_passes_in_either_order(self) -> None:
        """
        README's trial example and the pytest how-to's example in one pytest
        run: echoapp's pytest plugin runs trial's TestCases first (in one
        order, the trial test failed with DirtyReactorAggregateError).
        """
        needs_the_test_extra(self)
        with open(os.path.join(CHECKOUT, "README.rst"), encoding="utf-8") as file:
            readme = file.read()
        trial = next(code for code in literal_blocks(readme) if "class ClientTests(TestCase)" in code)
        pytest = next(code for page, code in blocks("python") if page == os.path.join("howto", "pytest.rst"))
        directory = tempfile.mkdtemp(prefix="echoapp-docs-mixed-")
        self.addCleanup(shutil.rmtree, directory, True)
        for name, code in (("test_trial_example.py", trial), ("test_pytest_example.py", pytest)):
            with open(os.path.join(directory, name), "w", encoding="utf-8") as out:
                out.write(code)
        for order in (
            ["test_trial_example.py", "test_pytest_example.py"],
            ["test_pytest_example.py", "test_trial_example.py"],
        ):
            ran = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *order],
                cwd=directory, capture_output=True, text=True, env=installed_env(), timeout=DEADLINE * 6,
            )  # fmt: skip
            self.assertIn("3 passed", ran.stdout, f"{order}:\n{ran.stdout[-3000:]}")
            self.assertNotIn("error", ran.stdout.splitlines()[-1], order)

    def test_the_first_pytest_example_is_a_plain_synchronous_test(self) -> None:
        """
        The pytest how-to opens with what a newcomer writes: plain C{def}
        tests calling a blocking client, which pass with pytest-twisted and
        without it (they hung until the client's timeout, #27).
        """
        needs_the_test_extra(self)
        pytest = next(code for page, code in blocks("python") if page == os.path.join("howto", "pytest.rst"))
        for asynchronous in ("async def", "deferToThread", "pytest_twisted"):
            self.assertNotIn(asynchronous, pytest)
        directory = tempfile.mkdtemp(prefix="echoapp-docs-sync-")
        self.addCleanup(shutil.rmtree, directory, True)
        with open(os.path.join(directory, "test_example.py"), "w", encoding="utf-8") as out:
            out.write(pytest)
        for plugins in ([], ["-p", "no:twisted"]):
            ran = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugins, "test_example.py"],
                cwd=directory, capture_output=True, text=True, env=installed_env(), timeout=DEADLINE * 6,
            )  # fmt: skip
            self.assertIn("2 passed", ran.stdout, f"{plugins}:\n{ran.stdout[-3000:]}")

    def test_yaml_blocks_parse(self) -> None:
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML is not installed")
        found = list(blocks("yaml"))
        self.assertTrue(found)
        for page, code in found:
            config = yaml.safe_load(code)
            [job] = config["scrape_configs"]
            self.assertEqual(job["metrics_path"], "/metrics", page)

    def test_command_lines_parse(self) -> None:
        """Every twistd and echoapp-client command in the docs is accepted by the real options."""
        checked = 0
        for page, words, following in command_lines():
            words = [word for word in words if not word.startswith("PYTHONPATH=")]
            if words[0] == "echoapp-client":
                if words[1].startswith("--"):
                    continue
                options: usage.Options = CLIENT_MODES[words[1]]()
                arguments = words[2:]
            else:
                plugin = [word for word in words if word in PLUGINS]
                if not plugin:
                    continue  # the tutorial's own plugin and .tac files: TutorialTests runs them
                at = words.index(plugin[0])
                options = PLUGINS[plugin[0]].Options()
                arguments = words[at + 1 :]
                if "--help" in arguments:
                    continue
            if re.match(r"twistd [\w-]+: ", following):  # the docs show it failing, with this line
                with self.assertRaises(usage.UsageError, msg=f"{page}: {' '.join(words)}") as raised:
                    options.parseOptions(arguments)
                self.assertEqual(f"{following.split(': ', 1)[1]}", str(raised.exception))
                checked += 1
                continue
            try:
                options.parseOptions(arguments)
            except usage.UsageError as error:
                if "systemd:" in " ".join(arguments) or "ssl:" in " ".join(arguments):
                    continue  # needs an inherited socket or key files: tested in tests/transports
                self.fail(f"{page}: {' '.join(words)}: {error}")
            checked += 1
        self.assertGreater(checked, 20)


# --- What the pages say -------------------------------------------------------


def pages_and_readme() -> Iterator[tuple[str, str]]:
    yield from sources()
    with open(os.path.join(CHECKOUT, "README.rst"), encoding="utf-8") as readme:
        yield "README.rst", readme.read()


class InstallTests(SynchronousTestCase):
    def test_every_install_installs_what_the_page_has(self) -> None:
        """
        echoapp installs from its source (README, install.rst): no page
        installs it by name from an index, where it is not published.
        """
        installs = 0
        for page, text in pages_and_readme():
            for command in re.findall(r"pip install ((?:(?!&&)[^`\n|])*)", text):
                installs += 1
                named = [word for word in shlex.split(command) if re.match(r"echoapp\b", word)]
                self.assertEqual(named, [], f"{page}: pip install {command}")
        self.assertGreater(installs, 10)

    def test_a_virtual_environment_runs_its_own_commands(self) -> None:
        """The systemd how-to's /opt/echoapp is not on PATH: its commands say where they are."""
        for page, text in sources():
            if "/opt/echoapp/bin/pip install" in text:
                bare = re.findall(r"^ *[$#] ((?:echoapp-client|twistd) .*)$", text, re.MULTILINE)
                self.assertEqual(bare, [], page)

    def test_the_developer_install_says_how_twistd_sees_the_plugins(self) -> None:
        """Where README and install.rst first install, not only in README's last section."""
        with open(os.path.join(CHECKOUT, "README.rst"), encoding="utf-8") as readme:
            first = readme.read().split("\nThe plugins\n")[0]
        with open(os.path.join(DOCS, "howto", "install.rst"), encoding="utf-8") as page:
            install = page.read().split("\nInstall variants\n")[0]
        for text in (first, install):
            words = re.sub(r"\s+", " ", text)
            self.assertIn("pip install -e . --config-settings editable_mode=compat", words)
            self.assertIn("a plain ``pip install -e .`` hides the plugins from twistd", words)


class FaultsPageTests(SynchronousTestCase):
    def test_the_conditional_example_does_what_it_says(self) -> None:
        """
        C{match=pay,first=1}: the first connection is reset once it says
        pay; C{first} counts connections, so when the first one does not
        say pay, a later one that does is served.
        """
        with open(os.path.join(DOCS, "howto", "faults.rst"), encoding="utf-8") as file:
            page = re.sub(r"\s+", " ", file.read())
        [spec] = re.findall(
            r"``--fault (match=pay,first=1,[^`]+)`` resets the first connection once it says", page
        )
        self.assertIn("``first`` counts connections, whatever they say", page)

        def exchange(port: int, line: bytes) -> bytes | type[OSError]:
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
                sock.recv(100)  # the banner
                sock.sendall(line)
                try:
                    return sock.recv(100)
                except OSError as error:
                    return type(error)

        server = Twistd(["echoapp-tcp", "--listen", LOOP, "--fault", spec])
        self.addCleanup(server.stop)
        port = server.address_port("echoapp-tcp")
        self.assertIn(exchange(port, b"pay\r\n"), (b"", ConnectionResetError), "the first says pay: reset")
        self.assertEqual(exchange(port, b"pay\r\n"), b"Hello, pay!\r\n", "the second is served")
        server = Twistd(["echoapp-tcp", "--listen", LOOP, "--fault", spec])
        self.addCleanup(server.stop)
        port = server.address_port("echoapp-tcp")
        self.assertEqual(exchange(port, b"hi\r\n"), b"Hello, hi!\r\n")
        self.assertEqual(
            exchange(port, b"pay\r\n"), b"Hello, pay!\r\n", "first counts connections, not matches"
        )


class UpgradingPageTests(SynchronousTestCase):
    def test_it_says_seeded_draws_changed_and_how_to_choose_a_seed(self) -> None:
        with open(os.path.join(DOCS, "howto", "upgrading.rst"), encoding="utf-8") as file:
            page = re.sub(r"\s+", " ", file.read())
        self.assertIn("Seeded draws are now made per source and per connection", page)
        self.assertIn("Choose the seed again", page)
        for where in ("``echoapp_seed``", "``peer.seed``", "``Faults(seed=3)``", "``--fault seed=3``"):
            self.assertIn(where, page)


# --- The built site ------------------------------------------------------------


class Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)
            if name == "id" and value:
                self.ids.add(value)


def parsed(path: str) -> Links:
    links = Links()
    with open(path, encoding="utf-8") as page:
        links.feed(page.read())
    return links


def text_of(path: str) -> str:
    with open(path, encoding="utf-8") as page:
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read()))


# A task of each audience, one click from the index: learners, operators, test authors, everyone.
AUDIENCE_PAGES = [
    "tutorial/index.html",
    "howto/systemd.html",
    "howto/logs.html",
    "howto/metrics.html",
    "howto/trial.html",
    "howto/pytest.html",
    "howto/faults.html",
    "howto/proxy.html",
    "reference/options.html",
    "explanation/limits.html",
]


# The pages made from the code: the generated tables and autodoc.
GENERATED_PAGES = [
    "reference/options.html",
    "reference/client.html",
    "reference/config.html",
    "reference/faults.html",
    "reference/metrics.html",
    "reference/logs.html",
    "reference/endpoints.html",
    "reference/api.html",
    "explanation/architecture.html",
    "explanation/limits.html",
]


def prose_of(path: str) -> str:
    """A built page's text outside code, where smart quotes apply: what a reader cannot paste as is."""
    with open(path, encoding="utf-8") as page:
        text = re.sub(r"<(style|script|pre|code)\b.*?</\1>", " ", page.read(), flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


class SiteTests(SynchronousTestCase):
    def test_the_generated_reference_shows_options_and_values_as_code(self) -> None:
        """
        No option, C{''} or quoted value is prose there, where smart quotes
        made C{--metrics} an en dash and C{''} curly quotes (103 of them).
        """
        out = build(self)
        for page in GENERATED_PAGES:
            prose = prose_of(os.path.join(out, page))
            self.assertEqual(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", prose), [], page)
            # No dash for "--", no ellipsis for "...", no opening curly quote
            # (a quoted value left as prose: --reply '{}', a line 'bye').
            self.assertEqual(re.findall(r"\u2013\w+|\u2026|\u2018.{0,20}", prose), [], page)
        with open(os.path.join(out, "reference", "options.html"), encoding="utf-8") as file:
            options = file.read()
        for code in ("--metrics", "''", "ECHOAPP_EAGER_WRITES=0", "--reply '{}'"):
            spans = " ".join(f'<span class="pre">{word}</span>' for word in code.split(" "))
            literal = f'<code class="docutils literal notranslate">{spans}</code>'
            self.assertTrue(literal in options, f"{code} is not code on reference/options.html")

    def test_no_epytext_markup_on_any_page(self) -> None:
        """The docstrings' C{x}, L{x}, I{x} and B{x} are code, links and emphasis on the page, never raw."""
        out = build(self)
        checked = 0
        for directory, _, files in os.walk(out):
            for name in files:
                if name.endswith(".html") and "_modules" not in directory:
                    raw = re.findall(r"\b[CLIBU]\{[^}]*\}", text_of(os.path.join(directory, name)))
                    self.assertEqual(raw, [], os.path.relpath(os.path.join(directory, name), out))
                    checked += 1
        self.assertGreater(checked, 25)

    def test_internal_links_resolve(self) -> None:
        """Every relative href and src of every built page names a file there, and its #fragment."""
        out = build(self)
        pages = {}
        for directory, _, files in os.walk(out):
            for name in files:
                if name.endswith(".html"):
                    pages[os.path.join(directory, name)] = parsed(os.path.join(directory, name))
        self.assertGreater(len(pages), 25)
        checked = 0
        for path, links in pages.items():
            for link in links.links:
                parts = urlsplit(link)
                if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                    continue
                target = os.path.normpath(os.path.join(os.path.dirname(path), unquote(parts.path)))
                if not parts.path:
                    target = path
                self.assertTrue(os.path.exists(target), f"{os.path.relpath(path, out)}: {link}")
                if parts.fragment and target.endswith(".html"):
                    self.assertIn(parts.fragment, pages[target].ids, f"{os.path.relpath(path, out)}: {link}")
                checked += 1
        self.assertGreater(checked, 500)

    def test_every_option_is_in_the_reference(self) -> None:
        """Generated from the Options classes: each option with its default as --help shows it."""
        options_page = text_of(os.path.join(build(self), "reference", "options.html"))
        for module in PLUGINS.values():
            for row in module.Options.optParameters:
                self.assertIn(f"--{row[0]}", options_page)
                if row[2] is not None:
                    self.assertIn(f"--{row[0]} {row[2]}", options_page.replace("&#39;", "'"))
            for name in dir(module.Options):
                if name.startswith("opt_") and name not in ("opt_help", "opt_version"):
                    self.assertIn("--" + name[4:].replace("_", "-"), options_page)
        client_page = text_of(os.path.join(build(self), "reference", "client.html"))
        for mode in CLIENT_MODES.values():
            for row in mode.optParameters:
                self.assertIn(f"--{row[0]} {'' if row[2] is None else row[2]}", client_page)

    def test_each_plugins_table_lists_every_option_it_takes(self) -> None:
        """
        A plugin's table lists what C{twistd PLUGIN --help} lists, inherited
        options included (C{--record} comes from the options every serving
        plugin shares), with the default the plugin itself declares.
        """
        spec = importlib.util.spec_from_file_location(
            "echoapp_reference", os.path.join(DOCS, "_ext", "echoapp_reference.py")
        )
        assert spec is not None and spec.loader is not None
        reference = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(reference)
        for plugin, module in PLUGINS.items():
            options = module.Options()
            takes = {"--" + name.rstrip("=") for name in options.longOpt} - {"--help", "--version"}
            rows = reference.option_rows(module.Options)
            self.assertEqual({row[0] for row in rows}, takes, plugin)
            for row in rows:
                name = row[0][2:].replace("-", "_")
                if row[1] and name in options.defaults:
                    self.assertEqual(row[1], f"``{options.defaults[name]}``", f"{plugin} {row[0]}")

    def test_every_fault_and_metric_is_in_the_reference(self) -> None:
        out = build(self)
        faults_page = text_of(os.path.join(out, "reference", "faults.html"))
        for field in dataclasses.fields(Faults):
            self.assertIn(f" {field.name} ", faults_page)
            self.assertIn(str(field.metadata["help"]), faults_page.replace("&#39;", "'"))
        metrics_page = text_of(os.path.join(out, "reference", "metrics.html"))
        for name, text, *_ in METRICS:
            self.assertIn(name, metrics_page)
            self.assertIn(text, metrics_page)

    def test_every_audience_finds_its_task_from_the_index(self) -> None:
        links = parsed(os.path.join(build(self), "index.html")).links
        for page in AUDIENCE_PAGES:
            self.assertIn(page, links)

    def test_help_texts_have_no_stray_spaces(self) -> None:
        for name, module in PLUGINS.items():
            for option, text in module.Options().docs.items():
                self.assertNotIn("  ", text, f"{name} --{option}")


# --- The Chinese tutorial --------------------------------------------------------


def read_catalog(path: str) -> list[tuple[str, str, bool]]:
    """(msgid, msgstr, fuzzy) of each entry of a .po file, the header left out."""
    from babel.messages.pofile import read_po

    with open(path, "rb") as file:
        catalog = read_po(file)
    return [(message.id, message.string, message.fuzzy) for message in catalog if message.id]


class TranslationTests(SynchronousTestCase):
    def test_every_tutorial_paragraph_is_translated_and_current(self) -> None:
        """The catalog holds every paragraph the English tutorial has now, translated, none fuzzy."""
        templates = build(self, "gettext")
        current = {message for message, _, _ in read_catalog(os.path.join(templates, "tutorial.pot"))}
        entries = read_catalog(CATALOG)
        translated = {message for message, string, fuzzy in entries if string and not fuzzy}
        self.assertGreater(len(current), 30)
        self.assertEqual(
            sorted(current - translated), [], "untranslated or stale: sphinx-intl update, translate"
        )
        for message, string, fuzzy in entries:
            self.assertFalse(fuzzy, f"fuzzy (stale): {message!r}")
            self.assertTrue(re.search("[\u4e00-\u9fff]", string) or message == string, message)

    def test_the_chinese_tutorial_is_one_click_from_readme_and_the_start_page(self) -> None:
        """
        README, the start page and the English tutorial link the Chinese
        tutorial where Read the Docs serves the translation, a page the
        Chinese build has; the Chinese tutorial links back.
        """
        with open(os.path.join(CHECKOUT, "README.rst"), encoding="utf-8") as readme:
            self.assertIn(f".. _中文教程: {ZH_PUBLISHED}tutorial/index.html", readme.read())
        english = build(self)
        for page in ("index.html", "tutorial/index.html"):
            self.assertIn(
                f"{ZH_PUBLISHED}tutorial/index.html", parsed(os.path.join(english, page)).links, page
            )
        chinese = build(self, "html", "-D", "language=zh_CN")
        self.assertTrue(os.path.exists(os.path.join(chinese, "tutorial", "index.html")))
        back = parsed(os.path.join(chinese, "tutorial", "index.html")).links
        self.assertIn(f"{PUBLISHED}tutorial/index.html", back)
        with open(os.path.join(CHECKOUT, ".readthedocs.yaml"), encoding="utf-8") as config:
            self.assertIn(ZH_PUBLISHED, config.read())

    def test_the_chinese_site_builds(self) -> None:
        out = build(self, "html", "-D", "language=zh_CN")
        page = text_of(os.path.join(out, "tutorial", "seeds.html"))
        self.assertIn("种子程序", page)
        self.assertIn("seed_threaded_greeter.py", page, "the code is the same in both languages")


# --- What a reader sees, in headless Chromium -----------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserTests(SynchronousTestCase):
    def browse(self, page: str, *action: str) -> subprocess.CompletedProcess[str]:
        browser = chromium()
        if browser is None:
            self.skipTest("chromium is not installed here (.ci/run installs it with apt-get)")
        profile = tempfile.mkdtemp(prefix="echoapp-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        url = "file://" + os.path.join(build(self), page)
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--window-size=1280,1600", *action, url],
            capture_output=True, text=True, timeout=DEADLINE * 3, cwd=profile,
        )  # fmt: skip

    def test_the_index_shows_its_title_and_navigation(self) -> None:
        dom = self.browse("index.html", "--dump-dom").stdout
        self.assertIn("<title>echoapp", dom)
        navigation = dom[dom.index('class="sidebar-tree"') :]
        for caption in ("Tutorial", "How-to guides", "Reference", "Explanation"):
            self.assertIn(caption, navigation)

    def test_the_options_reference_shows_an_option_row(self) -> None:
        dom = self.browse("reference/options.html", "--dump-dom").stdout
        self.assertIn("Plugin options", dom)
        row = re.search(r"<tr[^>]*>(?:(?!</tr>).)*--max-per-peer(?:(?!</tr>).)*</tr>", dom, re.DOTALL)
        self.assertIsNotNone(row, "no table row for --max-per-peer")
        assert row is not None
        self.assertIn(">100<", re.sub(r"\s+", "", row[0]))

    def test_the_options_reference_renders(self) -> None:
        shot = os.path.join(tempfile.mkdtemp(prefix="echoapp-shot-"), "options.png")
        self.addCleanup(shutil.rmtree, os.path.dirname(shot), True)
        self.browse("reference/options.html", f"--screenshot={shot}")
        with open(shot, "rb") as image:
            data = image.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(data), 50_000, "a page of text, not a blank one")


class WireRecordPageTests(SynchronousTestCase):
    def test_its_commands_run_as_printed(self) -> None:
        """
        The how-to's twistd line (on a port the kernel picks, the file in a
        temporary directory), a client, then each tshark line as printed:
        the follow shows the client's bytes and the greeter's answer.
        """
        tshark = shutil.which("tshark")
        if tshark is None:
            self.skipTest("tshark is not installed (Debian: apt-get install tshark)")
        with open(os.path.join(DOCS, "howto", "wire-record.rst"), encoding="utf-8") as page:
            lines = [line.strip()[2:] for line in page if line.strip().startswith("$ ")]
        serve = shlex.split(next(line for line in lines if line.startswith("twistd ")))
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, serve[serve.index("--record") + 1])
        args = serve[2:]  # after "twistd -n"
        args[args.index("--listen") + 1] = LOOP
        args[args.index("--record") + 1] = path
        server = Twistd(args)
        self.addCleanup(server.stop)
        with socket.create_connection(
            ("127.0.0.1", server.address_port("echoapp-tcp")), timeout=DEADLINE
        ) as sock:
            sock.recv(1024)
            sock.sendall(b"Hello\n")
            sock.recv(1024)
        server.stop()
        outputs = []
        for line in lines:
            if line.startswith("tshark "):
                done = subprocess.run(
                    shlex.split(line),
                    cwd=directory,
                    capture_output=True,
                    text=True,
                    timeout=DEADLINE,
                    check=True,
                )
                outputs.append(done.stdout)
        self.assertEqual(len(outputs), 3)
        self.assertIn("Hello", outputs[0])
        self.assertIn("Hello, Hello!", outputs[0])
        self.assertIn("FIN", outputs[1])


class WireRecordInTestsPageTests(SynchronousTestCase):
    def test_the_failing_reports_section_is_as_printed(self) -> None:
        """
        The how-to's pytest example, with the client that does not retry
        (C{range(1)}, as the page says), run by the page's own pytest line:
        it fails, and its report's "echoapp wire" section is the one printed,
        line for line (numbers aside: ports, times, the seed), and
        C{--echoapp-record} kept its capture, named for the test id.
        """
        needs_the_test_extra(self)
        page = os.path.join("howto", "wire-record.rst")
        (code,) = [code for name, code in blocks("python") if name == page]
        (shown,) = [code for name, code in blocks("text") if name == page and "echoapp wire" in code]
        directory = tempfile.mkdtemp(prefix="echoapp-docs-wire-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.assertIn("range(2)", code)
        with open(os.path.join(directory, "test_client.py"), "w", encoding="utf-8") as out:
            out.write(code.replace("range(2)", "range(1)"))
        words = shlex.split(printed(page, "--echoapp-record=wire"))
        self.assertEqual(words[:3], ["python", "-m", "pytest"])
        ran = subprocess.run(
            [sys.executable, *words[1:], "-p", "no:cacheprovider", "-p", "no:randomly"],
            cwd=directory, capture_output=True, text=True, env=installed_env(), timeout=DEADLINE * 6,
        )  # fmt: skip
        self.assertIn("1 failed", ran.stdout, ran.stdout[-3000:])

        def shape(line: str) -> str:
            return re.sub(r"\d+", "N", line.strip())

        expected = [shape(line) for line in shown.splitlines()[1:] if line.strip()]
        section = ran.stdout.split("echoapp wire", 1)[1].split("\n", 1)[1].splitlines()
        self.assertEqual([shape(line) for line in section[: len(expected)]], expected, ran.stdout[-3000:])
        kept = os.path.join(directory, "wire", "test_client.py_test_the_client_retries_after_a_reset.pcapng")
        self.assertTrue(os.path.exists(kept), os.listdir(directory))


class TutorialWireTests(SynchronousTestCase):
    def test_the_seed_client_sees_slices_and_tshark_shows_them(self) -> None:
        """
        The wire page's commands exactly as printed, in a copy of
        docs/tutorial/ (only the port differs, a free one): the seed
        client's single recv prints pieces of lines, not lines, and tshark
        reads the capture back with each slice noted.
        """
        with open(os.path.join(TUTORIAL, "wire.rst"), encoding="utf-8") as page:
            lines = [line.strip()[2:] for line in page if line.strip().startswith("$ ")]
        self.assertEqual([line.split()[0] for line in lines], ["twistd", "python", "tshark", "tshark"])
        words, env = as_a_shell_runs(lines[0])
        words = [LOOP if word == "tcp:9999:interface=127.0.0.1" else word for word in words]
        directory = tutorial_directory(self)
        server = Server(self, words, env, cwd=directory)
        client = shlex.split(lines[1])
        client = [sys.executable, *[str(server.port) if word == "9999" else word for word in client[1:]]]
        done = subprocess.run(
            client, cwd=directory, capture_output=True, text=True, timeout=DEADLINE, env=installed_env()
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        # The client prints each piece's repr: b'...', with escapes.
        printed = done.stdout.splitlines()
        pieces = [line[2:-1].encode().decode("unicode_escape").encode("latin-1") for line in printed]
        self.assertEqual(len(pieces), 5, done.stdout)
        self.assertTrue(b"Welcome!\r\nHello, Michael!".startswith(b"".join(pieces)), pieces)
        self.assertLess(len(pieces[0]), len(b"Welcome!\r\n"), "the first recv is a piece, not the line")
        server.stop()
        self.assertTrue(os.path.exists(os.path.join(directory, "seed.pcapng")))
        if shutil.which("tshark") is None:
            self.skipTest("tshark is not installed (Debian: apt-get install tshark): the page's reading part")
        outputs = [
            subprocess.run(
                shlex.split(line), cwd=directory, capture_output=True, text=True, timeout=DEADLINE, check=True
            ).stdout
            for line in lines[2:]
        ]
        self.assertIn("\t3\nWel\n", outputs[0], "the server's 3-byte pieces, indented")
        self.assertIn("Michael", outputs[0])
        self.assertIn("slice 1 of 4: 3 B (bytes 0-2 of 10)", outputs[1])
