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
  - L{plan}: L{FaultPlan}, the faults now and the seeded draws;
  - L{stream}: the byte-stream wrapper; L{datagrams}: the UDP one.

The faults wrap a service's factory or datagram protocol, as
C{twisted.protocols.policies} wrappers do: with no plan nothing is
wrapped, and the path a request takes is the one the benchmark measures.
"""

from echoapp._faults.datagrams import FaultyDatagramProtocol, FaultyDatagrams
from echoapp._faults.plan import Draws, FaultPlan
from echoapp._faults.spec import DATAGRAM, PLAIN, STREAM, TLS, Faults, offered
from echoapp._faults.stream import (
    HELD_BYTES,
    PIECES_PER_PASS,
    FaultyConnection,
    FaultyFactory,
    Refused,
    reset,
)

__all__ = [
    "DATAGRAM",
    "HELD_BYTES",
    "PIECES_PER_PASS",
    "PLAIN",
    "STREAM",
    "TLS",
    "Draws",
    "FaultPlan",
    "Faults",
    "FaultyConnection",
    "FaultyDatagramProtocol",
    "FaultyDatagrams",
    "FaultyFactory",
    "Refused",
    "offered",
    "reset",
]
