"""
Faults on the UDP greeter's replies: latency and jitter, loss,
duplication and reordering, each drawn per datagram source from that
source's own generator (L{echoapp._faults.plan.Draws}).
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol

from echoapp._faults.notes import ms, switched
from echoapp._faults.plan import Draws, FaultSource
from echoapp._record import SERVER, records_of

# The longest a reordered reply waits for the next reply to its source:
# then it goes anyway, late, as a reordered datagram does, never stranded.
REORDER_HOLD = 0.2
# Bytes of replies a port may hold back (latency, reordering) at once, every
# source's together (a UDP proxy gives its sessions one L{HeldBytes} of its
# own size): past that a reply is dropped, as a full buffer drops it
# (reason=buffer), so a flood against a slow UDP peer cannot grow the server.
HELD_DATAGRAM_BYTES = 1 << 20
# What a held datagram costs beyond its bytes (its timer, closure and
# entries), charged against the same bound: a flood of small ones is bounded
# in count too.
HELD_COST = 512


class HeldBytes:
    """
    The bytes of datagrams one port holds back, shared by the fault
    wrappers of everything that sends through it (a UDP proxy's every
    session, both ways): bounded per port, not per source, so a client
    that opens sessions from new source ports cannot multiply the bound;
    and within the C{whole}'s bound, if given (every UDP proxy of the
    process), so that neither can making more proxies.
    """

    __slots__ = ("held", "limit", "whole")

    def __init__(self, limit: int = HELD_DATAGRAM_BYTES, whole: HeldBytes | None = None) -> None:
        self.held = 0
        self.limit = limit
        self.whole = whole

    def take(self, cost: int) -> bool:
        """C{cost} more held, if it fits here and in the whole; else nothing changes."""
        whole = self.whole
        if self.held + cost > self.limit or (whole is not None and not whole.take(cost)):
            return False
        self.held += cost
        return True

    def give(self, cost: int) -> None:
        """C{cost} no longer held (sent, or dropped as the port stops)."""
        self.held -= cost
        if self.whole is not None:
            self.whole.give(cost)


class FaultyDatagrams:
    """The UDP greeter's transport, with the faults of the source each reply goes to."""

    def __init__(
        self, transport: Any, protocol: FaultyDatagramProtocol, budget: HeldBytes | None = None
    ) -> None:
        self._transport = transport
        self._budget = budget if budget is not None else HeldBytes()
        self._protocol = protocol
        self._plan = protocol.plan
        self._held: dict[Any, tuple[bytes, IDelayedCall]] = {}
        self._timers: set[IDelayedCall] = set()
        self.held_bytes = 0  # this wrapper's share of its budget
        self._records = records_of(transport)  # the wire record's, by source; None: nothing records

    def _note(self, addr: Any, kind: str, note: str, last: bool = False) -> None:
        """Tell the source's record what a fault did (only where one is kept)."""
        if self._records is not None and addr is not None:
            self._records(addr).fault(kind, note, SERVER, last=last)

    def _hold(self, datagram: bytes, addr: Any) -> bool:
        """Room for one more held reply?  Without, it is dropped and counted."""
        cost = len(datagram) + HELD_COST
        if not self._budget.take(cost):
            self._protocol.reply_dropped()
            if self._records is not None:
                self._note(addr, "loss", f"reply dropped: {self._budget.limit} B of replies held", True)
            return False
        self.held_bytes += cost
        return True

    def _unhold(self, datagram: bytes) -> None:
        cost = len(datagram) + HELD_COST
        self._budget.give(cost)
        self.held_bytes -= cost

    def write(self, datagram: bytes, addr: Any = None) -> Any:
        draws = self._protocol.draws_for(addr)
        shape = draws.current() if draws is not None else None
        if shape is None or draws is None:
            return self._transport.write(datagram, addr)
        faults = shape.faults
        rng = draws.random
        if self._records is not None and draws.switched is None and shape.conditional:
            draws.watch(lambda on, faults: self._note(addr, "condition", switched(on, faults)))
        if faults.loss and rng.random() < faults.loss:
            if self._records is not None:  # on the request just recorded: its reply never went
                self._note(addr, "loss", f"reply dropped ({len(datagram)} B)", last=True)
            return None
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        delay = draws.delay(faults)
        if addr not in self._held and faults.reorder and rng.random() < faults.reorder:
            # Sent after the next reply to the same source, or after REORDER_HOLD.
            if self._hold(datagram, addr):
                self._held[addr] = (datagram, self._later(delay + REORDER_HOLD, self._release, addr))
                if self._records is not None:
                    self._note(addr, "reorder", "reply held back, to go after the next one", last=True)
            return None
        for copy in range(copies):
            self._send(delay, datagram, addr, ("duplicate", "the same reply again") if copy else None)
        if addr in self._held:
            held = self._held[addr][0]
            self._forget(addr)
            self._send(delay, held, addr, ("reorder", "reordered: sent after a later reply"))
        return None

    def _later(self, delay: float, call: Any, *args: Any) -> IDelayedCall:
        def run() -> None:
            self._timers.discard(timer)
            call(*args)

        timer = self._plan.clock.callLater(delay, run)
        self._timers.add(timer)
        return timer

    def _send(self, delay: float, datagram: bytes, addr: Any, note: tuple[str, str] | None = None) -> None:
        """
        Now, or after C{delay}; C{note} (kind, words), if any, is the
        record's, said as the datagram goes so that it lands on it.
        """
        if not delay:
            self._send_now(datagram, addr, note)
        elif self._hold(datagram, addr):
            if self._records is not None:
                delayed = f"delayed {ms(delay)}"
                note = (note[0], f"{note[1]}, {delayed}") if note else ("latency", delayed)
            self._later(delay, self._send_held, datagram, addr, note)

    def _send_held(self, datagram: bytes, addr: Any, note: tuple[str, str] | None = None) -> None:
        self._unhold(datagram)
        self._send_now(datagram, addr, note)

    def _send_now(self, datagram: bytes, addr: Any, note: tuple[str, str] | None = None) -> None:
        if note is not None and self._records is not None:
            self._note(addr, *note)
        try:
            written = self._transport.write(datagram, addr)
        except OSError as error:  # refused (a broadcast address, forged): dropped, never raised into a timer
            self._protocol.reply_dropped("source" if error.errno == errno.EACCES else "buffer")
            return
        if written is False:  # a full native buffer dropped it
            self._protocol.reply_dropped()

    def _release(self, addr: Any) -> None:
        held = self._held.pop(addr, None)
        if held is not None:
            note = ("reorder", f"reordered: no later reply within {ms(REORDER_HOLD)}, sent late")
            self._send_held(held[0], addr, note)

    def _forget(self, addr: Any) -> None:
        datagram, timer = self._held.pop(addr)
        self._unhold(datagram)
        if timer.active():
            timer.cancel()
        self._timers.discard(timer)

    def stop(self) -> None:
        """The port stops: no timer outlives it (held and delayed replies are not sent)."""
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._held.clear()
        self._budget.give(self.held_bytes)
        self.held_bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class FaultyDatagramProtocol(DatagramProtocol):
    """Wraps a datagram protocol so that its replies go through L{FaultyDatagrams}."""

    noisy = False

    def __init__(self, wrapped: DatagramProtocol, plan: FaultSource) -> None:
        self.wrapped = wrapped
        self.plan = plan
        self.faulty: FaultyDatagrams | None = None

    def makeConnection(self, transport: Any) -> None:
        self.plan.start()
        super().makeConnection(transport)
        self.faulty = FaultyDatagrams(transport, self)
        self.wrapped.makeConnection(self.faulty)  # type: ignore[arg-type]

    def doStop(self) -> None:
        if self.faulty is not None:
            self.faulty.stop()
        self.wrapped.doStop()
        super().doStop()

    def draws_for(self, addr: Any) -> Draws | None:
        """The source's share of the plan, once a datagram from it has arrived."""
        return self.plan.source(addr[:2]) if addr is not None else None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.plan.source(addr[:2]).note(datagram, datagram=True)
        self.wrapped.datagramReceived(datagram, addr)

    def reply_dropped(self, reason: str = "buffer") -> None:
        """A delayed reply the transport dropped: counted as the greeter counts it."""
        dropped = getattr(self.wrapped, "reply_dropped", None)
        if dropped is not None:
            dropped(reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)
