"""
The optional C accelerator is found once, where it was built, and turned
off by the environment (L{echoapp._accelerator}).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import echoapp
from echoapp import _accelerator
from tests.support import use_udp_accelerator

NAME = "echoapp._mmsg"


class AcceleratorTests(SynchronousTestCase):
    def importing_gives(self, module: Any) -> None:
        """
        Importing the accelerator gives C{module} (L{None}: it fails, as
        where it was never built) until the test ends.  The interpreter
        imports through its own C{sys.modules} dict, so that dict is
        changed, and the package's attribute, which C{from echoapp import
        _mmsg} reads first, is taken away.
        """
        missing = object()
        saved, attribute = sys.modules.get(NAME, missing), echoapp.__dict__.pop("_mmsg", missing)

        def restore() -> None:
            if saved is missing:
                sys.modules.pop(NAME, None)
            else:
                sys.modules[NAME] = saved  # type: ignore[assignment]
            if attribute is not missing:
                echoapp._mmsg = attribute  # type: ignore[attr-defined]

        self.addCleanup(restore)
        sys.modules[NAME] = module

    def test_turned_off_by_the_environment(self) -> None:
        find = _accelerator.accelerator.__wrapped__
        mmsg = use_udp_accelerator(self, True)
        self.importing_gives(mmsg)
        self.patch(os, "environ", {})
        self.assertIs(find(), mmsg)
        self.patch(os, "environ", {_accelerator.ACCELERATOR_OFF: "1"})
        self.assertIsNone(find())

    def test_not_built_is_none(self) -> None:
        find = _accelerator.accelerator.__wrapped__
        self.importing_gives(None)
        self.patch(os, "environ", {})
        self.assertIsNone(find())
