"""
What a test holds of a running peer (L{Peer}, L{ProxyPeer}), and where a
peer runs: in the reactor of the test that runs one (trial's C{TestCase}),
else on echoapp's own reactor thread (L{echoapp.testing._thread}), so that
a synchronous test may block while it serves.

A peer's public methods are callable from the test's thread either way:
each runs in the peer's reactor thread and returns once it is done there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from unittest import TestCase

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from echoapp._faults import FaultPlan, Faults
from echoapp._record import Recorder
from echoapp._transports.listen import listeners
from echoapp._twisted import global_reactor
from echoapp.testing._thread import Thread, shared
from echoapp.testing._wire import REPORT_LIMIT, KeptRecord, Record

T = TypeVar("T")


def runs_the_reactor(test: TestCase | None) -> bool:
    """
    Does the test's own thread run the global reactor while the test waits?
    trial's C{TestCase} does (between the awaits of an async test); a test
    given no test case is taken to (an async trial test that stops its peer
    itself).  Any other C{unittest.TestCase} (trial's
    C{SynchronousTestCase}, the pytest fixtures') never does.  By name:
    echoapp imports no test framework of Twisted's.
    """
    if test is None:
        return True
    trial = [base for base in type(test).__mro__ if base.__module__.startswith("twisted.trial.")]
    return any(base.__name__ == "TestCase" for base in trial)


def place(test: TestCase | None, reactor: IReactorTime | None) -> tuple[IReactorTime, Thread | None]:
    """
    The reactor a new peer runs on, and the thread to reach it through
    (L{None}: the caller's own).  A reactor given is used as it is.
    """
    if reactor is not None:
        return reactor, None
    if runs_the_reactor(test):
        clock: IReactorTime = global_reactor()
        return clock, None
    thread = shared()
    return thread.reactor, thread


class Peer:
    """
    A running echoapp service a test talks to: where it listens, its faults
    (which may be changed while it runs), its seed, and how to stop it.
    Every method and property may be called from the test's thread.
    """

    _thread: Thread | None = None

    # What each kind of peer provides (L{ServicePeer}, the proxy's), run in
    # the peer's reactor thread; the public face below calls them there.
    _addresses: Callable[[], list[tuple[str, int]]]
    _faults: Callable[[], Faults]
    _set_faults: Callable[[Faults], None]
    _seed: Callable[[], int]
    _stop: Callable[[], Deferred[None]]
    _recorder: Callable[[], Recorder]

    def _call(self, function: Callable[..., T], *args: object) -> T:
        """C{function(*args)} in the peer's reactor thread, waited for."""
        return function(*args) if self._thread is None else self._thread.call(function, *args)

    @property
    def record(self) -> Record:
        """
        What its connections carried, always recorded (bounded): C{str()}
        of it is the timeline, C{.connections} the same as values, C{.save}
        a pcapng capture.  A failing test's report shows it.
        """
        return KeptRecord(self._recorder(), self._call)

    @property
    def name(self) -> str:
        """Its service's name (C{echoapp-tcp}, C{echoapp-udp}, C{echoapp-proxy}, ...), for reports."""
        raise NotImplementedError

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every C{(host, port)} it listens on."""
        return self._call(self._addresses)

    @property
    def host(self) -> str:
        """The host of its first address."""
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        """The port of its first address."""
        return self.addresses[0][1]

    @property
    def faults(self) -> Faults:
        """What goes wrong now (for a proxy: with what the server sends the client)."""
        return self._call(self._faults)

    @faults.setter
    def faults(self, faults: Faults) -> None:
        """
        New connections and every open one see the change.

        @raise ValueError: for a fault this peer cannot apply.
        """
        self._call(self._set_faults, faults)

    @property
    def seed(self) -> int:
        """The seed of every random choice: pass C{Faults(seed=...)} to repeat a run exactly."""
        return self._call(self._seed)

    def stop(self) -> Deferred[None]:
        """
        Stop listening, say goodbye to every client, close: what C{twistd}
        does on SIGTERM.  A peer on echoapp's reactor thread has stopped
        when this returns (the Deferred has fired); one in the test's
        reactor has when the Deferred fires.  Stopping twice is harmless.
        """
        if self._thread is None:
            return maybeDeferred(self._stop)
        self._thread.call(self._stop)
        return succeed(None)


class ProxyPeer(Peer):
    """
    A running echoapp-proxy: a L{Peer} whose faults are each way
    (L{faults} downstream, L{faults_upstream}), which can go L{down} and
    come back L{up} on the same port.
    """

    # What the proxy's peer provides besides a L{Peer}'s.
    _faults_upstream: Callable[[], Faults]
    _set_faults_upstream: Callable[[Faults], None]
    _down: Callable[[], Deferred[None]]
    _up: Callable[[], None]

    @property
    def faults_upstream(self) -> Faults:
        """What goes wrong with what the client sends the server."""
        return self._call(self._faults_upstream)

    @faults_upstream.setter
    def faults_upstream(self, faults: Faults) -> None:
        self._call(self._set_faults_upstream, faults)

    def down(self) -> Deferred[None]:
        """
        Stop listening and cut open connections: new clients are refused by
        the kernel.  As L{stop}: done on return on echoapp's reactor
        thread, when the Deferred fires in the test's reactor.
        """
        if self._thread is None:
            return self._down()
        self._thread.call(self._down)
        return succeed(None)

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._up)


P = TypeVar("P", bound=Peer)


def started(test: TestCase | None, thread: Thread | None, start: Callable[[], P]) -> P:
    """C{start()} in the peer's reactor thread; the peer it returns, stopped at the test's cleanup."""
    peer = start() if thread is None else thread.call(start)
    peer._thread = thread
    if test is not None:
        if is_trial(test):
            test.addCleanup(log_record, test, peer)  # after the stop: the drain's closes are in it
        test.addCleanup(peer.stop)
    return peer


def is_trial(test: TestCase) -> bool:
    """A trial test case (by name: echoapp imports no test framework of Twisted's)."""
    return any(base.__module__.startswith("twisted.trial.") for base in type(test).__mro__)


def log_record(test: TestCase, peer: Peer) -> None:
    """
    The peer's wire record in the test's log (trial's C{_trial_temp/test.log}),
    where trial, which has no report sections, lets a failing test's reader
    find it: cleanups cannot tell whether the test failed, so every trial
    test's record is logged, bounded to L{REPORT_LIMIT} characters.
    """
    text = peer.record.text(REPORT_LIMIT)
    if text:
        where = ", ".join(f"{host}:{port}" for host, port in peer.addresses) or "a UNIX socket"
        log.info(
            "wire record of {test}, {service} on {where}:\n{text}",
            test=test.id(), service=peer.name, where=where, text=text,
        )  # fmt: skip


log = Logger(namespace="echoapp.testing")


class ServicePeer(Peer):
    """A greeter, echo or UDP service of echoapp's (started), with the plan its faults come from."""

    def __init__(
        self, service: MultiService, plan: FaultPlan, where: tuple[str, ...], recorder: Recorder
    ) -> None:
        self._service = service
        self._plan = plan
        self._where = where
        self._recording = recorder
        self._known: list[tuple[str, int]] = []  # where it listened, for a test that stopped it
        self._addresses()

    @property
    def name(self) -> str:
        return str(self._service.name)

    @property
    def service(self) -> MultiService:
        """
        Its service tree, for echoapp's own tests that read its listeners'
        counters (tests/faults/test_wire.py); not part of L{Peer}: touch it
        only in the peer's reactor thread.
        """
        return self._service

    def _addresses(self) -> list[tuple[str, int]]:
        found = []
        for listener in listeners(self._service):
            host = listener.port.getHost() if listener.port is not None else None
            if isinstance(host, (IPv4Address, IPv6Address)):  # a UNIX socket has no host and port
                found.append((host.host, host.port))
        self._known = found or self._known
        return self._known

    def _faults(self) -> Faults:
        return self._plan.faults

    def _set_faults(self, faults: Faults) -> None:
        faults.check_applies(*self._where)
        self._plan.faults = faults
        # In the test's log, as the start was: the line a failing run is repeated from.
        log.info(
            "{service} faults now: {faults} (seed={seed})",
            service=self.name,
            faults=faults,
            seed=self._seed(),
        )

    def _seed(self) -> int:
        return self._plan.seed

    def _recorder(self) -> Recorder:
        return self._recording

    def _stop(self) -> Deferred[None]:
        if not self._service.running:
            return succeed(None)
        return maybeDeferred(self._service.stopService)
