"""
echoapp's pytest plugin (the C{pytest11} entry point): fixtures that start
echoapp peers for a test and stop them after it.

- C{echoapp_peer}: in-process: C{peer = echoapp_peer("greeter", faults=...)}.
- C{echoapp_proxy}: in-process too, echoapp-proxy in front of any server:
  C{peer = echoapp_proxy(upstream="tcp:127.0.0.1:6379", faults=...)}.
- C{echoapp_process}: a real C{twistd}, for clients that are not Twisted
  (plain sockets, asyncio, other languages): C{server =
  echoapp_process("echoapp-tcp", "--fault", "latency=100ms")}.

Installing echoapp loads this plugin into every pytest run in that
environment, so loading it costs nothing: it imports pytest and no more.
The fixtures import L{echoapp.testing} (the services, the reactor's
machinery, OpenSSL where there is TLS) when a test asks for one.  Nothing
here imports the reactor: pytest-twisted installs it, where it is loaded.

The in-process peers run on echoapp's own reactor, in a thread
(L{echoapp.testing._thread}), whatever drives the test: a plain C{def}
test that blocks on a client (redis-py, C{requests}, a socket) would stop
a reactor run in its own thread, as pytest-twisted runs it, and without
pytest-twisted none runs at all.  So the same fixtures serve synchronous
tests, with or without pytest-twisted, and async ones under it; a peer's
methods block until done in the peer's thread (C{peer.faults = ...},
C{peer.down()}), and what returns a Deferred returns it fired, for an
async test to C{await}.

Mixed suites work: where pytest-twisted is loaded, trial's TestCases run
before any other test (L{pytest_collection_modifyitems}).

A failing test's report shows each peer's seed and faults (an C{echoapp peers}
section, and C{echoapp_seed} in C{user_properties}, which JUnit XML keeps):
C{Faults(seed=...)} or C{--fault seed=...} repeats the run.  Beside it, an
C{echoapp wire} section shows what went over the wire: each peer's record
(L{echoapp.testing.Record}), bounded, most relevant first.  A real twistd's
(C{echoapp_process}) is its C{--record} capture read back: the fixture
passes C{--record} to the plugins that take it, and stops a failing test's
process when the report is made, so that its capture is whole.
C{--echoapp-record=DIR} keeps every test's captures there, named for the
test's id.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unittest
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from echoapp import testing

KINDS = ("greeter", "echo", "udp")
# The plugins that take --record (echoapp-proxy and echoapp-compose do not).
RECORDING_PLUGINS = ("echoapp", "echoapp-tcp", "echoapp-echo", "echoapp-udp")
# Characters of timeline the report shows per peer (the capture has everything).
WIRE_LIMIT = 8000

PEERS = pytest.StashKey[list[Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """C{--echoapp-record=DIR}: keep each test's wire captures."""
    parser.getgroup("echoapp").addoption(
        "--echoapp-record",
        metavar="DIR",
        default=None,
        help="keep each test's echoapp wire captures in DIR (pcapng, named for the test id)",
    )


class _Captures:
    """The capture files of one test: C{DIR/<test id>.pcapng}, then C{.2.pcapng}, ... for more peers."""

    def __init__(self, directory: str, nodeid: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.stem = os.path.join(directory, re.sub(r"[^\w.=-]+", "_", nodeid).strip("_")[:200])
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.stem}.pcapng" if self.count == 1 else f"{self.stem}.{self.count}.pcapng"


def _captures(request: pytest.FixtureRequest) -> _Captures | None:
    """The test's captures, if C{--echoapp-record} asks to keep them (one naming for all its fixtures)."""
    directory = request.config.getoption("echoapp_record", None)
    if directory is None:
        return None
    found: _Captures | None = request.node.stash.get(CAPTURES, None)
    if found is None:
        found = request.node.stash[CAPTURES] = _Captures(str(directory), request.node.nodeid)
    return found


CAPTURES = pytest.StashKey[_Captures]()


