"""echoapp-compose reading other plugins' options."""

from __future__ import annotations

from typing import Any

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echoapp._tap.compose import parse_service


class Broken(usage.Options):
    def postOptions(self) -> None:
        raise RuntimeError("cannot\nparse this")


class BrokenMaker:
    tapname = "broken"
    options = Broken

    def makeService(self, options: Any) -> None:
        raise AssertionError("never made")


class ParseServiceTests(SynchronousTestCase):
    def test_a_plugin_whose_options_fail_otherwise_gives_one_line(self) -> None:
        with self.assertRaises(usage.UsageError) as raised:
            parse_service("broken", {"broken": BrokenMaker()})  # type: ignore[dict-item]
        self.assertEqual(str(raised.exception), "--service 'broken': broken failed: cannot parse this")
