"""
Every .tac file loads, builds its application from echoapp's own service
builders, and describes the deployment its comment promises.
"""

import os
import subprocess
import tempfile

from twisted.application.service import IService, IServiceCollection, loadApplication
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.persisted import sob
from twisted.trial.unittest import SynchronousTestCase

from echoapp import _tac
from echoapp._process import PROCESS
from echoapp._protocols.echo import EchoFactory
from echoapp._protocols.greeter import GreeterFactory
from echoapp._protocols.udp import UDPGreeter
from echoapp._tac import TacMistake
from echoapp.config import TCPLimits
from tests.support import DEADLINE, installed_env, listeners, twistd_path

TAC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tac")


def load(name: str) -> list[tuple[str, str, object]]:
    """(service name, listen description, protocol or factory) per listener."""
    application = loadApplication(os.path.join(TAC, name), "python")
    found = []
    for top in IServiceCollection(application):
        for listener in listeners(top):
            handler = getattr(listener, "factory", None) or listener.protocol
            description = getattr(listener, "description", None) or str(listener.listen)
            found.append((listener.parent.name, description, handler))
    return found


class TacTests(SynchronousTestCase):
    def test_all_tac_files_are_tested(self) -> None:
        self.assertEqual(
            sorted(os.listdir(TAC)), ["custom.tac", "echoapp.tac", "tcp.tac", "udp.tac"], "add a test for it"
        )

    def test_everything(self) -> None:
        found = load("echoapp.tac")
        self.assertEqual(
            [(name, where) for name, where, _ in found],
            [
                ("echoapp-tcp", "tcp:9999:interface=127.0.0.1"),
                ("echoapp-udp", "udp:9999:interface=127.0.0.1"),
                ("echoapp-echo", "tcp:10888:interface=127.0.0.1"),
            ],
        )
        self.assertIsInstance(found[0][2], GreeterFactory)
        self.assertIsInstance(found[1][2], UDPGreeter)
        self.assertIsInstance(found[2][2], EchoFactory)

    def test_faults_need_no_private_import(self) -> None:
        """
        The how-to's .tac with faults, as printed (on port 0): services.Faults
        is public, and the service applies it and keeps its seed.
        """
        from echoapp import services
        from echoapp._faults import FaultyFactory

        page = os.path.join(os.path.dirname(TAC), "docs", "howto", "tac.rst")
        with open(page, encoding="utf-8") as text:
            blocks = text.read().split(".. code-block:: python\n")
        codes = []
        for block in blocks[1:]:
            lines = block.split("\n")[1:]
            end = next((i for i, line in enumerate(lines) if line and not line.startswith(" ")), len(lines))
            codes.append("\n".join(line[4:] for line in lines[:end]))
        [code] = [code for code in codes if "services.Faults" in code]
        namespace: dict[str, object] = {}
        exec(code.replace("tcp:2323", "tcp:0"), namespace)
        [tree] = [
            top for top in IServiceCollection(namespace["application"]) if top.name == services.TCP_NAME
        ]
        [listener] = listeners(tree)
        self.assertIsInstance(listener.factory, FaultyFactory)
        plan = services.fault_plan(tree)
        assert plan is not None
        self.assertEqual((plan.faults.latency, plan.seed), (0.05, 7))

    def test_tcp_alone(self) -> None:
        [(name, where, factory)] = load("tcp.tac")
        self.assertEqual((name, where), ("echoapp-tcp", "tcp:9999:interface=127.0.0.1"))
        self.assertEqual(factory.config.banner, b"Welcome!")  # type: ignore[attr-defined]

    def test_udp_alone(self) -> None:
        [(name, where, protocol)] = load("udp.tac")
        self.assertEqual((name, where), ("echoapp-udp", "udp:9999:interface=127.0.0.1"))
        self.assertIsInstance(protocol, UDPGreeter)

    def test_custom_ports_and_messages(self) -> None:
        found = load("custom.tac")
        self.assertEqual(
            [where for _, where, _ in found],
            [
                "tcp:8888:interface=127.0.0.1",
                r"tcp6:8888:interface=\:\:1",
                "udp:8888:interface=127.0.0.1",
                "tcp:8007:interface=127.0.0.1",
            ],
        )
        greeter = found[0][2]
        self.assertEqual(greeter.config.banner, b"Hello, I am server!")  # type: ignore[attr-defined]
        self.assertEqual(greeter.config.reply.render(b"x"), b"Loop_Msg: x!")  # type: ignore[attr-defined]
        self.assertEqual(found[2][2].reply.render(b"x"), b"x")  # type: ignore[attr-defined]

    def test_application_holds_the_service_tree_and_signal_handling(self) -> None:
        application = loadApplication(os.path.join(TAC, "echoapp.tac"), "python")
        children = list(IServiceCollection(IService(application)))
        self.assertEqual([type(child).__name__ for child in children], ["SignalService", "MultiService"])
        self.assertEqual(
            [grandchild.name for grandchild in children[1]], ["echoapp-tcp", "echoapp-udp", "echoapp-echo"]
        )


