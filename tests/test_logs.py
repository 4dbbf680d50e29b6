import io
import json

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoapp._limits.connections import Connections
from echoapp._protocols.echo import EchoFactory
from echoapp.config import TCPLimits
from echoapp.logs import event_as_json, json_observer
from tests.support import fake_connect


class JSONLogTests(SynchronousTestCase):
    def test_one_object_per_line_with_fields(self) -> None:
        stream = io.StringIO()
        Logger(namespace="echoapp.test", observer=json_observer(stream)).warn(
            "Closing {peer}: {reason}", peer="127.0.0.1", reason="idle timeout"
        )
        [line] = stream.getvalue().splitlines()
        record = json.loads(line)
        self.assertEqual(record["message"], "Closing 127.0.0.1: idle timeout")
        self.assertEqual(
            (record["peer"], record["reason"], record["level"]), ("127.0.0.1", "idle timeout", "warn")
        )
        self.assertEqual(record["namespace"], "echoapp.test")
        self.assertTrue(record["time"].endswith("+00:00"))

    def test_odd_values_and_failures_stay_json(self) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            failure = Failure()
        text = event_as_json(
            {
                "log_format": "{data} {thing}",
                "data": b"\xff",
                "thing": object(),
                "log_level": LogLevel.error,
                "log_failure": failure,
                "log_time": 0,
            }
        )
        record = json.loads(text)
        self.assertEqual(text.count("\n"), 1)
        self.assertEqual(record["data"], "\\xff")
        self.assertIn("ValueError: boom", record["traceback"])

    def test_connections_are_logged_open_and_closed_with_fields(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, _ = fake_connect(EchoFactory(clock=Clock(), log_connections=True), "127.0.0.7")
        protocol.connectionLost(None)
        mine = [event for event in events if event.get("peer") == "127.0.0.7"]
        self.assertEqual(
            [formatEvent(event) for event in mine],
            [
                "Connection from 127.0.0.7:50000 to echoapp",
                "Connection from 127.0.0.7:50000 to echoapp closed",
            ],
        )
        self.assertEqual([event["port"] for event in mine], [50000, 50000])
        self.assertEqual(mine[0]["log_level"], LogLevel.info)

    def test_by_default_connections_are_only_summarized(self) -> None:
        """A flood of clients must not grow the log: per-connection lines are opt-in."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        factory = EchoFactory(Connections(TCPLimits(idle_timeout=1, max_per_peer=1000)), clock)
        factory.doStart()  # as its port does
        for _ in range(100):
            fake_connect(factory, "127.0.0.8")
        clock.advance(1)
        clock.advance(1)
        factory.doStop()  # the port stops: what is held back is written
        texts = [formatEvent(event) for event in events]
        self.assertEqual(
            texts, ["Closed 1 connections (idle timeout: 1)", "Closed 99 connections (idle timeout: 99)"]
        )
