"""
What goes wrong (L{echoapp._faults.spec}): syntax, one-line errors, and C{--fault} on the plugins.
"""

from __future__ import annotations

import socket
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from echoapp import testing
from echoapp._faults import (
    Faults,
)
from tests.support import (
    installed_env,
)


class SyntaxTests(SynchronousTestCase):
    def test_parse(self) -> None:
        faults = Faults.parse("latency=50ms, jitter=10ms,bandwidth=16KB,slice=1,slice-delay=2ms,seed=7")
        self.assertEqual(
            (faults.latency, faults.jitter, faults.bandwidth, faults.slice, faults.slice_delay, faults.seed),
            (0.05, 0.01, 16000, 1, 0.002, 7),
        )
        self.assertEqual(Faults.parse("stall=read,refuse,loss=0.5").stall, "read")
        self.assertEqual(Faults.parse("reset-after=2s", Faults(latency=1)).latency, 1, "on top of a base")

    def test_one_unit_rule_everywhere(self) -> None:
        """
        K and M are decimal everywhere, as a toxic's rate in KB/s is 1000
        bytes a second: bandwidth=500KB in Python, on the command line and
        through the API is one speed; KiB and MiB are the binary units.
        """
        from echoapp._proxy.schema import toxic_from_json

        api = toxic_from_json({"type": "bandwidth", "attributes": {"rate": 500}}).faults.bandwidth
        self.assertEqual(
            (Faults(bandwidth="500KB").bandwidth, Faults.parse("bandwidth=500kb").bandwidth), (api, api)
        )
        self.assertEqual(api, 500_000)
        self.assertEqual(Faults(slice="2MB").slice, 2_000_000)
        self.assertEqual((Faults(slice="16KiB").slice, Faults(slice="1MiB").slice), (16384, 1 << 20))

    def test_one_line_errors(self) -> None:
        for text, reason in [
            ("bogus=1", "unknown fault 'bogus'"),
            ("latency=5", "fault latency: '5' is not a duration (like 50ms or 2s)"),
            ("loss=2", "fault loss: '2' is not a probability from 0 to 1"),
            ("stall=sometimes", "fault stall: stall is read or answer, not 'sometimes'"),
            ("refuse=3", "fault refuse: '3': this fault takes no value"),
            ("seed=x", "fault seed: seed 'x' is not a whole number"),
            ("latency=" + "9" * 400 + "s", "fault latency: '99999999999999999999'... is longer than a day"),
            ("slow-close=86401s", "fault slow-close: '86401s' is longer than a day"),
        ]:
            with self.assertRaises(ValueError) as raised:
                Faults.parse(text)
            self.assertIn(reason, str(raised.exception))
            self.assertNotIn("\n", str(raised.exception))

    def test_shown_as_typed(self) -> None:
        text = "latency=50ms,stall=read,refuse,loss=0.5,seed=3"
        self.assertEqual(str(Faults.parse(text)), text)
        self.assertEqual(Faults.parse(str(Faults.parse(text))), Faults.parse(text))

    def test_python_values_meet_the_text_rules(self) -> None:
        """
        Every kind of fault takes a value or the text C{--fault} would type,
        and both meet one rule: text is read, then checked as any value is.
        """
        self.assertEqual(
            Faults(latency="50ms", bandwidth="16KB", loss="0.5", refuse="yes", first="3", seed="7"),
            Faults.parse("latency=50ms,bandwidth=16KB,loss=0.5,refuse,first=3,seed=7"),
        )
        self.assertEqual(Faults(match="GET").match, b"GET")
        for field, value, reason in [
            ("match", "", "match: must be some bytes (or text) a message contains, got b''"),
            ("match", 5, "match: must be some bytes (or text) a message contains, got 5"),
            ("stall", 5, "stall: stall is read or answer, not 5"),
            ("stall", "never", "stall: stall is read or answer, not 'never'"),
            ("refuse", 1, "refuse: must be True or False, got 1"),
            ("first", -1, "first: must be a whole number from 0, got -1"),
            ("seed", True, "seed: must be a whole number from 0, got True"),
            ("seed", "x", "seed: seed 'x' is not a whole number"),
            ("latency", -1, "latency: must be 0 or more seconds (or text like '50ms'), got -1"),
            ("latency", "5", "latency: '5' is not a duration (like 50ms or 2s)"),
            (
                "slice",
                2.5,
                "slice: must be a whole number of bytes from 0 to 1TB (or text like '16KB'), got 2.5",
            ),
            ("loss", 2, "loss: must be a probability from 0 to 1, got 2"),
        ]:
            with self.assertRaises(ValueError) as raised:
                Faults(**{field: value})  # type: ignore[arg-type]
            self.assertEqual(str(raised.exception), reason)

    def test_off_means_off(self) -> None:
        self.assertFalse(Faults())
        self.assertFalse(Faults(seed=3, fraction=0.5), "a seed alone is no fault")
        self.assertTrue(Faults(refuse=True))


class PluginOptionTests(SynchronousTestCase):
    def test_fault_option_seed_printed_and_errors_in_one_line(self) -> None:
        with testing.Process("echoapp-tcp", "--fault", "latency=10ms", "--fault", "seed=42") as server:
            with socket.create_connection((server.host, server.port), timeout=5) as sock:
                self.assertEqual(sock.recv(100), b"Welcome!\r\n")
        self.assertIn("faults: latency=10ms,seed=42 (seed=42)", server.output)
        self.assertEqual(server.seed, 42)
        result = subprocess.run(
            ["twistd", "-n", "--pidfile=", "echoapp-tcp", "--fault", "latency=fast"],
            capture_output=True,
            text=True,
            env=installed_env(),
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("--fault: fault latency: 'fast' is not a duration (like 50ms or 2s)", result.stderr)
        self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_repeated_fault_options_do_not_depend_on_their_order(self) -> None:
        from echoapp._tap import tcp

        for order in (["slice-variation=4", "slice=16"], ["slice=16", "slice-variation=4"]):
            options = tcp.Options()
            options.parseOptions([arg for text in order for arg in ("--fault", text)])
            self.assertEqual(options["faults"], Faults(slice=16, slice_variation=4), order)

    def test_without_faults_nothing_is_wrapped(self) -> None:
        from echoapp._tap import tcp

        options = tcp.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        self.assertIsNone(options["faults"], "the benchmarked path: no wrapper at all")
