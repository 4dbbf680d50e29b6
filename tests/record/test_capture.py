"""
The capture (L{echoapp._record.capture}) as tshark reads it, and C{--record}
on a real twistd: the streams tshark reassembles equal the bytes the
client sent and received, the UDP datagrams are there, and the notes are
packet comments.  Skipped, saying why, without tshark.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoapp._record import CLIENT, SERVER, Recorder, RecordingFactory, record_of
from echoapp._record.capture import SEGMENT, CaptureFile
from tests.support import (
    DEADLINE,
    LOOP,
    ULOOP,
    Twistd,
    recv_until_closed,
    run_twistd,
    tshark_follow,
    tshark_output,
    udp_accelerator,
    udp_exchange,
)


def comments(path: str) -> list[str]:
    """Every packet comment in the capture, in packet order."""
    out = tshark_output("-r", path, "-T", "fields", "-e", "frame.comment")
    return [line for line in out.splitlines() if line.strip()]


def temporary(test: SynchronousTestCase) -> str:
    directory = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


class Greeting(Protocol):
    """A banner, a reply held by a stand-in fault that says so through the hook, then a reset."""

    def connectionMade(self) -> None:
        self.transport.write(b"Welcome!\r\n")

    def dataReceived(self, data: bytes) -> None:
        record = record_of(self.transport)
        assert record is not None
        record.fault("latency", "held for 200 ms", direction=SERVER)
        self.transport.write(b"Hello, " + data)
        record.fault("reset", "reset after 10 bytes")
        self.transport.abortConnection()


class CaptureTests(SynchronousTestCase):
    def capture(self, transport: StringTransport, path: str, rotate: int = 0) -> tuple[Protocol, Clock]:
        clock = Clock()
        clock.advance(1_700_000_000)
        capture = CaptureFile(path, rotate, keep=2)
        capture.open()
        self.addCleanup(capture.close)
        factory = RecordingFactory(Factory.forProtocol(Greeting), Recorder(clock, sink=capture), "greeter")
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        return protocol, clock

    def test_ipv6_stream_reassembles_with_comments(self) -> None:
        """IPv6 headers too; each note is a comment on the packet it changed; an RST at the abort."""
        path = os.path.join(temporary(self), "six.pcapng")
        transport = StringTransport(
            hostAddress=IPv6Address("TCP", "::1", 40011), peerAddress=IPv6Address("TCP", "::1", 51234)
        )
        protocol, clock = self.capture(transport, path)
        clock.advance(0.25)
        protocol.dataReceived(b"Hello\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        protocol.factory.recording.recorder.sink.close()  # type: ignore[attr-defined]
        self.assertEqual(tshark_follow(path, 0), (b"Hello\n", b"Welcome!\r\nHello, Hello\n"))
        self.assertEqual(comments(path), ["latency: held for 200 ms", "reset after 10 bytes"])
        flags = tshark_output("-r", path, "-T", "fields", "-e", "ipv6.src", "-e", "tcp.flags.str")
        self.assertIn("::1", flags)
        self.assertIn("R", flags.splitlines()[-1])

    def test_a_datagram_too_large_for_the_drawn_packet_is_cut_with_a_note(self) -> None:
        """
        An IPv4 client of a UDP proxy to an IPv6 upstream: the upstream's
        largest answers (65,527 bytes) are drawn over IPv4, which holds
        65,507; each was a traceback out of the proxy's read.
        """
        path = os.path.join(temporary(self), "cut.pcapng")
        clock = Clock()
        capture = CaptureFile(path)
        capture.open()
        recorder = Recorder(clock, sink=capture)
        record = recorder.open("udp", "proxy", ("127.0.0.1", 40000), ("::1", 9000))
        record.data(SERVER, b"z" * 65_508)
        record.data(SERVER, b"fits")
        recorder.settle()
        capture.close()
        lengths = tshark_output("-r", path, "-T", "fields", "-e", "udp.length", "-e", "frame.comment")
        self.assertEqual(
            [line.split("\t") for line in lengths.splitlines()],
            [["65515", "65508 bytes, cut to the 65507 an IPv4 packet holds"], ["12", ""]],
        )

    def test_rotation_keeps_each_file_whole(self) -> None:
        """Past the size the file rotates; the new one shakes hands again, so it reassembles alone."""
        directory = temporary(self)
        path = os.path.join(directory, "rot.pcapng")
        protocol, _ = self.capture(StringTransport(), path, rotate=1)
        protocol.dataReceived(b"Hello\n")
        protocol.factory.recording.recorder.sink.close()  # type: ignore[attr-defined]
        files = sorted(n for n in os.listdir(directory) if n.startswith("rot"))
        self.assertEqual(files, ["rot.pcapng", "rot.pcapng.1", "rot.pcapng.2"])  # keep=2
        for name in files:
            flags = tshark_output("-r", os.path.join(directory, name), "-T", "fields", "-e", "tcp.flags.str")
            self.assertIn("S", flags.splitlines()[0], name)  # each file starts with a handshake


class Echo(Protocol):
    """Each chunk back as it came: packets with no note, the capture's common path."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class ChecksumTests(SynchronousTestCase):
    def test_checksums_are_right_and_streams_whole(self) -> None:
        """
        The data packets patched from a template carry right IP and TCP
        checksums (tshark told to check them finds none bad) for every
        payload size, odd and even, IPv4 and IPv6, and a chunk past a
        segment's size; the streams reassemble byte for byte.
        """
        for six in (False, True):
            path = os.path.join(temporary(self), "sums.pcapng")
            make = IPv6Address if six else IPv4Address
            host = "::1" if six else "127.0.0.1"
            transport = StringTransport(
                hostAddress=make("TCP", host, 40011), peerAddress=make("TCP", host, 51234)
            )
            clock = Clock()
            capture = CaptureFile(path)
            capture.open()
            recorder = Recorder(clock, sink=capture)
            protocol = RecordingFactory(Factory.forProtocol(Echo), recorder, "echo").buildProtocol(None)
            protocol.makeConnection(transport)
            sent = b""
            for size in [*range(1, 80), 1500, SEGMENT + 3]:
                chunk = bytes((size * 7 + i) % 256 for i in range(size))
                protocol.dataReceived(chunk)
                sent += chunk
                clock.advance(0.001)
            protocol.connectionLost(Failure(ConnectionDone()))
            capture.close()
            self.assertEqual(tshark_follow(path, 0), (sent, sent))
            checks = ["-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]
            fields = ["-e", "tcp.checksum.status"] + ([] if six else ["-e", "ip.checksum.status"])
            out = tshark_output("-r", path, *checks, "-T", "fields", *fields)
            statuses = {status for line in out.splitlines() for status in line.split("\t")}
            self.assertEqual(statuses, {"1"}, out)  # 1: good (0 is bad, 2 unverified)


class TwistdRecordTests(SynchronousTestCase):
    """C{--record} on real twistd processes, read back with tshark."""

    def setUp(self) -> None:
        tshark_output("--version")
        self.directory = temporary(self)

    def test_greeter_with_latency(self) -> None:
        path = os.path.join(self.directory, "greeter.pcapng")
        server = Twistd(["echoapp-tcp", "--listen", LOOP, "--fault", "latency=50ms", "--record", path])
        self.addCleanup(server.stop)
        port = server.address_port("echoapp-tcp")
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            banner = sock.recv(1024)
            sock.sendall(b"Hello\nexit\n")
            rest = recv_until_closed(sock)
        server.stop()
        self.assertEqual(tshark_follow(path, 0), (b"Hello\nexit\n", banner + rest))
        times = tshark_output("-r", path, "-T", "fields", "-e", "frame.time_relative", "-e", "tcp.len")
        data = [float(at) for at, size in (line.split("\t") for line in times.splitlines()) if size != "0"]
        self.assertGreaterEqual(data[-1] - data[1], 0.04, times)  # the reply went a latency after the request

    def test_refusal_is_a_comment(self) -> None:
        """A connection a limit refuses: its ERROR line carries which limit, as a packet comment."""
        path = os.path.join(self.directory, "refused.pcapng")
        server = Twistd(["echoapp-tcp", "--listen", LOOP, "--max-per-peer", "1", "--record", path])
        self.addCleanup(server.stop)
        port = server.address_port("echoapp-tcp")
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as first:
            first.recv(1024)
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as second:
                refused = recv_until_closed(second)
        server.stop()
        self.assertTrue(refused.startswith(b"ERROR"), refused)
        self.assertEqual(tshark_follow(path, 1)[1], refused)
        self.assertEqual(len(comments(path)), 1)
        self.assertTrue(comments(path)[0].startswith("refused: "), comments(path))

    def test_udp_greeter(self) -> None:
        path = os.path.join(self.directory, "udp.pcapng")
        server = Twistd(["echoapp-udp", "--listen", ULOOP, "--record", path])
        self.addCleanup(server.stop)
        port = server.address_port("echoapp-udp")
        replies = udp_exchange(port, [b"one", b"two"])
        server.stop()
        out = tshark_output("-r", path, "-T", "fields", "-e", "udp.srcport", "-e", "udp.payload")
        rows = [line.split("\t") for line in out.splitlines()]
        payloads = [bytes.fromhex(payload.replace(":", "")) for _, payload in rows]
        self.assertEqual(payloads, [b"one", replies[0], b"two", replies[1]])
        self.assertEqual([int(p) for p, _ in rows][1::2], [port, port])

    def test_every_plugin_offers_record(self) -> None:
        for plugin in ("echoapp-tcp", "echoapp-echo", "echoapp-udp", "echoapp"):
            done = run_twistd([plugin, "--help"])
            self.assertIn("--record=", done.stdout, plugin)
            self.assertIn("--record-max-size=", done.stdout, plugin)

    def test_file_that_cannot_be_written_is_one_line(self) -> None:
        path = os.path.join(self.directory, "missing", "x.pcapng")
        done = run_twistd(["-n", "echoapp-echo", "--listen", LOOP, "--record", path])
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(f"Cannot record to {path}: No such file or directory", done.stdout + done.stderr)
        self.assertNotIn("Traceback", done.stdout + done.stderr)


def packets(path: str) -> list[tuple[str, bytes, str]]:
    """Each packet's TCP flags, payload and comment (tshark's fields), in order."""
    fields = ("tcp.flags.str", "tcp.payload", "frame.comment")
    out = tshark_output("-r", path, "-T", "fields", *(arg for name in fields for arg in ("-e", name)))
    rows = []
    for line in out.splitlines():
        flags, payload, comment = [*line.split("\t"), "", ""][:3]
        rows.append((flags, bytes.fromhex(payload.replace(":", "")), comment))
    return rows


class TwistdFaultCommentTests(SynchronousTestCase):
    """A real twistd's faults, each a comment on the packet it changed, as tshark shows them."""

    def setUp(self) -> None:
        tshark_output("--version")
        self.directory = temporary(self)

    def test_latency_is_a_comment_on_the_held_reply(self) -> None:
        path = os.path.join(self.directory, "latency.pcapng")
        server = Twistd(["echoapp-tcp", "--listen", LOOP, "--fault", "latency=50ms", "--record", path])
        self.addCleanup(server.stop)
        port = server.address_port("echoapp-tcp")
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            banner = sock.recv(1024)
            sock.sendall(b"exit\n")
            recv_until_closed(sock)
        server.stop()
        commented = [(payload, comment) for _, payload, comment in packets(path) if comment]
        self.assertEqual(commented[0], (banner, f"latency: held {len(banner)} B for 50 ms"), commented)

    def test_reset_after_bytes_is_a_comment_on_the_rst(self) -> None:
        path = os.path.join(self.directory, "reset.pcapng")
        server = Twistd(["echoapp-tcp", "--listen", LOOP, "--fault", "reset-after-bytes=3", "--record", path])
        self.addCleanup(server.stop)
        port = server.address_port("echoapp-tcp")
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            try:
                received = recv_until_closed(sock)
            except ConnectionResetError:
                received = b""
        server.stop()
        rows = packets(path)
        self.assertEqual(len(tshark_follow(path, 0)[1]), 3, rows)  # exactly the 3 bytes, then the RST
        self.assertLessEqual(len(received), 3)
        resets = [(flags, comment) for flags, _, comment in rows if "R" in flags]
        self.assertEqual(resets, [(resets[0][0], "reset after 3 B")], rows)


class AcceleratedRunTests(SynchronousTestCase):
    def capture(
        self, directory: str, run: Any, keep_bytes: bool, rotate: int = 20_000, steps: int = 1500
    ) -> list[bytes]:
        """
        The files a capture writes of one random journal: five connections
        (IPv4 and IPv6) and a UDP source interleaved, sizes odd and even
        and one over a segment, notes on some packets (the next one a way,
        or the one just made), connections written to after they were
        lost, settled at odd places, rotated past C{rotate} bytes; made
        with C{run} as the batch's runs.
        """
        path = os.path.join(directory, "c.pcapng")
        clock = Clock()
        clock.advance(1_700_000_000)
        capture = CaptureFile(path, rotate, keep=50)
        capture._run = run
        capture.open()
        recorder = Recorder(clock, sink=capture, keep_bytes=keep_bytes)
        hosts = ["127.0.0.1", "::1", "127.0.0.2", "::1", "10.0.0.1"]
        records = [
            recorder.open("tcp", "l", (host, 50000 + n), (host, 40000)) for n, host in enumerate(hosts)
        ]
        records.append(recorder.open("udp", "u", ("127.0.0.1", 41000), ("127.0.0.1", 9000)))
        chance = random.Random(29)
        for step in range(steps):
            record = chance.choice(records)
            size = SEGMENT + 5 if step == 700 else chance.choice([0, 1, 2, 63, 64, 65, 1499, 1500])
            if chance.random() < 0.04:
                record.fault("latency", f"note {step}", direction=SERVER)
            if chance.random() < 0.02:  # on the packet just made, if it is still held back
                record.fault("loss", f"last {step}", direction=SERVER, last=True)
            if step == steps // 2:  # one connection written to after it was lost
                records[0].lost(True)
            record.data(chance.choice([CLIENT, SERVER]), chance.randbytes(size))
            clock.advance(chance.choice([0.0, 0.0000005, 0.001]))
            if chance.random() < 0.02:
                recorder.settle()
        recorder.settle()
        capture.close()
        names = sorted(os.listdir(directory))
        if rotate <= 20_000:
            self.assertGreater(len(names), 5, "rotated in the middle of runs")
        return [
            b"%s:%s" % (name.encode(), open(os.path.join(directory, name), "rb").read()) for name in names
        ]

    def test_the_accelerators_runs_are_pythons_byte_for_byte(self) -> None:
        """
        The C accelerator's C{pack_run} makes the batches' runs of data
        packets; the files are, byte for byte, those Python's loop makes
        (L{CaptureFile._entry}, the twin), with and without bytes kept in
        memory, and the runs made in C are most of the packets.
        """
        mmsg = udp_accelerator()
        if mmsg is None:
            self.skipTest("echoapp's C accelerator is not built here")
        for keep_bytes in (True, False):
            made: list[int] = []

            def counted(entries: Any, start: int, stop: int, *rest: Any, made: list[int] = made) -> Any:
                index, size = mmsg.pack_run(entries, start, stop, *rest)
                made.append(index - start)
                return index, size

            python = self.capture(temporary(self), None, keep_bytes)
            accelerated = self.capture(temporary(self), counted, keep_bytes)
            self.assertEqual(len(python), len(accelerated))
            for ours, theirs in zip(python, accelerated, strict=True):
                self.assertEqual(ours, theirs)
            self.assertGreater(sum(made), 500, "a good part of the packets made in C")
        # A file over its size at once (its handshakes alone): a block each, every file rotated.
        tiny = [self.capture(temporary(self), run, True, rotate=1, steps=40) for run in (None, mmsg.pack_run)]
        self.assertEqual(tiny[0], tiny[1])
        # A size past C's 64-bit numbers (--record-max-size takes any): no rotation, as in Python.
        huge = [self.capture(temporary(self), run, True, 1 << 64, steps=40) for run in (None, mmsg.pack_run)]
        self.assertEqual(huge[0], huge[1])

    def test_a_packet_held_back_stays_held_past_packets_never_made(self) -> None:
        """
        A reply held back for a note that may still come, then a batch of
        nothing but writes to a connection already lost (no packet made of
        them): the note still finds the reply, as Python's loop has it (the
        C run released the reply before finding it had nothing to make).
        """
        mmsg = udp_accelerator()
        if mmsg is None:
            self.skipTest("echoapp's C accelerator is not built here")
        files = []
        for run in (None, mmsg.pack_run):
            path = os.path.join(temporary(self), "held.pcapng")
            capture = CaptureFile(path)
            capture._run = run
            capture.open()
            recorder = Recorder(Clock(), sink=capture)
            answering = recorder.open("tcp", "l", ("127.0.0.1", 50000), ("127.0.0.1", 40000))
            gone = recorder.open("tcp", "l", ("127.0.0.1", 50001), ("127.0.0.1", 40000))
            gone.lost(True)
            answering.data(SERVER, b"reply")
            recorder.settle()  # the reply's packet, held back
            gone.data(SERVER, b"late")
            gone.data(SERVER, b"later")
            answering.fault("loss", "a retry dropped", direction=SERVER, last=True)
            capture.close()
            with open(path, "rb") as made:
                files.append(made.read())
        self.assertEqual(files[0], files[1])
        self.assertIn(b"a retry dropped", files[0])
