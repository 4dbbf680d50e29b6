"""
Everything the tests share, in one place: no test module imports another.

Sections: bounds and addresses; service trees started in-process on port 0;
fake connections for the unit tests; framing references; blocking socket
clients; the backpressure check; TLS certificates; real twistd subprocesses.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import AccumulatingProtocol, FakeDatagramTransport, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoapp._transports.listen import listeners
from echoapp._twisted import asyncio_loop, queued
from echoapp.testing import Process

# --- Bounds and addresses ---------------------------------------------------

DEADLINE = 20.0  # seconds; a bound so that nothing hangs, never an assertion

# Listen on loopback only, on a port the kernel picks: tests never collide.
LOOP = "tcp:0:interface=127.0.0.1"
ULOOP = "udp:0:interface=127.0.0.1"

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def in_checkout(*parts: str) -> str:
    """A path in the source tree (README, tac files, deploy files), wherever the tests run from."""
    return os.path.join(CHECKOUT, *parts)


def json_file(test: SynchronousTestCase, data: Any) -> str:
    """C{data} in a JSON file (a proxy config), removed at the test's cleanup."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(data, file)
    test.addCleanup(os.unlink, file.name)
    return file.name


def udp_port_closed(port: int, host: str = "127.0.0.1") -> bool:
    """
    Nothing holds UDP C{host:port} (the test can bind it, and lets it go at
    once).  What a closed UDP port means, told without ICMP: Linux caps the
    port-unreachable messages it sends per second for the whole machine, so
    a refusal seen by a client is not reliable while other tests send.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """
    A loopback port that nothing listens on now.  Only for what cannot be
    told port 0 (a port shared by two processes, a proxy's config, a port
    to be refused): another process could take it in between.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Service trees in-process -----------------------------------------------


def start(test: SynchronousTestCase, service: MultiService) -> list[Any]:
    """
    Start a service tree in-process, stop it when the test ends, and return
    the ports its listeners bound (in tree order).
    """
    service.privilegedStartService()
    service.startService()
    test.addCleanup(service.stopService)
    return [listener.port for listener in listeners(service)]


def description(listener: Any) -> str:
    """The listen description a listener was made from: an endpoint string or a C{udp:} one."""
    return getattr(listener, "description", None) or str(listener.listen)


def described(service: Any) -> list[tuple[str, str]]:
    """(service name, listen description) for every listener in a tree."""
    return [(listener.parent.name, description(listener)) for listener in listeners(service)]


def require_asyncio_loop(test: SynchronousTestCase) -> None:
    """Skip unless the reactor runs on an asyncio loop, where the native transports are used."""
    from twisted.internet import reactor

    if asyncio_loop(reactor) is None:
        test.skipTest("the reactor has no asyncio loop (run trial --reactor=uvloop)")


# --- Fake connections for the unit tests --------------------------------------


def address(host: str = "127.0.0.1") -> IPv4Address:
    return IPv4Address("TCP", host, 50000)


def fake_connect(factory: Factory, host: str = "127.0.0.1") -> tuple[Any, StringTransport]:
    """A connection from C{host}, as the reactor would make it, over a StringTransport."""
    protocol = factory.buildProtocol(address(host))
    transport = StringTransport(peerAddress=address(host))
    protocol.makeConnection(transport)
    return protocol, transport


def lose(protocol: Protocol) -> None:
    """The client closed cleanly."""
    protocol.connectionLost(Failure(ConnectionDone()))


