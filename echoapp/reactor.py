"""
The C{uvloop} reactor: C{twistd --reactor=uvloop}, C{twist --reactor=uvloop},
C{trial --reactor=uvloop}.  Twisted's asyncio reactor, run on a uvloop event
loop instead of asyncio's own.
"""

from __future__ import annotations

import asyncio

__all__ = ["install"]


def install() -> None:
    """Install the reactor; a missing uvloop is a one-line error, not a traceback."""
    try:
        import uvloop
    except ImportError:
        raise SystemExit("--reactor=uvloop needs uvloop: pip install 'echoapp[fast]'") from None
    from twisted.internet import asyncioreactor

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
