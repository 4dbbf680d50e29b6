"""
toxiproxy's official clients, unchanged, against a real C{twistd
echoapp-proxy --api}: the Ruby client's own test suite (Shopify's
toxiproxy-ruby, 43 tests), and C{toxiproxy-cli} through every subcommand
and every toxic type, its transcript compared line by line with the real
toxiproxy's.  Both come from C{shared/tools} beside the checkout (CI's
fresh clone has it as C{../shared}); each test skips, saying why, where it
or Ruby is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import CHECKOUT, DEADLINE, LOOP, Twistd, free_port, real_toxiproxy

SHARED_TOOLS = os.environ.get(
    "ECHOAPP_SHARED_TOOLS", os.path.join(os.path.dirname(CHECKOUT), "shared", "tools")
)
RUBY_CLIENT = os.path.join(SHARED_TOOLS, "toxiproxy-clients", "ruby")
TOXIPROXY_DIR = os.path.join(SHARED_TOOLS, "toxiproxy")
CLI = os.path.join(TOXIPROXY_DIR, "toxiproxy-cli")
SERVER = os.path.join(TOXIPROXY_DIR, "toxiproxy-server")
# The Ruby suite talks to 8474 (one of its tests pins the port) and binds
# fixed ports of its own for its proxies.
RUBY_API_PORT = 8474
TOXIC_TYPES = {
    "latency": ["latency=10", "jitter=2"],
    "bandwidth": ["rate=100"],
    "slow_close": ["delay=10"],
    "timeout": ["timeout=100"],
    "reset_peer": ["timeout=100"],
    "slicer": ["average_size=10", "size_variation=2", "delay=5"],
    "limit_data": ["bytes=1000"],
    "noop": [],
}


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def echoapp_api(test: SynchronousTestCase, listen: str = LOOP) -> int:
    """C{echoapp-proxy --api LISTEN} in a twistd of its own, on this run's reactor: its port."""
    api = Twistd(["echoapp-proxy", "--api", listen])
    test.addCleanup(api.stop)
    return api.address_port("echoapp-proxy")


# The Ruby suite's tests that time a latency toxic to +-10 ms, and how many
# times those that failed are run again, alone, before a failure is real.
TIMED_RERUNS = 2
TIMED = {
    "test_apply_upstream_toxic",
    "test_apply_downstream_toxic",
    "test_apply_prolong_toxics",
    "test_apply_toxics_to_collection",
    "test_multiple_of_same_toxic_type",
}


class RubyClientSuiteTests(SynchronousTestCase):
    def test_the_ruby_clients_own_suite_passes(self) -> None:
        ruby = shutil.which("ruby")
        if ruby is None:
            raise SkipTest("ruby is not installed (Debian's ruby, ruby-minitest, ruby-webmock)")
        if not os.path.isdir(RUBY_CLIENT):
            raise SkipTest(f"no toxiproxy-ruby at {RUBY_CLIENT} (shared/tools beside the checkout)")
        needs = subprocess.run(
            [ruby, "-e", 'require "minitest"; require "webmock"'], capture_output=True, timeout=DEADLINE
        )
        if needs.returncode != 0:
            raise SkipTest("ruby lacks minitest or webmock (Debian's ruby-minitest, ruby-webmock)")
        if port_taken(RUBY_API_PORT):
            raise SkipTest(f"127.0.0.1:{RUBY_API_PORT} is taken: the Ruby suite needs that port")
        echoapp_api(self, f"tcp:{RUBY_API_PORT}:interface=127.0.0.1")
        copy = tempfile.mkdtemp(prefix="echoapp-ruby-")
        self.addCleanup(shutil.rmtree, copy, True)
        shutil.copytree(RUBY_CLIENT, copy, dirs_exist_ok=True)

        def run(*only: str) -> tuple[tuple[int, ...], str]:
            result = subprocess.run(
                [ruby, "-Ilib", "-Itest", "test/toxiproxy_test.rb", *only],
                cwd=copy,
                capture_output=True,
                text=True,
                timeout=DEADLINE * 15,
            )
            summary = re.search(r"(\d+) runs, \d+ assertions, (\d+) failures, (\d+) errors", result.stdout)
            self.assertIsNotNone(summary, result.stdout[-2000:] + result.stderr[-2000:])
            assert summary is not None
            return tuple(int(group) for group in summary.groups()), result.stdout

        counts, output = run()
        self.assertEqual(counts[0], 43, output[-6000:])
        failed = re.findall(r"Failure:\s*\n?\s*ToxiproxyTest#(test_\w+)", output)
        for _ in range(TIMED_RERUNS):
            if not (counts[2] == 0 and failed and len(failed) == counts[1] and set(failed) <= TIMED):
                break
            # The suite's timed tests allow +-10 ms, which a loaded two-core
            # machine can miss (its README says: rerun before calling a
            # failure real; CI runs this beside the rest of the suite): the
            # timed ones that failed, alone, again.
            counts, output = run("-n", f"/^({'|'.join(failed)})$/")
            failed = re.findall(r"Failure:\s*\n?\s*ToxiproxyTest#(test_\w+)", output)
            if counts[1:] == (0, 0):
                return
        self.assertEqual(counts, (43, 0, 0), output[-6000:])


