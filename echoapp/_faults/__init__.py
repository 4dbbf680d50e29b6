"""
Network faults on demand, for people testing their clients against echoapp:
latency, bandwidth, slicing, resets, half-closes, slow closes, stalls,
refusals and slowed reads on the TCP services; latency, loss, duplication
and reordering on the UDP greeter; each for the connections (or datagram
sources) and moments its conditions choose.  Every random choice comes
from a generator derived from the seed and the connection's (or source's)
order of arrival, so a failing test reproduces exactly with the seed it
printed, concurrent clients too.

  - L{spec}: L{Faults}, what goes wrong, checked when made;
  - L{plan}: L{FaultPlan}, the one source of faults: named sets, each with
    a toxicity, merged by one rule, and the seeded draws;
  - L{stream}: the byte-stream wrapper, its pieces L{sending}, L{reading}
    and L{closing} (with L{held}, what waits); L{datagrams}: the UDP one.

The faults wrap a service's factory or datagram protocol, as
C{twisted.protocols.policies} wrappers do: with no plan nothing is
wrapped, and the path a request takes is the one the benchmark measures.
"""

from echoapp._faults.closing import CloseState, Refused
from echoapp._faults.datagrams import FaultyDatagramProtocol, FaultyDatagrams, HeldBytes
from echoapp._faults.plan import (
    IDLE_CLOSE,
    LIMIT_CLOSES,
    RESET_ON_CHUNK,
    Draws,
    FaultPlan,
    FaultSource,
    Shape,
)
from echoapp._faults.resets import reset
from echoapp._faults.sending import HELD_BYTES, PIECES_PER_PASS
from echoapp._faults.spec import DATAGRAM, PLAIN, STREAM, TLS, Faults, offered
from echoapp._faults.stream import FaultyConnection, FaultyFactory

__all__ = [
    "DATAGRAM",
    "HELD_BYTES",
    "IDLE_CLOSE",
    "LIMIT_CLOSES",
    "PIECES_PER_PASS",
    "PLAIN",
    "RESET_ON_CHUNK",
    "STREAM",
    "TLS",
    "CloseState",
    "Draws",
    "FaultPlan",
    "FaultSource",
    "Faults",
    "FaultyConnection",
    "FaultyDatagramProtocol",
    "FaultyDatagrams",
    "FaultyFactory",
    "HeldBytes",
    "Refused",
    "Shape",
    "offered",
    "reset",
]
