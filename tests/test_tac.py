"""
Every .tac file loads, builds its application from echoapp's own service
builders, and describes the deployment its comment promises.
"""

import os

from twisted.application.service import IService, IServiceCollection, loadApplication
from twisted.trial.unittest import SynchronousTestCase

from echoapp._protocols.echo import EchoFactory
from echoapp._protocols.greeter import GreeterFactory
from echoapp._protocols.udp import UDPGreeter
from tests.support import listeners

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
