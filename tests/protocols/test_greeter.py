from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp._framing import Framing
from echoapp._limits.connections import Connections
from echoapp._protocols.greeter import Greeter, GreeterFactory
from echoapp.config import GreeterConfig, TCPLimits
from echoapp.template import ReplyTemplate
from tests.support import (
    assert_backpressure,
    chunked,
    recv_until_closed,
    reference_lines,
    start,
    tutorial_client,
)


def connected(
    config: GreeterConfig | None = None, limits: TCPLimits | None = None, clock: Clock | None = None
) -> tuple[Greeter, StringTransport]:
    protocol = GreeterFactory(config, Connections(limits), clock or Clock()).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def conversation(chunks: list[bytes], config: GreeterConfig | None = None) -> tuple[bytes, bool]:
    protocol, transport = connected(config)
    transport.clear()
    for chunk in chunks:
        protocol.dataReceived(chunk)
    return transport.value(), transport.disconnecting


class BannerTests(SynchronousTestCase):
    def test_banner_line_on_connect(self) -> None:
        _, transport = connected()
        self.assertEqual(transport.value(), b"Welcome!\r\n")

    def test_custom_banner(self) -> None:
        _, transport = connected(GreeterConfig(banner=b"Hello, I am server!"))
        self.assertEqual(transport.value(), b"Hello, I am server!\r\n")

    def test_empty_banner_sends_nothing(self) -> None:
        _, transport = connected(GreeterConfig(banner=b""))
        self.assertEqual(transport.value(), b"")


class LineFramingTests(SynchronousTestCase):
    line = GreeterConfig(framing=Framing.LINE)

    def test_reply_mirrors_lf(self) -> None:
        self.assertEqual(conversation([b"Michael\n"], self.line), (b"Hello, Michael!\n", False))

    def test_reply_mirrors_crlf(self) -> None:
        self.assertEqual(conversation([b"Tracy\r\n"], self.line), (b"Hello, Tracy!\r\n", False))

    def test_pipelined_lines_answered_in_order(self) -> None:
        out, _ = conversation([b"a\nb\r\nc\n"], self.line)
        self.assertEqual(out, b"Hello, a!\nHello, b!\r\nHello, c!\n")

    def test_partial_line_waits(self) -> None:
        self.assertEqual(conversation([b"Sar"], self.line), (b"", False))
        self.assertEqual(conversation([b"Sar", b"ah\n"], self.line), (b"Hello, Sarah!\n", False))

    def test_one_write_per_chunk(self) -> None:
        protocol, transport = connected(self.line)
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        protocol.dataReceived(b"a\nb\nc\n")
        self.assertEqual(writes, [b"Hello, a!\nHello, b!\nHello, c!\n"])

    def test_invalid_utf8_is_just_bytes(self) -> None:
        out, closed = conversation([b"\xff\xfe\xc3(\n", b"ok\n"], self.line)
        self.assertEqual(out, b"Hello, \xff\xfe\xc3(!\nHello, ok!\n")
        self.assertFalse(closed)
        self.assertEqual(self.flushLoggedErrors(), [], "nothing is decoded, so nothing fails")

    def test_exit_word_closes_with_farewell(self) -> None:
        out, closed = conversation([b"a\nexit\r\nnever\n"], self.line)
        self.assertEqual(out, b"Hello, a!\nGoodbye!\r\n")
        self.assertTrue(closed)

    def test_nothing_after_exit(self) -> None:
        out, _ = conversation([b"exit\n", b"more\n"], self.line)
        self.assertEqual(out, b"Goodbye!\n")

    def test_custom_exit_word_and_no_farewell(self) -> None:
        config = GreeterConfig(framing=Framing.LINE, exit_word=b"quit", farewell=b"")
        self.assertEqual(conversation([b"exit\nquit\n"], config), (b"Hello, exit!\n", True))

    def test_empty_exit_word_never_exits(self) -> None:
        config = GreeterConfig(framing=Framing.LINE, exit_word=b"")
        self.assertEqual(conversation([b"\nexit\n"], config), (b"Hello, !\nHello, exit!\n", False))

    def test_exit_word_must_match_exactly(self) -> None:
        self.assertEqual(conversation([b"exit now\n", b" exit\n"], self.line)[1], False)

    def test_classic_variant(self) -> None:
        config = GreeterConfig(banner=b"Hello, I am server!", reply=ReplyTemplate.parse("Loop_Msg: {}!"))
        protocol, transport = connected(config)
        protocol.dataReceived(b"ping\n")
        self.assertEqual(transport.value(), b"Hello, I am server!\r\nLoop_Msg: ping!\n")

    def test_too_long_line_gets_error_and_close(self) -> None:
        config = GreeterConfig(framing=Framing.LINE, max_line_length=4)
        out, closed = conversation([b"abcd\n", b"abcde\n", b"x\n"], config)
        self.assertEqual(out, b"Hello, abcd!\nERROR: line too long (limit 4 bytes)\r\n")
        self.assertTrue(closed)

    def test_endless_line_closes_before_its_end(self) -> None:
        config = GreeterConfig(framing=Framing.LINE, max_line_length=1000)
        protocol, transport = connected(config)
        transport.clear()
        protocol.dataReceived(b"\n")
        for _ in range(100):
            protocol.dataReceived(b"x" * 100)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"Hello, !\nERROR: line too long (limit 1000 bytes)\r\n")
        self.assertLessEqual(protocol._lines._pending_length, 1100)


