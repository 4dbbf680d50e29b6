"""
The capture file as a service (L{echoapp._record.service}): what went on
the wire reaches the file within L{FLUSH_EVERY} by the reactor's clock,
even when nothing more happens, and its timer goes with the service.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoapp._record import SERVER, Recorder, RecordingFactory, record_of
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

    def test_a_failed_flush_is_logged_once_and_the_next_one_still_comes(self) -> None:
        """
        A flush that fails (a full disk) does not stop the timer: the next
        second's flush writes what waited, and the failure is one log line
        until writing works again.
        """
        capture = self.service.capture
        flush = capture.flush
        failures = [OSError(28, "No space left on device")] * 2

        def failing() -> None:
            if failures:
                raise failures.pop()
            flush()

        capture.flush = failing  # type: ignore[method-assign]
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.protocol.dataReceived(b"Hi\r\n")
        self.clock.advance(FLUSH_EVERY)
        self.clock.advance(FLUSH_EVERY)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1, "logged once while it fails")
        self.clock.advance(FLUSH_EVERY)
        self.assertEqual(payloads(self.path), [b"Hi\r\n", b"Hello, Hi\r\n"])
        self.assertTrue(any("works again" in str(event.get("log_format")) for event in events))
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.service.stopService()

    def test_a_failing_capture_never_fails_the_connection(self) -> None:
        """
        The journal is settled inside a read once enough waits, and a
        connection's end flushes the file inside C{connectionLost}: a
        capture that fails there (a full disk) raised into the connection,
        so every client's read failed.  Now the connection goes on, and
        the timer's flush reports the failure, once.
        """
        capture = self.service.capture
        full = OSError(28, "No space left on device")

        def failing(*args: Any) -> None:
            raise full

        self.patch(capture, "batch", failing)
        self.patch(capture, "ended", failing)
        self.protocol.dataReceived(b"x" * 70_000 + b"\r\n")  # past the journal's bound: settled now
        self.assertEqual(self.recorder.sink_error, full)
        self.clock.advance(FLUSH_EVERY)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1, "the timer says so")
        self.protocol.dataReceived(b"y" * 70_000 + b"\r\n")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(FLUSH_EVERY)
        self.assertEqual(self.flushLoggedErrors(OSError), [], "once, while it fails")
        self.service.stopService()

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


class Talk(Protocol):
    """A banner, then each chunk answered, a note on every third answer (a fault acting)."""

    def connectionMade(self) -> None:
        self.transport.write(b"Welcome!\r\n")
        self.count = 0

    def dataReceived(self, data: bytes) -> None:
        self.count += 1
        if self.count % 3 == 0:
            record = record_of(self.transport)
            assert record is not None
            record.fault("latency", "held for 1 ms", direction=SERVER)
        self.transport.write(b"Hello, " + data)


def captured(keep_bytes: bool) -> tuple[bytes, Recorder]:
    """Two connections talking under a fake clock, recorded to a capture in memory."""
    clock = Clock()
    clock.advance(1_700_000_000)
    stream = io.BytesIO()
    capture = CaptureFile("(memory)")
    capture.open(stream)
    recorder = Recorder(clock, sink=capture, keep_bytes=keep_bytes)
    factory = RecordingFactory(Factory.forProtocol(Talk), recorder, "greeter")
    protocols = []
    for port in (51234, 51235):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(
            StringTransport(
                hostAddress=IPv4Address("TCP", "127.0.0.1", 40011),
                peerAddress=IPv4Address("TCP", "127.0.0.1", port),
            )
        )
        protocols.append(protocol)
    for n in range(300):  # past every bound a record keeps
        protocols[n % 2].dataReceived(b"%061d\r\n" % n)
        clock.advance(0.001)
    for protocol in protocols:
        protocol.connectionLost(Failure(ConnectionDone()))
    recorder.settle()
    capture.flush()
    return stream.getvalue(), recorder


class KeepBytesTests(SynchronousTestCase):
    def test_a_store_only_the_file_reads_writes_the_same_capture(self) -> None:
        """
        A store whose records keep no bytes in memory (the daemons': only
        their capture file reads them) writes the capture byte for byte as
        one that keeps them does, the notes on the same packets, and keeps
        no bytes: each record costs its own bound and its events only.
        """
        kept, keeping = captured(keep_bytes=True)
        written, lean = captured(keep_bytes=False)
        self.assertEqual(written, kept)
        self.assertGreater(len(written), 300 * 64)
        records = list(lean.records)
        self.assertEqual(len(records), 2)
        for record in records:
            self.assertEqual([bytes(k.head) + bytes(k.tail) for k in record.bytes.values()], [b"", b""])
            self.assertEqual({event.kind for event in record.events()}, {"open", "fault", "close"})
        self.assertLess(lean.used, keeping.used // 4)