@implementer(IPushProducer)
class RecordingProducer:
    """A push producer that notes what it is asked to do."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class RecordingUDPTransport(FakeDatagramTransport):
    """
    Twisted's fake datagram port (what is sent is in C{written}), which
    also says which port it is: the UDP greeter never answers its own ports.
    """

    def __init__(self, port: int = 9999) -> None:
        super().__init__()
        self.port = port

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", self.port)


# --- Framing references -------------------------------------------------------


def reference_lines(stream: bytes, max_length: int) -> tuple[list[tuple[bytes, bytes]], bool]:
    """What line framing means, written the obvious way: (lines, whether one was too long)."""
    *complete, tail = stream.split(b"\n")
    lines = []
    for raw in complete:
        message, terminator = (raw[:-1], b"\r\n") if raw.endswith(b"\r") else (raw, b"\n")
        if len(message) > max_length:
            return lines, True
        lines.append((message, terminator))
    tail_content = tail[:-1] if tail.endswith(b"\r") else tail
    return lines, len(tail_content) > max_length


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    """C{stream} cut at the given points (taken modulo its length), as TCP may deliver it."""
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in pairwise(points)]


# --- Blocking socket clients (run them in a thread from a trial TestCase) -----


def tutorial_client(port: int, messages: Sequence[bytes], host: str = "127.0.0.1") -> list[bytes]:
    """
    The socket-tutorial client: read the banner, then for each message
    send() it (no newline added) and recv(1024) the answer.
    """
    received = []
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        received.append(sock.recv(1024))
        for message in messages:
            sock.send(message)
            received.append(sock.recv(1024))
    return received


def recv_until_closed(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    chunks = []
    total = 0
    while total < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def udp_exchange(port: int, datagrams: Sequence[bytes], host: str = "127.0.0.1") -> list[bytes]:
    """Send each datagram from one new socket and read its reply, read whole."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        replies = []
        for datagram in datagrams:
            sock.sendto(datagram, (host, port))
            replies.append(sock.recvfrom(70000)[0])
        return replies


def forge_udp(test: SynchronousTestCase, source: str, port: int, payload: bytes) -> None:
    """
    A UDP datagram to 127.0.0.1:C{port} "from" C{source} (IPv4, any
    address, port 40000), written whole through a raw socket: how a forged
    source reaches a service.  Skips C{test} where raw sockets are not
    allowed (not root).
    """
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        test.skipTest("raw sockets (to forge a source address) need root")
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload  # checksum 0: none
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(source), socket.inet_aton("127.0.0.1"),
    )  # fmt: skip
    with raw:
        raw.sendto(header + udp, ("127.0.0.1", 0))  # the kernel fills in the IP checksum


def udp_replies(
    port: int, datagram: bytes, expected: int | None = None, wait: float = 0.5, host: str = "127.0.0.1"
) -> list[bytes]:
    """
    Send one datagram from a new socket and collect its replies: until
    C{expected} came (the first waited for up to L{DEADLINE}, each next for
    a second: duplicates are right behind), or, without C{expected}, all
    that come within C{wait} of each other (none, for a lost one).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    got: list[bytes] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE if expected else wait)
        sock.sendto(datagram, (host, port))
        while expected is None or len(got) < expected:
            try:
                got.append(sock.recvfrom(70000)[0])
            except TimeoutError:
                break
            sock.settimeout(wait if expected is None else 1.0)
    return got


# --- Backpressure: a real loopback client that sends far more than it reads ---


def buffered(transport: Any) -> int:
    """Bytes a Twisted TCP transport holds in user space, waiting to be sent."""
    return queued(transport)


class Recording(Factory):
    """Wraps a server factory to keep the protocols it builds."""

    def __init__(self, wrapped: Factory) -> None:
        self.wrapped = wrapped
        self.protocols: list[Protocol] = []

    def buildProtocol(self, addr: Any) -> Protocol | None:
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is not None:
            self.protocols.append(protocol)
        return protocol


class FloodClient(AccumulatingProtocol):
    """Twisted's accumulating protocol that writes everything at once and does not read until told to."""

    def __init__(self, payload: bytes, expected: int) -> None:
        self.payload = payload
        self.expected = expected
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if len(self.data) >= self.expected and not self.done.called:
            self.done.callback(None)


def watched(transport: Any, writing: bool = False) -> bool:
    """
    Whether C{transport} is watched for reading (or writing) by the reactor
    it registers with: its own C{reactor}, which for echoapp's transports on
    Twisted's reactors is the shared poll's (L{echoapp._transports.polled}),
    where the global reactor's C{getReaders} never lists them.
    """
    from echoapp._twisted import global_reactor

    reactor = getattr(transport, "reactor", None) or global_reactor()
    return transport in (reactor.getWriters() if writing else reactor.getReaders())


