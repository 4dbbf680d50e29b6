"""
The recording wrappers (L{echoapp._record.wrappers}): off is no wrapper at
all; on, what each side sends and how each closes, per connection and per
UDP source, and the hook a fault piece finds its record through.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoapp._record import CLIENT, SERVER, Recorder, RecordingDatagramProtocol, RecordingFactory, record_of
from echoapp._tap import tcp, udp
from echoapp._transports.listen import listeners
from tests.support import LOOP, ULOOP, RecordingUDPTransport


def tree(module: object, args: list[str]) -> object:
    options = module.Options()  # type: ignore[attr-defined]
    options.parseOptions(args)
    return module.service_tree(options, Clock())  # type: ignore[attr-defined]


class OffCostsNothingTests(SynchronousTestCase):
    def test_no_record_no_wrapper(self) -> None:
        for listener in listeners(tree(tcp, ["--listen", LOOP])) + listeners(tree(udp, ["--listen", ULOOP])):
            wrapped = getattr(listener, "factory", None) or listener.protocol
            self.assertNotIsInstance(wrapped, RecordingFactory | RecordingDatagramProtocol)

    def test_record_wraps_every_listener(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "r.pcapng")
        stream = listeners(tree(tcp, ["--listen", LOOP, "--listen", LOOP, "--record", path]))
        self.assertEqual([type(listener.factory) for listener in stream], [RecordingFactory] * 2)
        datagram = listeners(tree(udp, ["--listen", ULOOP, "--record", path]))
        self.assertIsInstance(datagram[0].protocol, RecordingDatagramProtocol)

    def test_bad_rotation_is_one_line(self) -> None:
        from twisted.python.usage import UsageError

        options = tcp.Options()
        error = self.assertRaises(
            UsageError, options.parseOptions, ["--record", "x", "--record-max-size", "lots"]
        )
        self.assertEqual(str(error), "--record-max-size: 'lots' is not a size such as 16MB")


class Quiet(Protocol):
    pass


class StreamTests(SynchronousTestCase):
    def connect(self) -> tuple[Protocol, StringTransport, Recorder]:
        recorder = Recorder(Clock())
        factory = RecordingFactory(Factory.forProtocol(Quiet), recorder, "echo")
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        protocol.makeConnection(transport)
        return protocol, transport, recorder

    def test_both_ways_and_a_client_reset(self) -> None:
        protocol, transport, recorder = self.connect()
        protocol.dataReceived(b"ping")
        inner = protocol.wrappedProtocol  # type: ignore[attr-defined]
        inner.transport.writeSequence([b"po", b"ng"])
        self.assertEqual(transport.value(), b"pong")
        self.assertIs(record_of(inner.transport), recorder.records[0])
        protocol.connectionLost(Failure(ConnectionLost()))
        record = recorder.records[0]
        self.assertEqual((record.bytes[CLIENT].total, record.bytes[SERVER].total), (4, 4))
        self.assertEqual(record.closed_sides, {("client", "RST")})
        self.assertTrue(record.ended)
        self.assertEqual(recorder.open_streams, 0)

    def test_server_close_is_a_server_fin(self) -> None:
        protocol, _, recorder = self.connect()
        protocol.wrappedProtocol.transport.loseConnection()  # type: ignore[attr-defined]
        self.assertEqual(recorder.records[0].closed_sides, {("server", "FIN")})

    def test_nothing_records_nothing_found(self) -> None:
        self.assertIsNone(record_of(StringTransport()))


class DatagramTests(SynchronousTestCase):
    def test_one_record_per_source_and_the_hook(self) -> None:
        recorder = Recorder(Clock())

        class Answer(DatagramProtocol):
            def datagramReceived(self, datagram: bytes, addr: object) -> None:
                self.transport.write(datagram.upper(), addr)  # type: ignore[union-attr]
                record = record_of(self.transport, addr)
                assert record is not None
                record.fault("loss", "datagram dropped", direction=SERVER, last=True)

        protocol = RecordingDatagramProtocol(Answer(), recorder, "udp")
        protocol.makeConnection(RecordingUDPTransport())
        protocol.datagramReceived(b"a", ("127.0.0.1", 1))
        protocol.datagramReceived(b"b", ("127.0.0.1", 2))
        protocol.datagramReceived(b"c", ("127.0.0.1", 1))
        self.assertEqual([r.client for r in recorder.records], [("127.0.0.1", 1), ("127.0.0.1", 2)])
        first = recorder.records[0]
        self.assertEqual((first.bytes[CLIENT].total, first.bytes[SERVER].total), (2, 2))
        self.assertTrue(first.faulted)
