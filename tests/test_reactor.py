"""twistd --reactor=uvloop: the reactor plugin, its error, and a real process on it."""

from __future__ import annotations

import subprocess
import sys

from twisted.application.reactors import getReactorTypes
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Twistd, tutorial_client


class UvloopReactorTests(SynchronousTestCase):
    def test_plugin_is_listed(self) -> None:
        self.assertIn("uvloop", {reactor.shortName for reactor in getReactorTypes()})

    def test_installs_asyncio_reactor_on_uvloop(self) -> None:
        code = (
            "from echoapp.reactor import install; install()\n"
            "from twisted.internet import reactor\n"
            "from echoapp._twisted import asyncio_loop\n"
            "print(type(reactor).__name__, type(asyncio_loop(reactor)).__module__)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        self.assertEqual(out.split(), ["AsyncioSelectorReactor", "uvloop"])

    def test_missing_uvloop_is_one_line(self) -> None:
        code = "import sys; sys.modules['uvloop'] = None\nfrom echoapp.reactor import install; install()\n"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "--reactor=uvloop needs uvloop: pip install 'echoapp[fast]'\n")

    def test_twistd_serves_on_uvloop(self) -> None:
        server = Twistd(["--reactor=uvloop", "echoapp-tcp", "--listen", "tcp:0:interface=127.0.0.1"])
        try:
            self.assertIn("AsyncioSelectorReactor", server.output)
            self.assertEqual(tutorial_client(server.address_port("echoapp-tcp"), [b"uv"])[1], b"Hello, uv!")
        finally:
            server.stop()
