"""
Rate limits: token buckets for UDP replies, and logs that report an attack
at most once per interval with a count instead of a line per packet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger(namespace="echoapp.ratelimit")


class ThrottledLog:
    """
    Logs an attack at most once per C{interval} seconds with a count of what
    happened since, never one line per packet or connection.  What is held
    back is written when the interval ends (a timer), or at L{flush} when
    the listener stops, so the counts in the log add up to what happened.
    """

    def __init__(self, text: str, interval: float = 10.0) -> None:
        self.text = text
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._last: float | None = None
        self._pending: IDelayedCall | None = None

    def note(self, clock: IReactorTime, reason: str) -> None:
        """
        Count one event under C{reason}; the summary line is written at most
        once per interval, so a flood costs one line per interval.
        """
        self.counts[reason] = self.counts.get(reason, 0) + 1
        now = clock.seconds()
        if self._last is None or now - self._last >= self.interval:
            self._write(now)
        elif self._pending is None:
            self._pending = clock.callLater(self._last + self.interval - now, self._due, clock)

    def _due(self, clock: IReactorTime) -> None:
        self._pending = None
        self._write(clock.seconds())

    def flush(self) -> None:
        """Write what is held back now, and stop the timer: the listener is stopping."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._write(self._last)

    def _write(self, now: float | None) -> None:
        if not self.counts:
            return
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._last = now
        reasons = ", ".join(f"{why}: {n}" for why, n in sorted(self.counts.items()))
        log.warn(self.text, count=sum(self.counts.values()), reasons=reasons)
        self.counts = {}


class TokenBucket:
    """
    One token bucket: the global cap on replies.  Its refill-then-take rule
    is written out again in L{TokenBuckets.allow} on purpose: a shared helper
    measured 0.2 us more per bucket, twice per datagram (timeit, this VM).
    """

    def __init__(self, rate: float, burst: float, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = float(burst)
        self._then = now()

    def allow(self) -> bool:
        """Take one token if there is one: whether this reply may be sent now."""
        now = self._now()
        tokens = self._tokens + (now - self._then) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._then = now
        allowed = tokens >= 1.0
        self._tokens = tokens - 1.0 if allowed else tokens
        return allowed

    def take_out(self, now: float) -> float:
        """
        The tokens there are at C{now}, for a caller that spends them one by
        one itself (a batch of datagrams read at one time) and then gives
        back what is left with L{put_back}: the same as L{allow} per
        datagram at that time, without a call per datagram.
        """
        tokens = self._tokens + (now - self._then) * self.rate
        return tokens if tokens < self.burst else self.burst

    def put_back(self, tokens: float, now: float) -> None:
        """What is left of L{take_out}'s tokens, at the time they were taken."""
        self._tokens = tokens
        self._then = now


class TokenBuckets:
    """
    Per-source token buckets in a table of bounded size: the least recently
    seen source is forgotten first, so spoofed sources cannot grow memory
    (a forgotten source simply starts again with a full bucket).

    A plain dict keeps insertion order: taking a source out and putting it
    back makes it the newest, so the first key is the least recently seen.
    (Twice as fast as an OrderedDict here, on every datagram.)
    """

    def __init__(
        self, rate: float, burst: float, max_sources: int, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._now = now
        self._buckets: dict[Any, tuple[float, float]] = {}

    def allow(self, source: Any) -> bool:
        """
        Whether C{source} may get a reply now, by its own bucket; past
        C{max_sources}, the least recently seen source is forgotten.
        """
        now = self._now()
        buckets = self._buckets
        entry = buckets.pop(source, None)
        if entry is None:
            tokens = self.burst
            if len(buckets) >= self.max_sources:
                del buckets[next(iter(buckets))]
        else:
            tokens = entry[0] + (now - entry[1]) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        allowed = tokens >= 1.0
        buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def take_out(self, source: Any, now: float) -> float:
        """
        C{source}'s tokens at C{now}, its entry taken out of the table (a
        new source gets a full bucket, and past C{max_sources} the least
        recently seen is forgotten, as in L{allow}).  The caller spends them
        on a run of datagrams from C{source} and gives back the rest with
        L{put_back}: a source's bucket is found once per run, not once per
        datagram, with the same result as L{allow} for each at that time.
        """
        buckets = self._buckets
        entry = buckets.pop(source, None)
        if entry is None:
            if len(buckets) >= self.max_sources:
                del buckets[next(iter(buckets))]
            return float(self.burst)
        tokens = entry[0] + (now - entry[1]) * self.rate
        return tokens if tokens < self.burst else float(self.burst)

    def put_back(self, source: Any, tokens: float, now: float) -> None:
        """C{source}'s tokens left at C{now}: it is the most recently seen source."""
        self._buckets[source] = (tokens, now)

    def __len__(self) -> int:
        return len(self._buckets)
