"""
The UDP greeter: each datagram gets one reply datagram to its sender.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from types import ModuleType
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IReactorTime, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echoapp._framing import split_terminator
from echoapp._limits.ratelimit import ThrottledLog, TokenBucket, TokenBuckets
from echoapp._metrics import UDPStats
from echoapp._peers import PeerKeys, not_a_host
from echoapp._transports.datagram_batches import BATCH, AcceleratedBatches, SocketBatches, batches
from echoapp._transports.native_udp import NativeDatagramPort
from echoapp._twisted import global_reactor
from echoapp.config import UDPLimits
from echoapp.template import DEFAULT_REPLY, ReplyTemplate

# The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP header bytes),
# and over IPv6, whose payload length does not count its own header.
MAX_DATAGRAM = 65507
MAX_IPV6_DATAGRAM = 65527


# Source ports below this belong to system services (echo 7, chargen 19,
# DNS 53, ...): answering them is how UDP packet storms and reflection start.
FIRST_UNPRIVILEGED_PORT = 1024

# A send that failed on these found the socket's buffer (or the device
# queue's) full: the reply is dropped, as UDP may, and counted as such; one
# more try at once, through the port's write, would only fail again.
SEND_BUFFER_FULL = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})

# Datagrams read per wake-up at most before the reactor runs other events
# (Twisted's own port reads up to 256 KiB): at full load one wake-up finds
# hundreds waiting; the per-wake-up work is paid once for all of them.
READ_BATCH = 256


class UDPGreeter(DatagramProtocol):
    """
    Replies are built the way the TCP greeter builds them in raw framing:
    trailing CR/LF stripped and mirrored.  A reply that would not fit in one
    datagram is dropped: a truncated greeting would be a lie.

    UDP sources can be forged, so before answering: no reply to port 0,
    privileged ports or our own listening ports (the echo/chargen loop,
    CVE-1999-0103), and no more than the per-source and global token
    buckets allow.  Every drop is counted; drops are logged throttled.

    On the ports it serves itself (Twisted's own UDP port, or the loop's
    native one), the greeter reads and answers each wake-up's datagrams in
    batches (L{read_ready}): one C{recvmmsg} per batch with the optional C
    accelerator, which also makes and sends each reply, one C{recvfrom}
    per datagram without it (L{echoapp._transports.datagram_batches}); the
    clock is read once per wake-up, the global bucket taken out once per
    wake-up and a source's once per run of its datagrams in it, and the
    counts are added once, which is what takes it under the blocking
    loop's cost.  Behind a wrapper (faults) it answers
    one L{datagramReceived} at a time.
    """

    noisy = False
    log = Logger(namespace="echoapp.udp")
    transport: IUDPTransport  # set by makeConnection, before any datagram arrives

    def __init__(
        self,
        reply: ReplyTemplate = DEFAULT_REPLY,
        limits: UDPLimits | None = None,
        own_ports: set[int] | None = None,
        clock: IReactorTime | None = None,
        stats: UDPStats | None = None,
    ) -> None:
        self.reply = reply
        self.limits = limits = limits or UDPLimits()
        self.own_ports = own_ports if own_ports is not None else set()
        self.clock: IReactorTime = clock if clock is not None else global_reactor()
        self.key = PeerKeys(limits.ipv6_prefix, limits.max_sources)
        self.stats = stats or UDPStats("echoapp-udp", "")
        self._drops = ThrottledLog("Dropped {count} datagrams ({reasons})")
        self._sendto: Any = None
        self._reply_to: Callable[[bytes, Any], object] | None = None
        self._batches: SocketBatches | AcceleratedBatches | None = None

    def startProtocol(self) -> None:
        """
        The port listens: the rate tables are made now, on the running
        reactor's clock (a bound method each: nothing looked up per datagram).
        """
        limits = self.limits
        now = self._seconds = self.clock.seconds
        self.sources = TokenBuckets(limits.rate, limits.burst, limits.max_sources, now)
        self.everyone = TokenBucket(limits.global_rate, limits.global_rate, now)
        self.own_ports.add(self.transport.getHost().port)
        # On Twisted's own UDP port, replies go straight to the socket's
        # sendto: Port.write first re-validates the address (isIPAddress,
        # about 6% of a reply's CPU) that recvfrom has just given us.  An
        # error falls back to Port.write, whose handling it then gets.
        transport: Any = self.transport
        self._sendto = self._batches = self._reply_to = None
        if isinstance(transport, udp.Port) or (
            isinstance(transport, NativeDatagramPort) and transport.read_directly
        ):
            self.read_from(transport.getHandle())
        if isinstance(transport, udp.Port) and transport.protocol is self:
            # Not behind a wrapper (faults), which must see each datagram.
            # The reactor calls the port's doRead for each wake-up; the port
            # stays what the reactor watches, starts and stops.
            transport.doRead = self.read_ready  # type: ignore[method-assign]

    def read_from(self, sock: Any, mmsg: ModuleType | None = None) -> None:
        """
        Read and answer C{sock} in batches (L{read_ready}) and send replies
        on it: with the C accelerator C{mmsg} (by default the built one,
        unless turned off) on a real UDP socket, else with the socket's own
        calls.
        """
        self._sendto = sock.sendto
        self._batches = batches(sock, mmsg)
        self._reply_to = self._batches.replier(self.reply.prefix, self.reply.suffix)

    def stopProtocol(self) -> None:
        """
        The port stopped: no more reads (its descriptor number may be
        reused), and the drops not yet logged are logged now.
        """
        self._batches = None
        self._drops.flush()

    def read_ready(self) -> None:
        """
        The socket has datagrams: read and answer up to L{READ_BATCH} of
        them in this one frame, in batches (L{datagram_batches}: one system
        call per batch with the C accelerator, one per datagram without),
        with the guards of L{datagramReceived}, in the same order and with
        the same outcome per datagram, as if each had been handled alone at
        the time of the wake-up.

        Reading goes on until the socket says "nothing more", as Twisted's
        own C{doRead} does, not just until a batch comes back short: while
        a batch is answered, clients answer the first replies, and reading
        their datagrams now costs one more receive call, where returning to
        the reactor would cost a whole reactor iteration (a poll, a wake-up
        and its logging context) for each few datagrams.

        The first read of a wake-up takes one datagram, answered at once:
        reading 8 before answering the first held every client back, and
        the server then slept and woke once per round (measured against
        the benchmark's ping-pong, 8 in flight: 4.5 against 5.2 µs a
        datagram, p50 34 against 65 µs; a first read of L{BATCH}, 4.9
        against 3.6).  Every later read takes all that are ready, up to
        L{BATCH}, in one call: what arrived while the first was answered
        is there already, and reading it in batches that started at one
        and doubled only while full (1, 2, 1, 2, ...) cost a receive call
        per two datagrams and the latency of each (3.6 against 4.2 µs a
        datagram on the default reactor, 2.9 against 3.0 on uvloop, p50
        19 against 50 and 19 µs).

        The buckets are taken out once for the whole wake-up, whose time
        is one: the global one at its start, a source's at the first of
        each run of its datagrams, across reads; both are put back, and
        the counts added, when it ends.
        """
        batches = self._batches
        if batches is None:
            return
        recv, size = batches.recv, self.transport.maxPacketSize  # type: ignore[attr-defined]
        now = self._seconds()
        own_ports, key, sources, everyone = self.own_ports, self.key, self.sources, self.everyone
        prefix, suffix, overhead = self.reply.prefix, self.reply.suffix, self.reply.overhead
        fits, fits_ipv6 = MAX_DATAGRAM - overhead, MAX_IPV6_DATAGRAM - overhead
        sendto, reply_to = self._sendto, self._reply_to
        spare = everyone.take_out(now)
        source: Any = None
        tokens = 0.0
        answered = bytes_in = 0
        failed: OSError | None = None
        left, want = READ_BATCH, 1
        try:
            while left > 0:
                try:
                    datagrams = recv(want if want < left else left, size)
                except OSError as error:
                    failed = error
                    break
                if not datagrams:
                    break
                for datagram, addr in datagrams:
                    try:
                        host, port = addr[0], addr[1]
                        if port < FIRST_UNPRIVILEGED_PORT or port in own_ports:
                            self._drop("port")
                            continue
                        if ":" in host:  # IPv6: rate-limited per prefix; the reply keeps the scope id
                            if not_a_host(host):  # each one: "::" shares its /64 with "::1"
                                self._drop("source")
                                continue
                            host = key(host)
                        if host != source:
                            if source is not None:
                                sources.put_back(source, tokens, now)
                                source = None
                            if not_a_host(host):  # forged (IPv4): no bucket is taken out for it
                                self._drop("source")
                                continue
                            tokens = sources.take_out(host, now)
                            source = host
                        if tokens < 1.0:
                            self._drop("rate")
                            continue
                        tokens -= 1.0
                        if spare < 1.0:
                            self._drop("rate")
                            continue
                        spare -= 1.0
                        length = len(datagram)
                        if length > fits and (length > fits_ipv6 or not _over_ipv6(addr[0])):
                            self._drop("size")
                            continue
                        if reply_to is not None:
                            try:
                                reply_to(datagram, addr)
                                answered += 1
                                bytes_in += length
                                continue
                            except OSError as error:
                                if error.errno in SEND_BUFFER_FULL:
                                    self._drop("buffer")
                                    continue
                                # Made again below, where the port's own handling applies.
                        message = datagram.rstrip(b"\r\n")
                        reply = prefix + message + suffix + datagram[len(message) :]
                        try:
                            sendto(reply, addr)
                        except OSError as error:
                            if error.errno == errno.EACCES:  # to a broadcast address: a forged source
                                self._drop("source")
                                continue
                            if error.errno in SEND_BUFFER_FULL or (
                                self.transport.write(reply, addr) is False  # type: ignore[func-returns-value]
                            ):
                                self._drop("buffer")
                                continue
                        answered += 1
                        bytes_in += length
                    except Exception:
                        self._failed(addr)
                got = len(datagrams)
                left -= got
                want = BATCH  # after the first: all that are ready, in one call
        finally:
            if source is not None:
                sources.put_back(source, tokens, now)
            everyone.put_back(spare, now)
            stats = self.stats
            stats.answered += answered
            stats.bytes_in += bytes_in
            stats.bytes_out += bytes_in + answered * overhead  # each reply is its datagram + overhead
        if failed is not None:  # after the buckets are back: Twisted's doRead answers through them
            self._read_failed(failed)

    def _read_failed(self, error: OSError) -> None:
        """
        A receive error other than "nothing more".  On Twisted's own port,
        its C{doRead} takes over for this wake-up, so the error gets its
        handling (an ICMP refusal ignored, anything unknown closing the
        port, as ever).  On the loop's port (L{NativeDatagramPort}), the
        same rule here: a refusal reports an earlier reply's fate and is
        ignored; anything else is logged once and the port stopped, rather
        than an exception raised into the loop's reader callback, which
        would call this again on every wake-up.
        """
        transport: Any = self.transport
        if not isinstance(transport, NativeDatagramPort):
            udp.Port.doRead(transport)
            return
        if isinstance(error, (ConnectionRefusedError, ConnectionResetError)):
            return
        self.log.error(
            "Reading datagrams on {port} failed, stopping it: {error}", port=transport, error=error
        )
        transport.stopListening()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            self._answer(datagram, addr)
        except Exception:
            self._failed(addr)

    def _failed(self, addr: Any) -> None:
        if not self.stats.dropped["error"]:
            self.log.failure(
                "Answering a datagram from {addr} failed; further failures are only counted", addr=addr
            )
        self._drop("error")

    def _answer(self, datagram: bytes, addr: Any) -> None:
        host, port = addr[0], addr[1]
        if port < FIRST_UNPRIVILEGED_PORT or port in self.own_ports:
            return self._drop("port")
        if not_a_host(host):
            return self._drop("source")
        if ":" in host:  # IPv6: rate-limited per prefix, IPv4-mapped as IPv4
            host = self.key(host)
        if not self.sources.allow(host) or not self.everyone.allow():
            return self._drop("rate")
        message, terminator = split_terminator(datagram)
        reply = self.reply.render(message, terminator)
        if len(reply) > MAX_DATAGRAM and (len(reply) > MAX_IPV6_DATAGRAM or not _over_ipv6(addr[0])):
            return self._drop("size")
        sendto = self._sendto
        if sendto is None:
            if self.transport.write(reply, addr) is False:  # type: ignore[func-returns-value]
                return self._drop("buffer")  # the loop's buffer is full (native_udp)
        else:
            try:
                sendto(reply, addr)
            except OSError as error:
                if error.errno == errno.EACCES:  # a subnet's broadcast address, which not_a_host cannot know
                    return self._drop("source")
                if error.errno in SEND_BUFFER_FULL or (
                    self.transport.write(reply, addr) is False  # type: ignore[func-returns-value]
                ):
                    return self._drop("buffer")
        stats = self.stats
        stats.answered += 1
        stats.bytes_in += len(datagram)
        stats.bytes_out += len(reply)

    def reply_dropped(self, reason: str = "buffer") -> None:
        """
        A reply counted as answered was dropped later: a delayed one, on a
        full buffer, or refused by the kernel (C{"source"}: to a broadcast
        address, as an undelayed one is counted).
        """
        self.stats.answered -= 1
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1
        self._drops.note(self.clock, reason)


def _over_ipv6(host: str) -> bool:
    """A reply to C{host} travels over IPv6 (an IPv4-mapped host is reached over IPv4)."""
    return ":" in host and not host.startswith("::ffff:")
