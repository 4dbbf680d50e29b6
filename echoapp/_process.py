"""
Everything echoapp keeps once per process, in one object: L{PROCESS}.

What belongs to a process by nature (its file descriptors) or is decided
once for it (whether eager writes work here and whether an operator
switched them off, which Twisted internals fell back and have said so, the
counters every live listener reports) is kept here rather than in module
globals spread over the modules that use it: a reader finds all of it in
one place, and a test starts from a clean slate with L{ProcessState.reset}.
"""

from __future__ import annotations

import os
import resource
import time
import weakref
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="echoapp.descriptors")

# Connections one read event of a TCP port accepts at most.  Twisted starts
# at 100 and grows by 20 after each full batch, without end; the descriptor
# reserve (L{Descriptors.reserve}) has room for two batches.
ACCEPT_BATCH = 50

# What the reserve assumes the process holds besides connections when it
# cannot count them (no /proc/self/fd or /dev/fd).
ASSUMED_HELD = 32
# Descriptors opened after the ceiling is set: the listening socket itself,
# Twisted's spare for EMFILE recovery, the reactor's waker, a rotated log
# (five of them, measured, on the default reactor; room kept for more).
OPENED_LATER = 16
# A count of the descriptors held stands for the listeners started within
# RECOUNT seconds of it, up to UNCOUNTED of them: a count lists
# /proc/self/fd, which grows with what is open, so a count per listener made
# a populate of 2,000 proxies quadratic.  A listener that holds its
# descriptor (an API proxy's) moves the count not at all; one that does not
# is one the reserve's OPENED_LATER already has room for.
RECOUNT = 0.1
UNCOUNTED = 8


def held_descriptors() -> int:
    """How many descriptors the process holds now (listening sockets, logs, the loop's own)."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # the listing's own descriptor
        except OSError:
            continue
    return ASSUMED_HELD


class Descriptors:
    """The ceiling (from C{RLIMIT_NOFILE}) and how many connections hold descriptors now."""

    def __init__(self) -> None:
        self.ceiling: int | None = None
        self.open = 0
        self._counted = (-RECOUNT, 0, 0)  # when the ceiling was counted, the soft limit, listeners since

    def reserve(self) -> int:
        """
        Descriptors kept free: what the process holds besides connections
        (listening sockets, log files, the event loop's own: 11-15 on the
        default reactor, 20-24 on uvloop, so no constant fits) and two
        accept batches (L{ACCEPT_BATCH}): each refused client needs a
        descriptor to be told C{ERROR: server busy} rather than be closed
        unread by C{accept()}'s C{EMFILE} recovery, a port accepts a whole
        batch before any refusal of it is closed (on Twisted's own TCP a
        told refusal closes as soon as its line has left; elsewhere in the
        next pass of the loop, which may accept another batch first).  And
        L{OPENED_LATER}: the ceiling is set as a listener starts, before its
        own socket, Twisted's C{EMFILE} spare and the like are open.  Under
        a tiny limit the batches' room is at most a third of it (a flood
        there is refused by Twisted's own recovery rather than served by no
        one).
        """
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        batches = min(2 * ACCEPT_BATCH, soft // 3)
        return max(held_descriptors() - self.open, 0) + OPENED_LATER + batches

    def hold(self) -> None:
        """One more descriptor is held (a connection, a refusal, a metrics client)."""
        self.open += 1

    def release(self) -> None:
        """A descriptor held with L{hold} is closed."""
        self.open -= 1

    def raise_limit(self) -> int:
        """
        Raise the soft RLIMIT_NOFILE to the hard limit, once, and log the
        figure: the connection ceiling follows from it, counted again at
        most every L{RECOUNT} seconds or L{UNCOUNTED} listeners.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        first = self.ceiling is None
        now = time.monotonic()
        counted, was_soft, since = self._counted
        if first or now - counted >= RECOUNT or soft != was_soft or since >= UNCOUNTED:
            self.ceiling = max(soft - self.reserve(), 1)
            self._counted = (now, soft, 0)
        else:
            self._counted = (counted, soft, since + 1)
        if first:
            log.info(
                "File descriptor limit {limit}; at most {ceiling} connections",
                limit=soft,
                ceiling=self.ceiling,
            )
        return soft

    def limit(self) -> int:
        """The ceiling: from the raised limit once a listener has started, else from the current one."""
        if self.ceiling is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            return max(soft - self.reserve(), 1)
        return self.ceiling

    def full(self) -> bool:
        """True when one more connection would pass the ceiling."""
        return self.open >= self.limit()


class ProcessState:
    """
    The once-per-process state, in one object.

    @ivar descriptors: the descriptor ceiling and what connections hold.
    @ivar fallen_back: seam items (L{echoapp._twisted}) that have said they
        fall back: each says so once per process.
    @ivar eager_check: the eager-write check, made once: C{[problem]}, the
        problem L{None} when eager writes work here.
    @ivar eager_off: why eager writes were switched off (an option, the
        environment), first first; empty while they are on.
    @ivar eager_said: eager-write notices already logged.
    @ivar stats: every live listener's counters, for the metrics collector.
    """

    def __init__(self) -> None:
        self.descriptors = Descriptors()
        self.reset()

    def reset(self) -> None:
        """A fresh process: nothing counted, decided or said yet (the same objects, emptied)."""
        self.descriptors.ceiling = None
        self.descriptors.open = 0
        self.descriptors._counted = (-RECOUNT, 0, 0)
        self.fallen_back: set[str] = set()
        self.eager_check: list[str | None] = []
        self.eager_off: list[str] = []
        self.eager_said: set[str] = set()
        self.stats: weakref.WeakSet[Any] = weakref.WeakSet()


PROCESS = ProcessState()
