"""
echoapp's stream connections on Twisted's own reactors polled together:
one epoll of their own, which the reactor sees as a single reader.

Twisted's reactor wraps every read or write event it hands a descriptor in
C{log.callWithLogger}, which builds a log context (a copied dict, a context
stack pushed and popped) so that old-style C{log.msg} calls made while the
descriptor works carry its C{logPrefix}.  That costs 1.2-1.7 µs an event
here: a forwarded request has two reads, and it was most of what
echoapp-proxy with a toxic cost beyond toxiproxy on the default reactor.
So the descriptors of echoapp's eager listeners and the proxy's upstream
connections register with L{Polled}, a reactor that passes everything to
the real one except the four calls that say which descriptors to watch:
those go to L{SharedPoll}, whose one epoll descriptor is a reader of the
real reactor.  When it is readable, the events of all its descriptors are
handled in one pass, with Twisted's own rules for each (a read before a
write, a hang-up after the last byte read is a clean close, half-close
for those that can), in one log context for the pass whose C{system} is
set to each descriptor's prefix in turn.  The epoll costs one more system
call a pass; under load a pass handles tens of events.

What a program sees differently: the reactor's C{getReaders} and
C{getWriters} list the shared poll, not the connections on it, and the
reactor's C{removeReader} does not reach them (their own C{stopReading}
does, as everything in Twisted and echoapp uses).  C{--no-eager-writes}
goes back to Twisted's own transport, polled by the reactor.

The shared poll is a reader of the reactor only while it has descriptors,
so an idle process, or a test that ends clean, leaves nothing behind; when
the reactor drops it (a shutdown's C{disconnectAll}), each of its
descriptors is told, as the reactor would have told it.  Linux only (epoll):
elsewhere the reactor itself polls each descriptor.
"""

from __future__ import annotations

import select
import sys
import weakref
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.python import context
from twisted.python import log as legacy
from twisted.python.failure import Failure
from twisted.python.log import ILogContext

IN, OUT = getattr(select, "EPOLLIN", 1), getattr(select, "EPOLLOUT", 4)
GONE = getattr(select, "EPOLLHUP", 16) | getattr(select, "EPOLLERR", 8)
DONE = Failure(error.ConnectionDone())
LOST = Failure(error.ConnectionLost())
# Twisted's reactor reports these two by their class, and anything else as itself.
REPORTED = {error.ConnectionDone: DONE, error.ConnectionLost: LOST}


