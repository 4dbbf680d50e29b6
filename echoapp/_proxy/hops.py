"""
Forwarding loops (A to B to A, or A to itself), told apart from clients.

This process's upstream connections by their two ends (local, remote),
each with the client's side whose bytes it carries (L{UPSTREAMS}); and the
connections that arrived at its proxies by theirs (peer, own address:
L{ARRIVED}).  A connection whose ends are an upstream connection's has come
from it: if it reached a proxy that side's bytes passed already it has
come round and is cut, else (a chain) it carries what they passed.  Told
from whichever side is known second: a proxy may accept the connection
before the side that made it hears it is connected (told from the arriving
side alone, almost every loop went on, hop after hop).  Both ends: a local
client may use the port number of an upstream connection to another
address (Linux shares an ephemeral port across destinations), and by that
port alone it was cut as a loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from echoapp._peers import host_of

Ends = tuple[tuple[str, int], tuple[str, int]]
UPSTREAMS: dict[Ends, Any] = {}  # by ends: the client's side whose upstream connection it is
ARRIVED: dict[Ends, Any] = {}  # by ends: the client's side of a connection that arrived
# Upstream connections being made (not yet connected or failed), by reactor.
_ATTEMPTS: WeakKeyDictionary[Any, int] = WeakKeyDictionary()


def _key(address: Any) -> tuple[str, int] | None:
    """
    An end as its host and port, an IPv4-mapped host as IPv4: an upstream
    written C{[::ffff:127.0.0.1]:PORT} connects from an IPv6 socket, and
    the proxy it reaches sees it arrive over IPv4.
    """
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return (host_of(host), port) if isinstance(host, str) and isinstance(port, int) else None


def ends(near: Any, far: Any) -> Ends | None:
    """A TCP connection's two ends, as L{UPSTREAMS} and L{ARRIVED} key them; L{None} if not IP."""
    both = (_key(near), _key(far))
    return None if both[0] is None or both[1] is None else both  # type: ignore[return-value]


def attempting(clock: Any) -> bool:
    """Is one of C{clock}'s upstream connections being made (one arriving may be it)?"""
    return bool(_ATTEMPTS.get(clock))


def attempt(clock: Any) -> Callable[[object], object]:
    """An upstream connection on C{clock} begins: the callback for its attempt's end."""
    _ATTEMPTS[clock] = _ATTEMPTS.get(clock, 0) + 1

    def over(result: object) -> object:
        _ATTEMPTS[clock] -= 1
        return result

    return over
