"""
The capture file as a service (L{echoapp._record.service}): what went on
the wire reaches the file within L{FLUSH_EVERY} by the reactor's clock,
even when nothing more happens, and its timer goes with the service.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoapp._record import Recorder, RecordingFactory
from echoapp._record.capture import CaptureFile
from echoapp._record.service import RecordService
from echoapp._record.store import FLUSH_EVERY


class Quiet(Protocol):
    """Answers once, then nothing more happens on the connection."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"Hello, " + data)


def payloads(path: str) -> list[bytes]:
    """The TCP payloads in the capture as it is on disk now, in order (read with dpkt)."""
    import dpkt

    with open(path, "rb") as capture:
        found = []
        for _, packet in dpkt.pcapng.Reader(capture):
            segment = dpkt.ip.IP(packet).data
            if segment.data:
                found.append(bytes(segment.data))
        return found


class FlushTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "quiet.pcapng")
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.recorder = Recorder(self.clock)
        self.service = RecordService(self.recorder, CaptureFile(self.path))
        self.service.startService()
        factory = RecordingFactory(Factory.forProtocol(Quiet), self.recorder, "greeter")
        self.protocol = factory.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 40011),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 51234),
        )
        self.protocol.makeConnection(transport)

    def test_a_quiet_connection_reaches_the_file_within_a_flush(self) -> None:
        """
        A request and its answer, then silence: the connection stays open,
        no other event comes, and still both packets are in the file once
        L{FLUSH_EVERY} has passed (a user reading a live capture sees them).
        """
        self.protocol.dataReceived(b"Hi\r\n")
        self.clock.advance(FLUSH_EVERY)
        self.assertEqual(payloads(self.path), [b"Hi\r\n", b"Hello, Hi\r\n"])
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])  # the service's timers went with it

    def test_no_timer_outlives_the_service(self) -> None:
        """
        Stopped while the connection is open, the service waits for it; once
        it is gone, the file is whole and no timer of the service is left.
        """
        self.protocol.dataReceived(b"Hi\r\n")
        stopped = self.service.stopService()
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(payloads(self.path), [b"Hi\r\n", b"Hello, Hi\r\n"])
