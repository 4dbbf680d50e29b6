"""
pytest wiring.  The reactor is never imported here: pytest-twisted installs
it, and an import in this file would install the wrong one first.

Trial's TestCases run before the plain pytest functions: echoapp's own
pytest plugin (C{echoapp/_pytest_plugin.py}) orders every suite so, the
user's and this one alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def scratch_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """
    Run in a scratch directory, as trial runs in C{_trial_temp}: a trial
    C{TestCase.mktemp()} is relative to the working directory, and under
    pytest that was the checkout, which a run left holding C{tests.*/}
    folders of generated TLS keys.
    """
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)
