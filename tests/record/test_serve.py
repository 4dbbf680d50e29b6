"""
A store's records served from memory (L{echoapp._record.serve}): a capture
made for a server a record at a time, the reactor running between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock, Cooperator
from twisted.trial.unittest import SynchronousTestCase

from echoapp._record import CLIENT, SERVER, Recorder
from echoapp._record.serve import PCAPNG, TEXT, served, served_in_turns


def recorded(connections: int) -> Recorder:
    clock = Clock()
    recorder = Recorder(clock)
    for number in range(connections):
        record = recorder.open("tcp", "t", ("127.0.0.1", 40000 + number), ("127.0.0.1", 9999))
        clock.advance(0.001)
        record.data(CLIENT, b"Hello %d\n" % number)
        clock.advance(0.001)
        record.data(SERVER, b"Hello, Hello %d!\n" % number)
    return recorder


class ServedInTurnsTests(SynchronousTestCase):
    def test_a_capture_is_made_a_record_a_turn(self) -> None:
        """
        Each of the cooperator's turns makes one record's packets; the
        capture, once made, is the one L{served} makes in one go (8 MiB of
        records made at once held every connection for 170 ms, 670 ms on
        uvloop).
        """
        recorder = recorded(3)
        turns: list[Callable[[], Any]] = []
        cooperator = Cooperator(terminationPredicateFactory=lambda: lambda: True, scheduler=turns.append)
        made: list[tuple[str, bytes]] = []
        served_in_turns(recorder, pcapng=True, cooperator=cooperator).addCallback(made.append)
        ran = 0
        while turns and not made:
            turns.pop(0)()
            ran += 1
        self.assertEqual(made, [served(recorder, pcapng=True)])
        self.assertEqual(made[0][0], PCAPNG)
        self.assertGreaterEqual(ran, 3, "a turn per record at least")

    def test_text_is_made_at_once(self) -> None:
        recorder = recorded(1)
        made: list[tuple[str, bytes]] = []
        served_in_turns(recorder).addCallback(made.append)
        self.assertEqual(made, [(TEXT, served(recorder)[1])])
        self.assertIn(b"Hello 0", made[0][1])