HEAD = "from twisted.application import service\nfrom echoapp import services\n"
HEAD += "from echoapp.config import GreeterConfig, TCPLimits\napplication = service.Application('x')\n"


class MistakeTests(SynchronousTestCase):
    """A .tac file that configures echoapp wrongly ends start-up with one line, not a traceback."""

    def tac(self, body: str) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".tac", delete=False) as file:
            file.write(HEAD + body + "\n")
        self.addCleanup(os.unlink, file.name)
        return file.name

    def test_each_mistake_is_its_reason_in_one_line(self) -> None:
        for body, reason in [
            ("TCPLimits(idle_timeout=-5)", "idle-timeout: must be a positive number, got -5"),
            ("GreeterConfig(reply='no placeholder')", "reply: reply template 'no placeholder' must contain"),
            ("services.echo(['tcp:9999:interface=::1'])", "write 'tcp:9999:interface=\\:\\:1'"),
            ("services.udp_greeter(['udp:99999'])", "port '99999' is not a number"),
        ]:
            with self.assertRaises(TacMistake) as caught:
                loadApplication(self.tac(body), "python")
            self.assertIn(reason, str(caught.exception.code), body)
            self.assertTrue(str(caught.exception.code).startswith("echoapp: in the .tac file: "))

    def test_outside_a_tac_file_it_is_the_valueerror_it_always_was(self) -> None:
        error = self.assertRaises(ValueError, TCPLimits, idle_timeout=-5)
        self.assertNotIsInstance(error, SystemExit)

    def test_a_bug_of_the_files_own_keeps_its_traceback(self) -> None:
        self.assertRaises(ZeroDivisionError, loadApplication, self.tac("1 / 0"), "python")

    def test_twistd_prints_the_one_line_and_exits_1(self) -> None:
        path = self.tac("services.echo(['tcp:0:interface=127.0.0.1'], TCPLimits(idle_timeout=-5))")
        result = subprocess.run(
            [twistd_path(), "-n", "--pidfile=", "-y", path],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            env=installed_env(),
            cwd=tempfile.gettempdir(),
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            (result.stdout + result.stderr).strip(),
            "echoapp: in the .tac file: idle-timeout: must be a positive number, got -5",
        )


class LoadingTacTests(SynchronousTestCase):
    """L{_tac.loading_tac}: twistd runs a C{.tac} file with Twisted's C{sob.loadValueFromFile}."""

    def test_true_inside_a_tac_file_only(self) -> None:
        self.assertFalse(_tac.loading_tac())
        with tempfile.NamedTemporaryFile("w", suffix=".tac", delete=False) as file:
            file.write("from echoapp import _tac\n")
            file.write("def ask():\n    return _tac.loading_tac()\n")
            file.write("application = ask()\n")
        self.addCleanup(os.unlink, file.name)
        self.assertIs(sob.loadValueFromFile(file.name, "application"), True, "sob.loadValueFromFile changed")

    def test_without_the_loader_never_and_said_once(self) -> None:
        self.patch(PROCESS, "fallen_back", set())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.patch(sob, "loadValueFromFile", None)
        del sob.loadValueFromFile
        self.assertFalse(_tac.loading_tac())
        self.assertFalse(_tac.loading_tac())
        lines = [formatEvent(event) for event in events if event.get("item") == "loading_tac"]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("twistd's traceback", lines[0])
