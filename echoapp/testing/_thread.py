"""
A reactor of echoapp's own, in a daemon thread: where the peers of a
synchronous test run, so that the test's thread may block (a redis-py call,
C{requests}, a plain socket) while they serve.

The global reactor is not used for this.  Under pytest-twisted it runs in a
greenlet of the test's own thread and moves only while a test waits on a
Deferred, so a blocking call in a plain C{def} test stops it; without
pytest-twisted it does not run at all; and trial's C{TestCase} runs it
itself, so a thread that ran it too would fight trial for it.  A second
reactor, never installed, touches none of that: it is of the installed
reactor's kind (a uvloop or asyncio event loop of its own, or epoll), does
not stay the I/O thread (L{threadable.isInIOThread}) and installs no
signal handler.  One per process, started when first needed (pytest-xdist's
workers are processes: one each), stopped at exit.

Everything on it is reached through L{Thread.call}, which runs a function
in the reactor's thread and blocks the caller until it has returned (and
until its Deferred has fired): a peer's methods are safe to call from the
test's thread.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from twisted.internet.base import ReactorBase
from twisted.internet.defer import maybeDeferred
from twisted.python import threadable
from twisted.python.failure import Failure

from echoapp._twisted import asyncio_loop

T = TypeVar("T")

# How long a call into the reactor's thread may take before the caller is
# told so, instead of hanging: a peer's start or stop (which drains its
# clients) is well inside it.
DEADLINE = 60.0


def _like_installed() -> ReactorBase:
    """
    A new reactor of the installed one's kind (epoll if none is installed
    yet: importing C{twisted.internet.reactor} here would install one, and
    choosing the global reactor is for pytest-twisted or trial to do).
    """
    installed = sys.modules.get("twisted.internet.reactor")
    loop = asyncio_loop(installed) if installed is not None else None
    if loop is not None:
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        # The same event loop class: uvloop's where the tests run on uvloop.
        return AsyncioSelectorReactor(type(loop)())
    kind: type | None = type(installed) if installed is not None else None
    try:
        from twisted.internet.epollreactor import EPollReactor
        from twisted.internet.pollreactor import PollReactor
        from twisted.internet.selectreactor import SelectReactor
    except ImportError:  # no epoll (not Linux)
        from twisted.internet.selectreactor import SelectReactor

        return SelectReactor()
    known: list[type[ReactorBase]] = [EPollReactor, PollReactor, SelectReactor]
    return (kind if kind in known else EPollReactor)()


class Thread:
    """A reactor running in a daemon thread, and the means to call into it."""

    def __init__(self) -> None:
        self.reactor = _like_installed()
        self._io_thread = threadable.ioThread
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echoapp.testing reactor", daemon=True)
        self._thread.start()
        if not self._running.wait(DEADLINE):
            raise RuntimeError("echoapp.testing: the peers' reactor thread did not start")

    def _run(self) -> None:
        loop = asyncio_loop(self.reactor)
        if loop is not None:
            asyncio.set_event_loop(loop)
        self.reactor.callWhenRunning(self._started)
        self.reactor.run(installSignalHandlers=False)

    def _started(self) -> None:
        """
        Running: give the I/O thread back.  A reactor that starts claims its
        thread as the process's one I/O thread, so the global reactor's
        checks (C{blockingCallFromThread}'s, trial's) would mean this one;
        the caller waits for L{_running} meanwhile, so no one asks between.
        """
        threadable.ioThread = self._io_thread
        self._running.set()

    def inside(self) -> bool:
        """Is the caller the reactor's own thread (a callback of a peer's)?"""
        return threading.current_thread() is self._thread

    def call(self, function: Callable[..., T], *args: object) -> T:
        """
        C{function(*args)} in the reactor's thread, its result (a Deferred's
        result once it fires) or its exception in the caller's.  Called from
        the reactor's own thread, it runs at once (a Deferred is returned
        as it is there).
        """
        if self.inside():
            return function(*args)
        done = threading.Event()
        outcome: list[object] = []

        def settle(result: object) -> None:
            outcome.append(result)
            done.set()

        def run() -> None:
            maybeDeferred(function, *args).addBoth(settle)

        self.reactor.callFromThread(run)
        if not done.wait(DEADLINE):
            raise TimeoutError(f"echoapp.testing: {function!r} did not finish within {DEADLINE:g}s")
        (result,) = outcome
        if isinstance(result, Failure):
            result.raiseException()
        return result  # type: ignore[return-value]

    def stop(self) -> None:
        """Stop the reactor and wait for its thread (at exit)."""
        if self._thread.is_alive():
            self.reactor.callFromThread(self.reactor.stop)
            self._thread.join(DEADLINE)


_started: list[Thread] = []
_lock = threading.Lock()


def shared() -> Thread:
    """The process's one reactor thread, started on first use and stopped at exit."""
    with _lock:
        if not _started:
            _started.append(Thread())
            atexit.register(_started[0].stop)
        return _started[0]