def transcript(api_port: int, upstream: str) -> list[tuple[int, str, str]]:
    """
    Every C{toxiproxy-cli} subcommand, and C{toxic add/update/remove} for
    every toxic type on both streams, against the API on C{api_port}: what
    each printed and its exit status, ports and the version left out.
    """
    host = ["-h", f"http://127.0.0.1:{api_port}"]
    runs: list[list[str]] = [
        ["create", "-l", "127.0.0.1:0", "-u", upstream, "p"],
        ["create", "-l", "127.0.0.1:0", "-u", upstream, "p"],
        ["list"],
    ]
    for kind, attributes in TOXIC_TYPES.items():
        for stream in ("--upstream", "--downstream"):
            name = f"{kind}{stream}"
            given = [arg for attribute in attributes for arg in ("-a", attribute)]
            changed = [arg for attribute in attributes for arg in ("-a", attribute.replace("=", "=1"))]
            runs += [
                ["toxic", "add", "-n", name, "-t", kind, stream, "--tox", "0.5", *given, "p"],
                ["toxic", "update", "-n", name, "--tox", "0.75", *changed, "p"],
            ]
    runs += [["inspect", "p"], ["list"]]
    runs += [["toxic", "remove", "-n", f"{kind}--upstream", "p"] for kind in TOXIC_TYPES]
    runs += [
        ["toxic", "add", "-t", "bogus", "p"],
        ["toxic", "update", "-n", "nothing", "-a", "latency=1", "p"],
        ["toxic", "remove", "-n", "nothing", "p"],
        ["inspect", "p"],
        ["toggle", "p"],
        ["list"],
        ["toggle", "p"],
        ["inspect", "nothing"],
        ["delete", "p"],
        ["delete", "p"],
        ["list"],
        ["--version"],
    ]
    seen = []
    for args in runs:
        result = subprocess.run(
            [CLI, *host, *args], capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL
        )
        output = re.sub(r"127\.0\.0\.1:\d+", "ADDRESS", result.stdout + result.stderr)
        seen.append((result.returncode, " ".join(args), output))
    return seen


class ToxiproxyCliTests(SynchronousTestCase):
    def test_every_subcommand_and_toxic_type_as_against_toxiproxy(self) -> None:
        if not os.access(CLI, os.X_OK) or not os.access(SERVER, os.X_OK):
            raise SkipTest(f"no toxiproxy-cli and toxiproxy-server in {TOXIPROXY_DIR}")
        upstream = f"127.0.0.1:{free_port()}"
        theirs_port = real_toxiproxy(self, SERVER)
        theirs = transcript(theirs_port, upstream)
        ours = transcript(echoapp_api(self), upstream)
        self.assertEqual(len([run for run in theirs if run[0] == 0]), 51, "six of the calls are refused")
        self.maxDiff = None
        self.assertEqual([run for run, other in zip(ours, theirs, strict=True) if run != other], [])
