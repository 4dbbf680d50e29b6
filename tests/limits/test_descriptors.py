"""The process-wide descriptor ceiling."""

import os
import resource
import select
import signal
import socket
from collections.abc import Callable
from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import _process
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._process import ACCEPT_BATCH, OPENED_LATER
from echoapp._protocols.echo import EchoFactory
from tests.support import DEADLINE, Twistd, fake_connect


class DescriptorCeilingTests(SynchronousTestCase):
    def test_fd_ceiling_is_process_wide(self) -> None:
        self.patch(DESCRIPTORS, "limit", lambda: DESCRIPTORS.open)
        _, transport = fake_connect(EchoFactory(clock=Clock()))
        self.assertEqual(transport.value(), b"ERROR: server busy\r\n")

    def test_raise_fd_limit_reports_the_soft_limit(self) -> None:
        soft = DESCRIPTORS.raise_limit()
        self.assertEqual(soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.assertEqual(DESCRIPTORS.limit(), soft - DESCRIPTORS.reserve())

    def test_the_reserve_follows_what_the_process_holds(self) -> None:
        self.patch(DESCRIPTORS, "open", 0)  # other tests' fake connections hold no real descriptor
        before = DESCRIPTORS.reserve()
        self.assertGreaterEqual(before, 3 + OPENED_LATER + 2 * ACCEPT_BATCH, "stdin, stdout, stderr at least")
        with open(__file__):  # one more descriptor held, one more kept free
            self.assertEqual(DESCRIPTORS.reserve(), before + 1)
        DESCRIPTORS.hold()  # a connection's descriptor is counted in the ceiling, not the reserve
        self.addCleanup(DESCRIPTORS.release)
        self.assertEqual(DESCRIPTORS.reserve(), before - 1)


def flood(port: int, count: int, stopped: int | None = None) -> dict[str, int]:
    """
    Open C{count} connections and hold them; then what each got: told the
    server is busy, admitted (silence: echo says nothing), or closed or reset
    without a word.

    With C{stopped}, the server's process id, the server is stopped
    (C{SIGSTOP}) while the clients connect and continued once they all
    have: the kernel completes every handshake into the listen queue, so
    the server finds them all waiting at once, as a burst from many
    clients arrives, whatever the speed of this machine.
    """
    socks = []
    outcome = {"busy": 0, "admitted": 0, "unanswered": 0}
    if stopped is not None:
        os.kill(stopped, signal.SIGSTOP)
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(DEADLINE)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                outcome["unanswered"] += 1
                continue
            socks.append(sock)
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
            stopped = None
        pending = {sock.fileno(): sock for sock in socks}
        while pending:
            ready, _, _ = select.select(list(pending), [], [], 1.0)
            if not ready:
                break  # a second with no news: the rest were admitted
            for fd in ready:
                sock = pending.pop(fd)
                try:
                    data = sock.recv(100)
                except OSError:
                    data = b""
                outcome["busy" if data == b"ERROR: server busy\r\n" else "unanswered"] += 1
        outcome["admitted"] = len(pending)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        for sock in socks:
            sock.close()
    return outcome


def nofile(limit: int) -> Callable[[], None]:
    """A child's C{preexec}: its RLIMIT_NOFILE, soft and hard, is C{limit}."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return low_limit


class CeilingUnderFloodTests(TestCase):
    """
    At a low RLIMIT_NOFILE, a flood past the ceiling: every client is
    admitted or told why not, on both reactors, and accept() never reaches
    EMFILE (Twisted's recovery then closed clients unread and logged a line
    for each).
    """

    async def test_refused_clients_are_told_and_the_log_stays_small(self) -> None:
        peer = Twistd(
            ["echoapp-echo", "--listen", "tcp:0:interface=127.0.0.1", "--max-per-peer", "10000"],
            preexec=nofile(300),
        )
        self.addCleanup(peer.stop)
        outcome = await deferToThread(flood, peer.address_port("echoapp-echo"), 400)
        peer.stop()
        self.assertEqual(outcome["unanswered"], 0, outcome)
        self.assertEqual(outcome["admitted"] + outcome["busy"], 400, outcome)
        self.assertGreater(outcome["busy"], 0, outcome)
        self.assertLessEqual(peer.output.count("EMFILE"), 1, peer.output[-2000:])

    async def test_a_burst_at_a_low_limit_is_told_why(self) -> None:
        """
        400 clients waiting at once at RLIMIT_NOFILE 200: the port accepts
        them in batches, and a batch's refusals, told but not yet closed,
        once held the descriptors the next batch needed, so accept() met
        C{EMFILE}: 100 clients were closed unread, with a log line each.
        """
        peer = Twistd(
            ["echoapp-echo", "--listen", "tcp:0:interface=127.0.0.1", "--max-per-peer", "10000"],
            preexec=nofile(200),
        )
        self.addCleanup(peer.stop)
        port = peer.address_port("echoapp-echo")
        outcome = await deferToThread(flood, port, 400, peer.process.pid)
        peer.stop()
        self.assertEqual(outcome["unanswered"], 0, outcome)
        self.assertEqual(outcome["admitted"] + outcome["busy"], 400, outcome)
        self.assertGreater(outcome["admitted"], 0, outcome)
        self.assertNotIn("EMFILE", peer.output)
        # The first refusal, then the summary at the latest when it stops.
        self.assertLessEqual(peer.output.count("Refused "), 2, peer.output[-2000:])


class CountingTests(SynchronousTestCase):
    def test_listeners_started_together_share_one_count(self) -> None:
        """
        Each listener's start sets the ceiling again, but counting what the
        process holds lists /proc/self/fd, which grows with every proxy:
        a count per listener made a populate of thousands quadratic.  A
        count stands for the listeners started within L{_process.RECOUNT}
        of it, up to L{_process.UNCOUNTED}; those that hold their
        descriptor (an API proxy's) leave the ceiling where it was, however
        many come and go (taking one off for each shrank it for good: 205
        proxies at a limit of 600 instead of 356).
        """
        counts: list[int] = []
        held = [40]

        def counted() -> int:
            counts.append(held[0])
            return held[0]

        self.patch(_process, "held_descriptors", counted)
        descriptors = _process.Descriptors()
        now = [1000.0]
        self.patch(_process, "time", SimpleNamespace(monotonic=lambda: now[0]))
        descriptors.raise_limit()
        first = descriptors.ceiling

        def listener() -> None:  # a proxy's: its descriptor held, then its listener started
            descriptors.hold()
            held[0] += 1
            descriptors.raise_limit()
            self.assertEqual(descriptors.ceiling, first)

        for _ in range(_process.UNCOUNTED):
            listener()
        self.assertEqual(len(counts), 1, "counted once for the listeners started together")
        listener()
        self.assertEqual(len(counts), 2, "counted again past UNCOUNTED")
        for _ in range(3):
            descriptors.release()
            held[0] -= 1
        now[0] += _process.RECOUNT
        listener()
        self.assertEqual(counts[-1], held[0], "counted again after RECOUNT")
