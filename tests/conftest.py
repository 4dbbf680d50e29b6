"""
pytest wiring.  The reactor is never imported here: pytest-twisted installs
it, and an import in this file would install the wrong one first.
"""

from __future__ import annotations

import unittest

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """
    Run trial TestCases before any plain pytest function.  pytest-twisted
    runs the reactor in a greenlet from its first test onwards, after which
    a trial TestCase can no longer spin the reactor itself.
    """

    def is_unittest(item: pytest.Item) -> bool:
        cls = getattr(item, "cls", None)
        return cls is not None and issubclass(cls, unittest.TestCase)

    items.sort(key=lambda item: not is_unittest(item))
