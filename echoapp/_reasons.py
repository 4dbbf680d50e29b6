"""
Why a connection is refused or closed and why a datagram is dropped: the
keys that the protocols pass around, the metrics label, and the logs all
use, with the words a client is told.  One table each, so a new reason is
added in one place and is counted, logged and said alike.
"""

from __future__ import annotations

# What a client is told when the server shuts down (or refuses it while it does).
SHUTTING_DOWN = "server shutting down"

# Why a connection is refused, and what its client is told.
REFUSALS = {
    "limit": "too many connections",
    "per-peer": "too many connections from your address",
    "fd": "server busy",
    "draining": SHUTTING_DOWN,
    # Behind a balancer: an untrusted sender, a malformed or missing PROXY
    # header.  Such a connection is closed without a word.
    "proxy": "bad PROXY protocol header",
}

# Why a connection timed out, and what a greeter client is told.
TIMEOUTS = {
    "idle": "idle timeout",
    "line": "line timeout",
    "session": "session time limit",
}

# Why a datagram got no reply (the client is told nothing: it is UDP).
# "buffer": uvloop's native transport holds over 1 MiB of replies already.
# "source": from an address that is no host (multicast, broadcast, 0.0.0.0):
# forged, and an answer would go to many hosts or be refused.
DROPS = ("port", "source", "rate", "size", "error", "buffer")

# The key a protocol's notice is asked for when the service stops.
SHUTDOWN = "shutdown"
