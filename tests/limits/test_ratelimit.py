"""Token buckets and throttled logs."""

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from echoapp._limits.ratelimit import ThrottledLog, TokenBucket, TokenBuckets


class TokenBucketTests(SynchronousTestCase):
    def test_burst_then_rate(self) -> None:
        clock = Clock()
        buckets = TokenBuckets(rate=2, burst=3, max_sources=10, now=clock.seconds)
        self.assertEqual([buckets.allow("a") for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)
        self.assertEqual([buckets.allow("a") for _ in range(2)], [True, False])
        clock.advance(100)
        self.assertEqual(sum(buckets.allow("a") for _ in range(10)), 3)

    def test_single_bucket_burst_then_rate(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=2, burst=3, now=clock.seconds)
        self.assertEqual([bucket.allow() for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)
        self.assertEqual([bucket.allow() for _ in range(2)], [True, False])
        clock.advance(100)
        self.assertEqual(sum(bucket.allow() for _ in range(10)), 3)

    def test_least_recently_seen_is_forgotten(self) -> None:
        clock = Clock()
        buckets = TokenBuckets(rate=1, burst=1, max_sources=2, now=clock.seconds)
        buckets.allow("a")
        buckets.allow("b")
        buckets.allow("a")
        buckets.allow("c")  # forgets b, the least recently seen
        self.assertEqual(len(buckets), 2)
        self.assertTrue(buckets.allow("b"), "a forgotten source starts with a full bucket")
        self.assertFalse(buckets.allow("c"))


class ThrottledLogTests(SynchronousTestCase):
    def logged(self) -> list[tuple[object, object]]:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        return events  # type: ignore[return-value]

    @staticmethod
    def mine(events: list[dict[str, object]]) -> list[tuple[object, object]]:
        return [
            (e["count"], e["reasons"]) for e in events if e.get("log_format") == "Dropped {count} ({reasons})"
        ]

    def test_one_line_per_interval_and_the_rest_when_it_ends(self) -> None:
        events = self.logged()
        clock = Clock()
        throttled = ThrottledLog("Dropped {count} ({reasons})", interval=10)
        for _ in range(1000):
            throttled.note(clock, "rate")
        self.assertEqual(self.mine(events), [(1, "rate: 1")])
        clock.advance(10)
        self.assertEqual(self.mine(events), [(1, "rate: 1"), (999, "rate: 999")], "no later event needed")
        throttled.note(clock, "port")
        clock.advance(9.9)
        self.assertEqual(len(self.mine(events)), 2, "still one line per interval")
        clock.advance(0.1)
        self.assertEqual(self.mine(events)[-1], (1, "port: 1"))
        self.assertEqual(clock.getDelayedCalls(), [], "nothing held back, no timer")

    def test_flush_writes_what_is_held_and_stops_the_timer(self) -> None:
        events = self.logged()
        clock = Clock()
        throttled = ThrottledLog("Dropped {count} ({reasons})", interval=10)
        for _ in range(150):
            throttled.note(clock, "rate")
        throttled.flush()
        self.assertEqual(self.mine(events), [(1, "rate: 1"), (149, "rate: 149")])
        self.assertEqual(clock.getDelayedCalls(), [])
        throttled.flush()
        self.assertEqual(len(self.mine(events)), 2, "nothing held: nothing written")


class TakeOutTests(SynchronousTestCase):
    """A run of datagrams spends a bucket's tokens as C{allow} would, one lookup per run."""

    def test_taken_out_and_put_back_as_allow_decides(self) -> None:
        clock = Clock()
        one = TokenBuckets(rate=2, burst=3, max_sources=2, now=clock.seconds)
        run = TokenBuckets(rate=2, burst=3, max_sources=2, now=clock.seconds)
        for source, count, later in [
            ("a", 5, 0.0),
            ("b", 2, 0.4),
            ("a", 2, 1.0),
            ("c", 1, 0.1),
            ("a", 4, 0.0),
        ]:
            clock.advance(later)
            expected = [one.allow(source) for _ in range(count)]
            tokens = run.take_out(source, clock.seconds())
            got = []
            for _ in range(count):
                got.append(tokens >= 1.0)
                tokens -= 1.0 if tokens >= 1.0 else 0.0
            run.put_back(source, tokens, clock.seconds())
            self.assertEqual(got, expected)
        self.assertEqual(run._buckets, one._buckets, "the same sources remembered, in the same order")

    def test_global_bucket_taken_out_and_put_back(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=4, burst=2, now=clock.seconds)
        self.assertEqual(bucket.take_out(clock.seconds()), 2)
        bucket.put_back(0.5, clock.seconds())
        clock.advance(0.25)
        self.assertEqual((bucket.allow(), bucket.allow()), (True, False))
