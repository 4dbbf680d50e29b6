"""
Every connection deadline (idle, session, and the line timeout) in one
mechanism: one-second slots, each one timer for every connection due in
that second.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

# A deadline this close is met: re-arming a timer for a rounding error would
# only fire it again a moment later.
SLACK = 1e-3


class Deadlines:
    """
    The deadlines of a listener's connections, checked in one-second slots.
    A timer per connection would cost ~0.5 KiB each (10,000 idle connections
    hold 5 MiB of them); a slot entry costs a set member.  A deadline is
    therefore met up to a second late, never early.  Activity moves no
    timer: each connection notes the time, and when its slot comes it
    checks (C{check_deadlines}), and either closes or takes a later slot.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._slots: dict[int, set[Any]] = {}
        self._timers: dict[int, IDelayedCall] = {}

    @staticmethod
    def slot(when: float) -> int:
        """The slot a deadline at C{when} falls in: rounded up to a whole second."""
        return math.ceil(when - SLACK)

    def add(self, protocol: Any, when: float) -> int:
        """Check C{protocol} at C{when}, rounded up to a whole second; the slot is the key to L{remove}."""
        slot = self.slot(when)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = set()
            delay = max(0.0, slot - self._clock.seconds())
            self._timers[slot] = self._clock.callLater(delay, self._due, slot)
        members.add(protocol)
        return slot

    def remove(self, protocol: Any, slot: int) -> None:
        """
        Drop C{protocol}'s deadline from C{slot}: it finished or left before
        its time.
        """
        members = self._slots.get(slot)
        if members is None:
            return
        members.discard(protocol)
        if not members:
            del self._slots[slot]
            self._timers.pop(slot).cancel()

    def _due(self, slot: int) -> None:
        del self._timers[slot]
        for protocol in self._slots.pop(slot, ()):
            protocol.check_deadlines()

    def __len__(self) -> int:
        return sum(map(len, self._slots.values()))