class HalfClosingTransport(StringTransport):
    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class LingeringCloseTests(SynchronousTestCase):
    """
    Closing on a client that is still sending would make the kernel reset
    the connection, which can destroy the error line before it is read.
    """

    error = b"ERROR: line too long (limit 4 bytes)\r\n"

    def setUp(self) -> None:
        self.clock = Clock()
        config = GreeterConfig(framing=Framing.LINE, max_line_length=4)
        self.protocol = GreeterFactory(
            config, Connections(TCPLimits(close_grace=3)), self.clock
        ).buildProtocol(None)
        self.transport = HalfClosingTransport()
        self.protocol.makeConnection(self.transport)
        self.transport.clear()
        self.protocol.dataReceived(b"abcdefgh")

    def test_error_then_only_the_write_side_closes(self) -> None:
        self.assertEqual(self.transport.value(), self.error)
        self.assertTrue(self.transport.write_closed)
        self.assertFalse(self.transport.disconnecting)

    def test_the_rest_is_read_and_dropped_until_the_client_closes(self) -> None:
        self.protocol.dataReceived(b"more\n" * 1000)
        self.assertEqual(self.transport.value(), self.error)
        self.protocol.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected, "aborted")

    def test_a_client_that_never_closes_is_aborted_after_the_grace(self) -> None:
        self.clock.advance(2.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected, "not aborted")

    def test_exit_word_closes_at_once(self) -> None:
        protocol = GreeterFactory(GreeterConfig(), clock=Clock()).buildProtocol(None)
        transport = HalfClosingTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"exit\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.write_closed)


class RawFramingTests(SynchronousTestCase):
    raw = GreeterConfig(framing=Framing.RAW)

    def test_each_chunk_is_a_message(self) -> None:
        out, _ = conversation([b"hello", b"world\r\n", b"a\nb\n"], self.raw)
        self.assertEqual(out, b"Hello, hello!Hello, world!\r\nHello, a\nb!\n")

    def test_exit_word(self) -> None:
        self.assertEqual(conversation([b"exit"], self.raw), (b"Goodbye!", True))

    def test_too_long_chunk(self) -> None:
        config = GreeterConfig(framing=Framing.RAW, max_line_length=3)
        self.assertEqual(
            conversation([b"abc\r\n", b"abcd"], config)[0],
            b"Hello, abc!\r\nERROR: line too long (limit 3 bytes)\r\n",
        )


class AutoFramingTests(SynchronousTestCase):
    def test_first_chunk_without_lf_chooses_raw(self) -> None:
        self.assertEqual(conversation([b"hello", b"a\nb\n"])[0], b"Hello, hello!Hello, a\nb!\n")

    def test_first_chunk_with_lf_chooses_lines(self) -> None:
        self.assertEqual(conversation([b"a\nb", b"c\n"])[0], b"Hello, a!\nHello, bc!\n")

    def test_decided_per_connection(self) -> None:
        self.assertEqual(conversation([b"x\n"])[0], b"Hello, x!\n")
        self.assertEqual(conversation([b"x"])[0], b"Hello, x!")


class BackpressureUnitTests(SynchronousTestCase):
    def test_registers_a_streaming_producer_that_pauses_reading(self) -> None:
        protocol, transport = connected()
        self.assertIsNone(transport.producer, "not before data: it would stall a TLS handshake")
        protocol.dataReceived(b"hi\n")
        self.assertTrue(transport.streaming)
        transport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_closing_unregisters_the_producer(self) -> None:
        protocol, transport = connected()
        protocol.dataReceived(b"exit\n")
        self.assertIsNone(transport.producer, "a registered producer would hold a TLS close open")
        self.assertTrue(transport.disconnecting)


