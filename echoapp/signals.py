"""
What a daemon does with the signals an operator and the usual tools send:

- SIGHUP reopens the log file, as log rotation tools expect (logrotate's
  C{postrotate kill -HUP}); it used to kill the process at once, no drain.
- SIGUSR1 rotates the log file as twistd does, or, when a tool has moved it
  away already, reopens it (twistd's own rotation then did nothing and kept
  writing to the moved file).
- SIGTERM and SIGINT stop the service with a drain, as Twisted does; one
  that comes again while it drains is noted in one line and changes
  nothing (the drain ends within --close-grace anyway), where Twisted
  logged a critical ReactorNotRunning traceback.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.logfile import LogFile

from echoapp._starting import StartsOnce
from echoapp._twisted import global_reactor, twistd_log_file

__all__ = ["SignalService", "handled"]

log = Logger(namespace="echoapp.signals")

Handler = Callable[[int, FrameType | None], Any]


class SignalService(StartsOnce):
    """
    Installs the handlers when the service starts (the reactor's own are in
    place by then) and puts back what it found when it stops.  Signals are
    per process: one SignalService belongs at the top of the tree (the
    plugins and C{echoapp-compose} put it there, once), as a C{.tac} file
    does with L{handled}.
    """

    def __init__(self, reactor: IReactorCore | None = None, log_file: LogFile | None = None) -> None:
        """
        @param log_file: the log file a C{.tac} file writes to itself (its
            own L{LogFile} observer), for SIGHUP and SIGUSR1 to reopen and
            rotate; without it, twistd's C{--logfile}, if any.
        """
        self.reactor: Any = reactor if reactor is not None else global_reactor()
        self._given_log_file = log_file
        self._log_file: LogFile | None = None
        self._stopping = False
        self._said_again = False
        self._previous: dict[int, Any] = {}

    def start_once(self) -> None:
        """
        In twistd's first step: the handlers go in before any listener binds
        (and says so), so a SIGHUP from then on never finds the default
        action, which is to die.  twistd's log file is known by now.
        """
        # Found before our SIGUSR1 handler replaces twistd's, whose closure holds it.
        self._log_file = self._given_log_file or twistd_log_file()
        self._install(signal.SIGHUP, self._on_hup)
        if self._log_file is not None or not callable(signal.getsignal(signal.SIGUSR1)):
            self._install(signal.SIGUSR1, self._on_usr1)  # else a handler we cannot read rotates
        # twistd starts services before the reactor runs, and the reactor
        # installs its SIGTERM/SIGINT handlers as it starts: wrap them then.
        self.reactor.callWhenRunning(self._wrap_stop_signals)

    def _wrap_stop_signals(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            stop = signal.getsignal(number)
            if callable(stop):
                self._install(number, self._stop_once(stop))

    def stopService(self) -> None:
        super().stopService()
        for number, previous in self._previous.items():
            if number not in (signal.SIGTERM, signal.SIGINT):  # a second one may still come
                signal.signal(number, previous)
        self._previous = {}

    def _install(self, number: int, handler: Handler) -> None:
        self._previous.setdefault(number, signal.getsignal(number))
        signal.signal(number, handler)

    def _on_hup(self, number: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reopen)

    def _on_usr1(self, number: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.rotate)

    def reopen(self) -> None:
        """
        SIGHUP: reopen the log file at its path, after a rotation tool has
        moved it (logrotate's C{postrotate}).
        """
        log_file = self._log_file
        if log_file is None:
            log.info("SIGHUP: no log file to reopen (logging to standard output or a --logger)")
            return
        log_file.reopen()
        log.info("SIGHUP: reopened the log file {path}", path=log_file.path)

    def rotate(self) -> None:
        """
        SIGUSR1: rotate the log file as twistd does (C{.1}, C{.2}, ...), or
        start a new one if it was moved away.
        """
        log_file = self._log_file
        if log_file is None:
            return
        if os.path.exists(log_file.path):
            log_file.rotate()
        else:  # moved away by a rotation tool: start a new file where it was
            log_file.reopen()

    def _stop_once(self, stop: Handler) -> Handler:
        def handler(number: int, frame: FrameType | None) -> None:
            if not self._stopping:
                self._stopping = True
                stop(number, frame)
            elif not self._said_again:
                self._said_again = True
                self.reactor.callFromThread(
                    log.info,
                    "Signal {number} again: still stopping; the drain ends within --close-grace",
                    number=number,
                )

        return handler


def handled(service: MultiService, reactor: IReactorCore | None = None) -> MultiService:
    """
    C{service} with the daemon's signal handling (see the module docstring),
    as its first child, so that it starts before any listener.
    """
    signals = SignalService(reactor)
    signals.setServiceParent(service)
    service.services.remove(signals)
    service.services.insert(0, signals)
    return service