async def wait_until(condition: Any, what: str) -> None:
    """Poll a condition, with a deadline so the test stops by itself."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(int(DEADLINE / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError(f"gave up waiting: {what}")


async def connect_tcp(port: int, client: Protocol) -> Any:
    """Connect C{client} to C{port} on 127.0.0.1 over the running reactor."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)


async def assert_backpressure(test: Any, factory: Factory, payload: bytes, expected: bytes) -> None:
    """
    A client sends C{payload} and does not read: the server must stop
    reading while it holds about one write buffer, not the flood; once the
    client reads, it gets exactly C{expected}.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    recording = Recording(factory)
    port = await serverFromString(reactor, LOOP).listen(recording)
    test.addCleanup(port.stopListening)
    client = FloodClient(payload, len(expected))
    await connect_tcp(port.getHost().port, client)
    await wait_until(lambda: recording.protocols, "the connection")
    server = recording.protocols[0].transport
    await wait_until(lambda: not watched(server), "the server to stop reading")
    test.assertLess(buffered(server), 4 << 20)
    client.transport.resumeProducing()  # type: ignore[union-attr]
    await client.done
    test.assertTrue(client.data == expected, "every reply, in order")
    client.transport.loseConnection()  # type: ignore[union-attr]


# --- TLS: a throw-away certificate authority and server certificate ------------


def make_certificates(directory: str) -> dict[str, str]:
    """
    Write ca.pem, server.pem (certificate) and server.key; return their
    paths.  C{cryptography} is imported here, not above, so that a run
    without the TLS extra only skips the TLS tests.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("echoapp test CA"))
        .issuer_name(name("echoapp test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: os.path.join(directory, name) for name in ("ca.pem", "server.pem", "server.key")}
    os.makedirs(directory, exist_ok=True)
    with open(paths["ca.pem"], "wb") as out:
        out.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.pem"], "wb") as out:
        out.write(server.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.key"], "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths


# --- Real twistd subprocesses, on the installed package ------------------------


def installed_env() -> dict[str, str]:
    """
    This process's environment without PYTHONPATH: a subprocess started
    with it (from outside the checkout) runs the installed package and
    plugins, so a packaging mistake fails the test.
    """
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def twistd_path(name: str = "twistd") -> str:
    """The runner installed beside this Python (the venv CI made), not the source tree."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.exists(beside) else (shutil.which(name) or name)


def same_reactor(args: Sequence[str]) -> list[str]:
    """
    C{--reactor=uvloop} when this test run is on uvloop (and C{args} names
    no reactor), so the subprocess tests, the attacks among them, prove the
    native transports too.
    """
    from twisted.internet import reactor

    loop = asyncio_loop(reactor)
    if loop is None or type(loop).__module__.split(".")[0] != "uvloop":
        return []
    if any(arg.startswith("--reactor") for arg in args):
        return []
    return ["--reactor=uvloop"]


class Twistd(Process):
    """
    echoapp's own subprocess tests run L{Process} from an empty directory
    without PYTHONPATH, so it uses the installed package and plugins (a
    packaging mistake fails here), on this test run's reactor; it is
    started at once, and keeps its whole log.
    """

    def __init__(
        self, args: Sequence[str], runner: str = "twistd", expect: int = 1, preexec: Any = None
    ) -> None:
        self.directory = tempfile.mkdtemp(prefix="echoapp-test-")
        super().__init__(
            None,
            *same_reactor(args),
            *args,
            runner=runner,
            expect=expect,
            timeout=DEADLINE,
            cwd=self.directory,
            env=installed_env(),
            preexec_fn=preexec,
            keep_lines=1_000_000,
        )
        try:
            self.start()
        except RuntimeError:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise AssertionError(f"twistd did not get ready:\n{self.output}") from None

    def stop(self) -> int | None:
        code = super().stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        return code


def twistd_on_a_free_port(args: Sequence[str]) -> tuple[Twistd, int]:
    """
    L{Twistd} with C{{port}} in C{args} replaced by a free loopback port,
    and that port: for a port the test must know before twistd starts (an
    API beside a C{--listen} logged alike).  Another test may take it
    between L{free_port} and twistd's bind: twistd then exits saying so,
    and is started again on another.  The caller stops it.
    """
    for _attempt in range(5):
        port = free_port()
        try:
            return Twistd([arg.replace("{port}", str(port)) for arg in args]), port
        except AssertionError as error:
            if "Address already in use" not in str(error):
                raise
    raise AssertionError(f"twistd found no free port in 5 tries: {args}")


def run_twistd(args: Iterable[str]) -> subprocess.CompletedProcess[str]:
    """Run twistd to completion (for option errors and --help)."""
    with tempfile.TemporaryDirectory() as directory:
        return subprocess.run(
            [twistd_path(), "-n", "--pidfile=", *args],
            cwd=directory,
            env=installed_env(),
            capture_output=True,
            text=True,
            timeout=DEADLINE * 3,
            stdin=subprocess.DEVNULL,
        )


# --- UNIX socket paths ------------------------------------------------------


def unix_socket_path(test: SynchronousTestCase, name: str = "test.sock") -> str:
    """
    A path for a test's UNIX socket, in a fresh short directory removed at
    the test's cleanup.  An C{AF_UNIX} path holds at most 107 bytes: one
    under C{_trial_temp} (or anywhere in the work tree) is past that from a
    checkout at an ordinary path such as an unpacked sdist's, and the test
    fails there only (CI runs the suite from a path over 120 characters).
    """
    directory = tempfile.mkdtemp(prefix="echoapp-")
    test.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, name)


class FaultAnswer(Protocol):
    """A service for the fault tests: replies to each chunk with C{<chunk>}, closes on C{bye}."""

    def dataReceived(self, data: bytes) -> None:
        if data == b"bye":
            self.transport.write(b"farewell")  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.transport.write(b"<" + data + b">")  # type: ignore[union-attr]


class HalfClosingTransport(StringTransport):
    """StringTransport with the half-close a TCP transport has."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def faulty_connection(
    faults: Any, clock: Any = None, plan: Any = None
) -> tuple[Any, HalfClosingTransport, Any]:
    """A L{FaultAnswer} behind the faults (or C{plan}), connected to a L{HalfClosingTransport}, on a clock."""
    from twisted.internet.task import Clock

    from echoapp._faults import FaultPlan, FaultyFactory

    clock = clock or Clock()
    factory = FaultyFactory(Factory.forProtocol(FaultAnswer), plan or FaultPlan(faults, clock))
    protocol = factory.buildProtocol(None)
    transport = HalfClosingTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


# --- The UDP accelerator (recvmmsg), and its Python twin ---------------------------

_built_accelerator: list[Any] = []


def udp_accelerator() -> Any:
    """
    echoapp's optional C accelerator for UDP: the one built beside the
    package, else one built from this checkout into a temporary directory,
    once per run, where there is a C compiler (a copy of the checkout, as
    CI's, has none built); C{None} where it cannot be built.
    """
    import importlib.util
    import sysconfig

    if _built_accelerator:
        return _built_accelerator[0]
    try:
        from echoapp import _mmsg as built
    except ImportError:
        built = None
    if built is None and os.path.exists(in_checkout("setup.py")):
        out = tempfile.mkdtemp(prefix="echoapp-mmsg-")
        env = {name: value for name, value in os.environ.items() if name != "ECHOAPP_NO_ACCELERATOR"}
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", out, "--build-temp", f"{out}/tmp"],
            cwd=CHECKOUT, env=env, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        path = os.path.join(out, "echoapp", "_mmsg" + sysconfig.get_config_var("EXT_SUFFIX"))
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("echoapp._mmsg", path)
            assert spec is not None and spec.loader is not None
            built = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(built)
        shutil.rmtree(out, ignore_errors=True)  # a loaded module needs no file
    _built_accelerator.append(built)
    return built


def use_udp_accelerator(test: SynchronousTestCase, on: bool) -> Any:
    """
    Make the UDP ports that start during C{test} read and send with the C
    accelerator (C{on}; the test skips where it cannot be built) or with its
    Python twin; returns the accelerator, or C{None}.
    """
    from echoapp._transports import datagram_batches

    mmsg = udp_accelerator() if on else None
    if on and mmsg is None:
        test.skipTest("echoapp's C accelerator cannot be built here (no C compiler or Python headers)")
    test.patch(datagram_batches, "accelerator", lambda: mmsg)
    return mmsg


def tshark_follow(path: str, stream: int = 0) -> tuple[bytes, bytes]:
    """
    What tshark's "Follow TCP stream" reassembles from the capture at
    C{path}: (client to server, server to client).  The test skips, saying
    why, where tshark is not installed (CI installs Debian's).
    """
    out = tshark_output("-r", path, "-q", "-z", f"follow,tcp,raw,{stream}")
    body = out.split("Node 1:", 1)[1].split("\n", 1)[1].split("=" * 20, 1)[0]
    sent, received = b"", b""
    for line in body.splitlines():
        if line.startswith("\t"):
            received += bytes.fromhex(line.strip())
        elif line.strip():
            sent += bytes.fromhex(line.strip())
    return sent, received


def tshark_output(*args: str) -> str:
    """tshark's output for C{args}; L{SkipTest} where it is not installed."""
    from twisted.trial.unittest import SkipTest

    found = shutil.which("tshark")
    if found is None:
        raise SkipTest("tshark is not installed (Debian: apt-get install tshark)")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=DEADLINE, check=True).stdout


def request(host: str, port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send C{data}, half-close, read until the server closes: what a one-shot client gets."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_closed(sock)


def serve_on_a_free_port(
    test: SynchronousTestCase, command: Sequence[str], ours: Any, what: str, **popen: Any
) -> int:
    """
    C{command} with a free loopback port appended (a twistd C{--listen}
    description after C{--listen}, else the number), its port returned once
    C{ours(port)} says the server answering is this one; stopped at
    cleanup.  Another test may take the port between L{free_port} and the
    server's bind: the server then exits and whatever took the port answers
    (once an echo server answered for a twistd web, and a test saw its own
    request), so it is started again on another.
    """
    import time

    for _attempt in range(5):
        port = free_port()
        where = f"tcp:{port}:interface=127.0.0.1" if command[-1] == "--listen" else str(port)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        process = subprocess.Popen([*command, where], **quiet, **popen)
        test.addCleanup(process.wait, DEADLINE)
        test.addCleanup(process.terminate)
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and process.poll() is None:
            try:
                if ours(port) and listens(process.pid, port):
                    return port
            except OSError:
                pass
            time.sleep(0.05)
    test.fail(f"{what} did not answer on a free port")


def listens(pid: int, port: int) -> bool:
    """
    Does process C{pid} hold the socket listening on TCP C{port}?  A server
    of the same kind that took the port first answers as ours would (the
    same page, the same PONG) while ours fails to bind: Linux's C{/proc}
    names the socket's owner.
    """
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as rows:
                for row in list(rows)[1:]:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                        sockets.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    for descriptor in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{descriptor}") in sockets:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


def real_toxiproxy(test: SynchronousTestCase, server: str) -> int:
    """
    The real toxiproxy-server at C{server}, its API on a free loopback
    port (returned), stopped at cleanup: ours once C{/version} answers
    without echoapp-proxy's own header.
    """

    def ours(port: int) -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /version HTTP/1.0\r\n\r\n")
            answer = recv_until_closed(sock, 1 << 16)
        toxiproxys = b"x-echoapp" not in answer.lower()
        return answer.startswith(b"HTTP/1.") and b" 200 " in answer[:16] and toxiproxys

    return serve_on_a_free_port(test, [server, "-host", "127.0.0.1", "-port"], ours, "toxiproxy-server")
