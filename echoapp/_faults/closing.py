"""
How a faulty connection closes: the service's close and half-close wait
for what the faults still hold, then for C{slow-close}; C{close-after} and
C{reset-after} end it on a timer; C{refuse} never lets it start.  Its
state is one L{CloseState}, moved by the events below (as h11 keeps a
connection's), not flags that could disagree.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol

from echoapp._faults.held import Hub
from echoapp._faults.notes import ms
from echoapp._faults.plan import IDLE_CLOSE, RESET_ON_CHUNK, Shape
from echoapp._faults.resets import FLUSH_CHECK, FLUSH_WAIT, kernel_unsent, reset, socket_of
from echoapp._limits.descriptors import HoldsDescriptor
from echoapp._limits.guard import half_closer
from echoapp._record import record_of
from echoapp._twisted import unsent

_TIMED = ("reset_after", "close_after")


class CloseState(enum.Enum):
    """Where a faulty connection is in its close, as its service and faults moved it."""

    OPEN = "open"
    WRITE_CLOSING = "write-closing"  # the service half-closed: its FIN waits for what is held
    CLOSING = "closing"  # the service (or a fault) closed: the close waits for what is held
    WRITE_CLOSED = "write-closed"  # a FIN was sent (half-close, byte limit): reading goes on
    RESETTING = "resetting"  # reset-after-bytes: the RST waits until the transport has flushed
    LOST = "lost"  # the connection is gone


class Refused(HoldsDescriptor, Protocol):
    """
    C{refuse}: the connection is accepted, then closed at once; the service
    never sees it.  It holds a descriptor until it is gone, as any refusal.
    """

    def connectionMade(self) -> None:
        self.hold_descriptor()
        record = record_of(self.transport)
        if record is not None:
            record.fault("refuse", "refused: closed at once, the service never saw it")
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.release_descriptor()


class Closing:
    """One connection's close: its state, its slow close, its timed close and reset."""

    def __init__(self, connection: Hub) -> None:
        self.connection = connection
        self.state = CloseState.OPEN
        self._finish: IDelayedCall | None = None  # the close, once what is held has gone
        self._timers: dict[str, IDelayedCall] = {}  # reset_after, close_after
        self._since: dict[str, tuple[float, float | None]] = {}  # their values, and when each began
        self._fired: set[str] = set()  # and those that went off (not again for the same value)
        self._opened = True  # the first change is the opening
        self._rst = False  # toxiproxy's reset_peer was there at the opening: its close is an RST
        self._slow = 0.0  # the slow close the close waits for (its note, in the record)
        self._reset_note = ""  # what the RST that waits for the flush will say in the record

    def _move(self, state: CloseState) -> None:
        self.state = state
        self.connection.sending.passing = False  # only an open connection passes writes straight on
        self.connection.straighten()

    # --- the timed faults ---

    def changed(self, shape: Shape | None) -> None:
        """
        The faults changed (or the connection opened): the timers follow.
        Each counts from when its value began to apply (the opening, or the
        change that set it on an open connection); toxiproxy's C{reset_peer}
        from the first chunk after that (L{chunk}).
        """
        timing = shape.timing if shape is not None else frozenset()
        opening, self._opened = self._opened, False
        now = self.connection.clock.seconds()
        for name in _TIMED:
            after = getattr(shape.faults, name) if shape is not None else None
            since = self._since.get(name)
            if after is None:
                self._cancel(name)
                self._since.pop(name, None)
                continue
            if since is None or since[0] != after:
                self._cancel(name)
                self._fired.discard(name)
                waits = name == "reset_after" and RESET_ON_CHUNK in timing
                since = self._since[name] = (after, None if waits else now)
                if waits and opening:
                    self._rst = True
            if since[1] is not None and name not in self._timers and name not in self._fired:
                self._arm(name, since[1] + after - now)

    def chunk(self, shape: Shape) -> bool:
        """
        A chunk arrived for the faulty side: toxiproxy's C{timeout} counts
        again from now; its C{reset_peer} starts counting at the first one.
        Whether to swallow it (C{reset_peer} holds every chunk from then on).
        """
        faults = shape.faults
        now = self.connection.clock.seconds()
        if IDLE_CLOSE in shape.timing and faults.close_after is not None and "close_after" not in self._fired:
            self._since["close_after"] = (faults.close_after, now)
            timer = self._timers.get("close_after")
            if timer is not None and timer.active():
                timer.reset(max(0.0, faults.close_after))  # the one timer, put back: not one per chunk
            else:
                self._arm("close_after", faults.close_after)
        if RESET_ON_CHUNK in shape.timing and faults.reset_after is not None:
            since = self._since.get("reset_after")
            if since is not None and since[1] is None:
                self._since["reset_after"] = (since[0], now)
                self._arm("reset_after", since[0])
            return True
        return False

    def _reset_waits(self) -> bool:
        """
        toxiproxy's C{reset_peer} has swallowed a chunk and its timer runs:
        the connection ends with that RST, and a close asked for meanwhile
        is not sent (its FIN would reach the other side first).
        """
        return "reset_after" in self._timers and self._since.get("reset_after", (0.0, None))[1] is not None

    def _arm(self, name: str, delay: float) -> None:
        call = self._timed_reset if name == "reset_after" else self._timed_close
        self._timers[name] = self.connection.later(delay, call)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _timed_reset(self) -> None:
        self._timers.pop("reset_after", None)
        self._fired.add("reset_after")
        shape = self.connection.draws.current()
        record = self.connection.record
        after = self._since["reset_after"][0] if "reset_after" in self._since else 0.0
        if shape is not None and RESET_ON_CHUNK in shape.timing and not self._rst:
            if record is not None:
                record.fault("reset_peer", f"closed (FIN) after {ms(after)}: open before the toxic came")
            self.close_at_once()  # toxiproxy: a connection opened before its reset_peer gets a FIN
        else:
            if record is not None:
                record.fault("reset", f"reset after {ms(after)}")
            reset(self.connection.transport)

    def _timed_close(self) -> None:
        """C{close-after}: a FIN now (after the slow close); what is still held is dropped."""
        self._timers.pop("close_after", None)
        self._fired.add("close_after")
        if self.connection.record is not None:
            after = self._since["close_after"][0] if "close_after" in self._since else 0.0
            held = self.connection.sending.queue.held
            dropped = f", {held} B held dropped" if self.connection.sending.holds() else ""
            self.connection.record.fault("close", f"closed after {ms(after)}{dropped}")
        self.close_at_once()

    def close_at_once(self) -> None:
        """Close without sending what is held (a timed close, a byte limit that closes)."""
        if self.state in (CloseState.LOST, CloseState.RESETTING):
            return
        self.connection.sending.drop()
        self._move(CloseState.CLOSING)
        self.finish()

    # --- the service's closes ---

    def lose(self) -> None:
        """The service closes: after what is held has gone, and after the slow close."""
        if self.state in (CloseState.LOST, CloseState.RESETTING, CloseState.CLOSING) or self._reset_waits():
            return
        self._move(CloseState.CLOSING)
        if not self.connection.sending.holds():
            self.finish()

    def lose_write(self) -> None:
        """The service half-closes: its FIN after what is held."""
        if self.state is not CloseState.OPEN or self._reset_waits():
            return
        self._move(CloseState.WRITE_CLOSING)
        if not self.connection.sending.holds():
            self.finish()

    def write_closed(self) -> None:
        """A byte limit sent its FIN: nothing more is written, reading goes on."""
        self._move(CloseState.WRITE_CLOSED)
        (half_closer(self.connection.transport) or self.connection.transport.loseConnection)()

    def finish(self) -> None:
        """
        The close asked for, on a later turn (after the slow close), never
        inside the service's own call: a close can end the connection before
        it returns, and a service that arms a timer after asking would leave
        that timer behind.
        """
        if self._finish is None and self.state in (CloseState.CLOSING, CloseState.WRITE_CLOSING):
            shape = self.connection.draws.current()
            self._slow = shape.faults.slow_close if shape else 0.0
            self._finish = self.connection.later(shape.faults.slow_close if shape else 0.0, self._finished)

    def _finished(self) -> None:
        self._finish = None
        transport = self.connection.transport
        record = self.connection.record
        if record is not None and self._slow:
            record.fault("slow-close", f"the close went {ms(self._slow)} after it was asked for")
        if self.state is CloseState.CLOSING:
            transport.loseConnection()
        elif self.state is CloseState.WRITE_CLOSING:
            self._move(CloseState.WRITE_CLOSED)
            (half_closer(transport) or transport.loseConnection)()

    # --- reset after bytes ---

    def reset_when_flushed(self, note: str) -> None:
        """
        C{reset-after-bytes}: the RST once the transport has sent every byte
        it holds (TLS and uvloop buffer a write; an abort drops the buffer);
        C{note} is the record's word for it, on the RST.
        """
        self._reset_note = note
        self._move(CloseState.RESETTING)
        self._check_flushed(self.connection.clock.seconds() + FLUSH_WAIT)

    def _check_flushed(self, deadline: float) -> None:
        transport = self.connection.transport
        left = unsent(transport) or kernel_unsent(socket_of(transport))
        if left and self.connection.clock.seconds() < deadline:
            self.connection.later(FLUSH_CHECK, self._check_flushed, deadline)
        else:
            if self.connection.record is not None:
                self.connection.record.fault("reset", self._reset_note)
            reset(transport)

    def lost(self) -> None:
        """The connection is gone (its timers are cancelled with it)."""
        self._move(CloseState.LOST)
        self._finish = None
        self._timers.clear()  # the connection's timers are all cancelled with it