class SharedPoll:
    """
    The epoll of L{Polled}'s descriptors, itself one reader of the real
    reactor (C{doRead}, C{fileno}, C{connectionLost}, C{logPrefix}).
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor  # weakly (L{polled}): a test's reactor goes, its poll with it
        self._poller = select.epoll()
        self._selectables: dict[int, Any] = {}
        self._reads: set[int] = set()
        self._writes: set[int] = set()

    def fileno(self) -> int:
        return self._poller.fileno()

    def logPrefix(self) -> str:
        return "echoapp"

    def __repr__(self) -> str:
        return f"<echoapp's shared poll of {list(self._selectables.values())!r}>"

    def add(self, xer: Any, primary: set[int], other: set[int], event: int, antievent: int) -> None:
        """Watch C{xer} for C{event} too (the reactor's C{_add}); the poll reads while it has any."""
        if self._selectables and self not in self.reactor.getReaders():
            self._forget()
        fd = xer.fileno()
        if fd not in primary:
            if fd in other:
                self._poller.modify(fd, event | antievent)
            else:
                self._poller.register(fd, event)
            primary.add(fd)
            self._selectables[fd] = xer
        self.reactor.addReader(self)  # idempotent

    def _forget(self) -> None:
        """
        The reactor dropped the poll without a word (C{removeAll}: trial's
        janitor after a test that left connections open): as the reactor
        forgets its own, the poll forgets what it watched, which is never
        polled again (a dirty test's connections served in the next one
        made that one fail too).
        """
        self._poller.close()
        self._poller = select.epoll()
        self._selectables.clear()
        self._reads.clear()
        self._writes.clear()

    def remove(self, xer: Any, primary: set[int], other: set[int], antievent: int) -> None:
        """Stop watching C{xer} for this event (the reactor's C{_remove}: a closed one found by identity)."""
        fd = xer.fileno()
        if fd == -1:
            found = [number for number, known in self._selectables.items() if known is xer]
            if not found:
                return
            fd = found[0]
        if fd in primary:
            primary.remove(fd)
            try:
                if fd in other:
                    self._poller.modify(fd, antievent)
                else:
                    del self._selectables[fd]
                    self._poller.unregister(fd)
            except OSError:
                self._afresh()
            if not self._selectables:
                self.reactor.removeReader(self)

    def _afresh(self) -> None:
        """
        A descriptor was closed while still watched (something went round
        its own C{stopReading}): the kernel may go on watching its socket
        under a number that is gone, which no call can take back, so the
        poll starts again with a new epoll and what is still open.
        """
        self.reactor.removeReader(self)
        self._poller.close()
        self._poller = select.epoll()
        for fd in list(self._selectables):
            flags = (IN if fd in self._reads else 0) | (OUT if fd in self._writes else 0)
            try:
                self._poller.register(fd, flags)
            except OSError:
                del self._selectables[fd]
                self._reads.discard(fd)
                self._writes.discard(fd)
        if self._selectables:
            self.reactor.addReader(self)

    def doRead(self) -> None:
        """
        Every event ready now, each as the reactor handles one, in one log
        context for the pass whose C{system} is each descriptor's
        C{logPrefix} while it works (what C{callWithLogger} gives it, for
        the price of a dict entry); a failure is logged, the pass goes on.
        """
        here = context.get(ILogContext)
        system = dict(here) if here else {}
        context.call({ILogContext: system}, self._pass, system)

    def _pass(self, system: dict[str, Any]) -> None:
        selectables = self._selectables
        for fd, event in self._poller.poll(0, len(selectables) or 1):
            selectable = selectables.get(fd)
            if selectable is None:  # gone earlier in this pass
                continue
            try:
                system["system"] = selectable.logPrefix()
            except BaseException:
                system["system"] = "(buggy logPrefix method)"
                legacy.err(system=system["system"])
            try:
                self._handle(selectable, fd, event)
            except BaseException:
                # As C{callWithLogger}: logged under the descriptor's prefix, and
                # nothing leaves the pass (which would lose every descriptor on it).
                legacy.err()

    def _handle(self, selectable: Any, fd: int, event: int) -> None:
        """Twisted's C{_doReadOrWrite}, without the log context around it."""
        why: Any = None
        reading = False
        if event & GONE and not event & IN:
            # Hung up with nothing left to read: a clean end if it was being read (a half-close maybe).
            reading = fd in self._reads
            why = error.ConnectionDone() if reading else error.ConnectionLost()
        else:
            try:
                if selectable.fileno() == -1:
                    why = error.ConnectionFdescWentAway("File descriptor lost")
                else:
                    if event & IN:
                        why = selectable.doRead()
                        reading = True
                    if not why and event & OUT:
                        why = selectable.doWrite()
                        reading = False
            except BaseException:
                why = sys.exc_info()[1]
                legacy.err()
        if why:
            self._disconnect(selectable, why, reading)

    def _disconnect(self, selectable: Any, why: Any, reading: bool) -> None:
        """Twisted's C{_disconnectSelectable}: a clean end of reading half-closes where it can."""
        self.remove(selectable, self._reads, self._writes, OUT)
        reported = REPORTED.get(why.__class__)
        if (
            reading
            and why.__class__ is error.ConnectionDone
            and IHalfCloseableDescriptor.providedBy(selectable)
        ):
            selectable.readConnectionLost(DONE)
            return
        self.remove(selectable, self._writes, self._reads, IN)
        selectable.connectionLost(reported or Failure(why))

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped the poll (a shutdown's C{disconnectAll}): each descriptor is told."""
        for selectable in list(self._selectables.values()):
            self.remove(selectable, self._reads, self._writes, OUT)
            self.remove(selectable, self._writes, self._reads, IN)
            legacy.callWithLogger(selectable, selectable.connectionLost, reason)


class Polled:
    """
    The real reactor, except that the descriptors made with it register
    with its L{SharedPoll}: what echoapp's transports are given as theirs.
    """

    def __init__(self, reactor: Any, poll: SharedPoll) -> None:
        self.reactor = reactor  # weakly (L{polled})
        self.poll = poll

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)

    def addReader(self, reader: Any) -> None:
        poll = self.poll
        poll.add(reader, poll._reads, poll._writes, IN, OUT)

    def addWriter(self, writer: Any) -> None:
        poll = self.poll
        poll.add(writer, poll._writes, poll._reads, OUT, IN)

    def removeReader(self, reader: Any) -> None:
        poll = self.poll
        poll.remove(reader, poll._reads, poll._writes, OUT)

    def removeWriter(self, writer: Any) -> None:
        poll = self.poll
        poll.remove(writer, poll._writes, poll._reads, IN)

    def getReaders(self) -> list[Any]:
        """The real reactor's readers and the shared poll's (whether a transport stopped reading)."""
        poll = self.poll
        return [r for r in self.reactor.getReaders() if r is not poll] + [
            poll._selectables[fd] for fd in poll._reads
        ]

    def getWriters(self) -> list[Any]:
        poll = self.poll
        return list(self.reactor.getWriters()) + [poll._selectables[fd] for fd in poll._writes]


_POLLS: weakref.WeakKeyDictionary[Any, Polled] = weakref.WeakKeyDictionary()


def polled(reactor: Any) -> Any:
    """
    C{reactor} with its descriptors on its one shared poll, or C{reactor}
    itself without epoll.  The poll and its reactor refer to the reactor
    weakly: a reactor made for a test, and the poll's epoll, go when the
    test drops it (held strongly, every reactor ever polled stayed).
    """
    if isinstance(reactor, Polled) or not hasattr(select, "epoll"):
        return reactor
    try:
        found = _POLLS.get(reactor)
        if found is None:
            weak = weakref.proxy(reactor)
            found = _POLLS[reactor] = Polled(weak, SharedPoll(weak))
    except TypeError:  # a reactor that cannot be referred to weakly polls its own
        return reactor
    return found