def reference_replies(stream: bytes, config: GreeterConfig) -> bytes:
    """The line-mode conversation, computed without the protocol."""
    lines, too_long = reference_lines(stream, config.max_line_length)
    out = []
    for message, terminator in lines:
        if message == config.exit_word:
            return b"".join(out) + config.farewell + terminator
        out.append(config.reply.render(message, terminator))
    if too_long:
        out.append(config.too_long_error())
    return b"".join(out)


stream_parts = st.sampled_from(
    [b"a", b"Bob", b"\r", b"\n", b"\r\n", b"\xff", b"exit", b"exit\n", b"xxxxxxxxxx"]
)


class GreeterChunkingProperties(SynchronousTestCase):
    @settings(max_examples=300)
    @given(st.lists(stream_parts, max_size=40).map(b"".join), st.lists(st.integers(min_value=0), max_size=15))
    def test_any_chunking_gives_the_same_replies(self, stream: bytes, cuts: list[int]) -> None:
        config = GreeterConfig(framing=Framing.LINE, max_line_length=12)
        whole, _ = conversation([stream], config)
        pieces, _ = conversation(chunked(stream, cuts), config)
        self.assertEqual(pieces, whole)
        self.assertEqual(whole, reference_replies(stream, config))


class LoopbackTests(TestCase):
    """The greeter over real sockets, on port 0."""

    def serve(self, config: GreeterConfig | None = None) -> int:
        [port] = start(self, services.tcp_greeter(["tcp:0:interface=127.0.0.1"], config))
        return port.getHost().port

    def test_tutorial_client(self) -> Deferred[None]:
        port = self.serve()
        d = deferToThread(tutorial_client, port, [b"Michael", b"Tracy", b"Sarah", b"exit"])
        d.addCallback(
            self.assertEqual,
            [b"Welcome!\r\n", b"Hello, Michael!", b"Hello, Tracy!", b"Hello, Sarah!", b"Goodbye!"],
        )
        return d

    def test_classic_variant_tutorial_client(self) -> Deferred[None]:
        config = GreeterConfig(banner=b"Hello, I am server!", reply=ReplyTemplate.parse("Loop_Msg: {}!"))
        port = self.serve(config)
        d = deferToThread(tutorial_client, port, [b"ping"])
        d.addCallback(self.assertEqual, [b"Hello, I am server!\r\n", b"Loop_Msg: ping!"])
        return d

    def test_line_client_and_clean_close(self) -> Deferred[None]:
        import socket

        port = self.serve()

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"one\ntwo\r\n\xff\xfe\nexit\n")
                return recv_until_closed(sock)

        d = deferToThread(client)
        d.addCallback(
            self.assertEqual, b"Welcome!\r\nHello, one!\nHello, two!\r\nHello, \xff\xfe!\nGoodbye!\n"
        )
        return d

    def test_oversized_line_over_the_wire(self) -> Deferred[None]:
        import socket

        port = self.serve(GreeterConfig(max_line_length=1024))

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.recv(100)
                sock.sendall(b"ok\n")
                try:
                    sock.sendall(b"x" * (1 << 20))
                except OSError:
                    pass  # the server may close while we are still sending
                return recv_until_closed(sock)

        d = deferToThread(client)
        d.addCallback(self.assertEqual, b"Hello, ok!\nERROR: line too long (limit 1024 bytes)\r\n")
        return d

    async def test_slow_reader_gets_backpressure(self) -> None:
        count = 24 * 1024  # 24 MiB offered, ~24 MiB of replies owed
        line = b"y" * 1023 + b"\n"
        reply = b"Hello, " + b"y" * 1023 + b"!\n"
        await assert_backpressure(self, GreeterFactory(), line * count, b"Welcome!\r\n" + reply * count)

    def test_half_close_still_gets_every_reply(self) -> Deferred[None]:
        import socket

        port = self.serve()

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"a\n" * 1000)
                sock.shutdown(socket.SHUT_WR)
                return recv_until_closed(sock)

        d = deferToThread(client)
        d.addCallback(self.assertEqual, b"Welcome!\r\n" + b"Hello, a!\n" * 1000)
        return d
