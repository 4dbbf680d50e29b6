"""
pytest wiring.  The reactor is never imported here: pytest-twisted installs
it, and an import in this file would install the wrong one first.

Trial's TestCases run before the plain pytest functions: echoapp's own
pytest plugin (C{echoapp/_pytest_plugin.py}) orders every suite so, the
user's and this one alike.
"""