def _is_trial(item: pytest.Item) -> bool:
    """A test of a trial C{TestCase} (found by name: loading this plugin imports no Twisted)."""
    cls = getattr(item, "cls", None)
    return cls is not None and any(
        base.__module__.startswith("twisted.trial.") and base.__name__ == "SynchronousTestCase"
        for base in cls.__mro__
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """
    Run trial TestCases before every other test when pytest-twisted is
    loaded.  From its first test on, pytest-twisted runs the reactor in a
    greenlet, after which a trial C{TestCase} cannot spin the reactor
    itself: it fails with C{DirtyReactorAggregateError} and "Incompatible
    Exception Representation" (a suite with README's trial example and the
    pytest how-to's did, in one order).  The order is otherwise kept (a
    stable sort, last among the hooks: after a shuffling plugin's).
    """
    if config.pluginmanager.hasplugin("twisted"):
        items.sort(key=lambda item: not _is_trial(item))


def _seen(request: pytest.FixtureRequest, peer: Any) -> None:
    """Remember a peer for the report, and its seed for JUnit XML."""
    request.node.stash.setdefault(PEERS, []).append(peer)
    if peer.seed is not None:
        request.node.user_properties.append(("echoapp_seed", peer.seed))


def _described(peer: Any) -> str:
    """One line a user finds: which peer, its seed, its faults now."""
    from echoapp.testing import Process  # imported when used, like the fixtures: loading costs nothing

    if isinstance(peer, Process):
        args = peer.args[:-2] if getattr(peer, "echoapp_record_added", False) else peer.args
        return f"{peer.plugin} {' '.join(args)}: seed={peer.seed}"
    return f"{peer.name} on {_where(peer)}: seed={peer.seed}, faults: {peer.faults}"


def _where(peer: Any) -> str:
    """Where an in-process peer listens, for the report (a UNIX socket has no host and port)."""
    return ", ".join(f"{host}:{port}" for host, port in peer.addresses) or "a UNIX socket"


def _wire(peer: Any) -> str:
    """One peer's wire record for the report: which peer, then its timeline (bounded)."""
    from echoapp.testing import Process

    if isinstance(peer, Process):
        peer.stop()  # the capture is whole once the process has drained and closed it
        record = peer.record
        title = f"{peer.plugin} (twistd, from its --record capture)"
        if record is None:
            return f"{title}: no capture (run without --record, or it did not start)"
    else:
        record = peer.record
        title = f"{peer.name} on {_where(peer)}"
    return f"{title}:\n{record.text(WIRE_LIMIT) or '(no connections)'}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """
    A failing test's report says each peer's seed and faults (as they are at
    the failure) and what went over the wire.  After the test, the peers are
    let go: their records are not kept for the rest of the session.
    """
    outcome: Any = yield
    report = outcome.get_result()
    peers = item.stash.get(PEERS, [])
    if report.failed and peers:
        report.sections.append(("echoapp peers", "\n".join(map(_described, peers))))
        report.sections.append(("echoapp wire", "\n\n".join(map(_wire, peers))))
    if call.when == "teardown":
        item.stash[PEERS] = []


class _Cleanups(unittest.TestCase):
    """
    What the fixtures give the peer factories as the test: a test case whose
    cleanups (C{doCleanups}, last first: a proxy stops before the peer behind
    it) run after the test.  Not trial's C{TestCase}, so the peers run on
    echoapp's reactor thread (L{echoapp.testing}).  C{echoapp_capture}, if
    set, names the file each peer streams its capture to.
    """

    echoapp_capture: Callable[[], str] | None = None


def _cleanups(request: pytest.FixtureRequest) -> _Cleanups:
    cleanups = _Cleanups()
    cleanups.echoapp_capture = _captures(request)
    return cleanups


def _keeping(request: pytest.FixtureRequest, make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """
    Every in-process fixture's body: the test calls C{start}, which
    C{make}s a peer for the test's L{_Cleanups} (the failure report names
    it); after the test each one made is stopped.
    """
    cleanups = _cleanups(request)

    def start(*args: Any, **options: Any) -> Any:
        peer = make(cleanups, *args, **options)
        _seen(request, peer)
        return peer

    try:
        yield start
    finally:
        cleanups.doCleanups()


@pytest.fixture
def echoapp_peer(request: pytest.FixtureRequest) -> Iterator[Callable[..., testing.Peer]]:
    """Start C{greeter}, C{echo} or C{udp} in-process; each is stopped and drained after the test."""
    from echoapp import testing

    def make(test: unittest.TestCase, kind: str = "greeter", **options: Any) -> testing.Peer:
        if kind not in KINDS:
            raise ValueError(f"echoapp_peer: kind is one of {', '.join(KINDS)}, not {kind!r}")
        peer: testing.Peer = getattr(testing, kind)(test, **options)
        return peer

    yield from _keeping(request, make)


@pytest.fixture
def echoapp_proxy(request: pytest.FixtureRequest) -> Iterator[Callable[..., testing.ProxyPeer]]:
    """
    Start echoapp-proxy in-process in front of C{upstream}:
    C{peer = echoapp_proxy(upstream="tcp:127.0.0.1:6379", faults=...)};
    stopped and drained after the test.
    """
    from echoapp.testing import proxy  # imported when used: the plugin itself loads nothing heavy

    yield from _keeping(request, proxy)


@pytest.fixture
def echoapp_process(request: pytest.FixtureRequest) -> Iterator[Callable[..., testing.Process]]:
    """
    Start a real C{twistd} with an echoapp plugin on a free loopback port;
    stopped after the test.  It takes what L{echoapp.testing.Process} takes:
    C{echoapp_process("echoapp-tcp", "--fault", "latency=100ms",
    reactor="uvloop")}.  A plugin that takes C{--record} is given one
    (unless the test gave its own): a file in a temporary directory,
    removed after the test, or in C{--echoapp-record}'s DIR, kept.
    """
    from echoapp import testing

    made: list[testing.Process] = []
    captures = _captures(request)
    scratch: list[str] = []

    def capture_file() -> str:
        if captures is not None:
            return captures()
        if not scratch:
            scratch.append(tempfile.mkdtemp(prefix="echoapp-wire-"))
        return os.path.join(scratch[0], f"{len(made)}.pcapng")

    def make(plugin: str | None = "echoapp-tcp", *args: str, **options: Any) -> testing.Process:
        given = any(arg == "--record" or arg.startswith("--record=") for arg in args)
        added = plugin in RECORDING_PLUGINS and not given
        if added:
            args = (*args, "--record", capture_file())
        process = testing.Process(plugin, *args, **options)
        process.echoapp_record_added = added  # type: ignore[attr-defined]  # the report shows the test's args
        made.append(process)
        _seen(request, process.start())
        return process

    try:
        yield make
    finally:
        for process in made:
            process.stop()
        for directory in scratch:
            shutil.rmtree(directory, ignore_errors=True)
