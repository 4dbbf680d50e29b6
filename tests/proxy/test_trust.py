"""
The API's trust model (L{echoapp._proxy.trust}): a client of the API makes
proxies where the API itself listens (and on loopback), on unprivileged
ports, to TCP upstreams; every wider thing only where the operator's
command line allows it; the operator's own proxies keep every freedom.
"""

from __future__ import annotations

import os
import tempfile

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echoapp._proxy.errors import ListenNotAllowed, UpstreamNotAllowed
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.trust import Allowance
from echoapp._tap.proxy import Options
from tests.support import LOOP

LOOPBACK_API = Allowance.of_api("tcp:8474:interface=127.0.0.1")


def admitted(
    listen: str, upstream: str = "127.0.0.1:1", allowance: Allowance = LOOPBACK_API, kind: str = "tcp"
) -> str:
    return allowance.admit(ProxySpec("p", listen, upstream, protocol=kind)).listen


class ListenTests(SynchronousTestCase):
    def test_every_interface_is_refused_by_default(self) -> None:
        for listen in [
            "0.0.0.0:2375",
            "[::]:0",
            "tcp:0:interface=0.0.0.0",
            "tcp6:0:interface=::",
            "10.1.2.3:5000",
        ]:
            with self.subTest(listen=listen):
                error = self.assertRaises(ListenNotAllowed, admitted, listen)
                self.assertIn("--api-allow-listen", str(error))

    def test_a_name_is_refused_but_localhost(self) -> None:
        self.assertRaises(ListenNotAllowed, admitted, "example.com:5000")
        self.assertEqual(admitted("localhost:22222"), "localhost:22222", "the Ruby client's suite listens so")

    def test_no_host_means_the_apis_own_interface(self) -> None:
        expected = {
            "": "127.0.0.1:0",
            ":0": "127.0.0.1:0",
            ":5000": "127.0.0.1:5000",
            "tcp:0": "tcp:0:interface=127.0.0.1",
            "tcp6:0": "tcp:0:interface=127.0.0.1",
            "haproxy:tcp:0": "haproxy:tcp:0:interface=127.0.0.1",
        }
        self.assertEqual({listen: admitted(listen) for listen in expected}, expected)
        udp = {"udp:0": "udp:0:interface=127.0.0.1", ":0": "127.0.0.1:0", "udp::0": "udp:127.0.0.1:0"}
        self.assertEqual({listen: admitted(listen, "udp:127.0.0.1:53", kind="udp") for listen in udp}, udp)
        on_six = Allowance.of_api("tcp6:8474:interface=::1")
        self.assertEqual(admitted(":0", allowance=on_six), "[::1]:0")
        self.assertEqual(admitted("tcp:0", allowance=on_six), "tcp6:0:interface=\\:\\:1")

    def test_loopback_is_always_allowed(self) -> None:
        for listen in ["127.0.0.1:0", "127.0.0.2:0", "[::1]:0", "tcp:0:interface=127.0.0.1"]:
            self.assertEqual(admitted(listen), listen)

    def test_an_api_on_every_interface_makes_proxies_there(self) -> None:
        everywhere = Allowance.of_api("tcp:8474")
        self.assertEqual(admitted(":0", allowance=everywhere), ":0")
        self.assertEqual(admitted("0.0.0.0:5000", allowance=everywhere), "0.0.0.0:5000")

    def test_the_operator_allows_more_interfaces(self) -> None:
        wider = Allowance(interfaces=("0.0.0.0",))
        self.assertEqual(admitted("0.0.0.0:2375", allowance=wider), "0.0.0.0:2375")
        self.assertEqual(admitted("10.1.2.3:5000", allowance=wider), "10.1.2.3:5000")
        self.assertRaises(ListenNotAllowed, admitted, "[::]:0", allowance=wider)
        one = Allowance(interfaces=("10.1.2.3",))
        self.assertEqual(admitted("10.1.2.3:5000", allowance=one), "10.1.2.3:5000")
        self.assertRaises(ListenNotAllowed, admitted, "10.1.2.4:5000", allowance=one)

    def test_privileged_ports(self) -> None:
        for listen in ["127.0.0.1:80", "tcp:443:interface=127.0.0.1", ":22"]:
            error = self.assertRaises(ListenNotAllowed, admitted, listen)
            self.assertIn("--api-allow-privileged-ports", str(error))
        self.assertEqual(admitted("127.0.0.1:80", allowance=Allowance(privileged=True)), "127.0.0.1:80")
        self.assertEqual(admitted("127.0.0.1:1024"), "127.0.0.1:1024")

    def test_unix_paths(self) -> None:
        directory = os.path.realpath(tempfile.mkdtemp())
        self.addCleanup(os.rmdir, directory)
        inside = f"unix:{directory}/a.sock"
        error = self.assertRaises(ListenNotAllowed, admitted, inside)
        self.assertIn("--api-allow-unix", str(error))
        allowed = Allowance(unix=(directory,))
        self.assertEqual(admitted(inside, allowance=allowed), inside)
        for outside in [f"unix:{directory}/../a.sock", "unix:/tmp/a.sock", "unix:a.sock"]:
            self.assertRaises(ListenNotAllowed, admitted, outside, allowance=allowed)

    def test_other_listeners_are_the_operators(self) -> None:
        for listen in ["systemd:domain=INET:index=0", "ssl:0:privateKey=/etc/ssl/private/k.pem"]:
            self.assertRaises(ListenNotAllowed, admitted, listen)
        directory = os.path.realpath(tempfile.mkdtemp())
        self.addCleanup(os.rmdir, directory)
        keys = f"ssl:0:privateKey={directory}/k.pem:certKey={directory}/c.pem"
        self.assertEqual(admitted(keys, allowance=Allowance(tls=(directory,))), keys + ":interface=127.0.0.1")


class UpstreamTests(SynchronousTestCase):
    def test_tcp_upstreams_connect_anywhere_as_toxiproxy(self) -> None:
        for upstream in ["localhost:3306", "10.0.0.1:5432", "tcp:host=::1:port=80", "tls:example.com:443"]:
            self.assertEqual(admitted("127.0.0.1:0", upstream), "127.0.0.1:0")

    def test_a_unix_upstream_is_refused_unless_allowed(self) -> None:
        directory = os.path.realpath(tempfile.mkdtemp())
        self.addCleanup(os.rmdir, directory)
        error = self.assertRaises(UpstreamNotAllowed, admitted, "127.0.0.1:0", "unix:/var/run/docker.sock")
        self.assertIn("--api-allow-unix", str(error))
        allowed = Allowance(unix=(directory,))
        self.assertEqual(admitted("127.0.0.1:0", f"unix:{directory}/s", allowed), "127.0.0.1:0")
        self.assertRaises(UpstreamNotAllowed, admitted, "127.0.0.1:0", "unix:/var/run/docker.sock", allowed)
        link = os.path.join(directory, "out")
        os.symlink("/var/run", link)
        self.addCleanup(os.remove, link)
        self.assertRaises(UpstreamNotAllowed, admitted, "127.0.0.1:0", f"unix:{link}/docker.sock", allowed)

    def test_files_and_inner_endpoints_are_the_operators(self) -> None:
        for upstream in [
            "ssl:host=a:port=1:certKey=/etc/ssl/c.pem:privateKey=/etc/ssl/private/k.pem",
            "tls:a:443:endpoint=unix\\:/var/run/docker.sock",
            "systemd:domain=INET:index=0",
        ]:
            with self.subTest(upstream=upstream):
                error = self.assertRaises(UpstreamNotAllowed, admitted, "127.0.0.1:0", upstream)
                self.assertNotIn("\n", str(error))


class OptionTests(SynchronousTestCase):
    def parsed(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_the_default_allowance_is_the_apis_interface(self) -> None:
        self.assertEqual(self.parsed("--api", LOOP)["allowance"], Allowance("127.0.0.1"))

    def test_each_allowance(self) -> None:
        directory = os.path.realpath(tempfile.mkdtemp())
        self.addCleanup(os.rmdir, directory)
        options = self.parsed(
            "--api", LOOP, "--api-allow-listen", "0.0.0.0", "--api-allow-listen", "[::1]",
            "--api-allow-unix", directory, "--api-allow-tls", directory, "--api-allow-privileged-ports",
        )  # fmt: skip
        self.assertEqual(
            options["allowance"], Allowance("127.0.0.1", ("0.0.0.0", "::1"), (directory,), (directory,), True)
        )

    def test_mistakes_are_one_line(self) -> None:
        for args, words in [
            (
                ["--api-allow-listen", "0.0.0.0", "--listen", LOOP, "--upstream", "127.0.0.1:1"],
                "only with --api",
            ),
            (["--api", LOOP, "--api-allow-listen", "everywhere"], "not an IP address"),
            (["--api", LOOP, "--api-allow-unix", "/nonexistent/echoapp"], "not a directory"),
        ]:
            error = self.assertRaises(usage.UsageError, self.parsed, *args)
            self.assertIn(words, str(error))

    def test_the_operators_proxies_keep_every_freedom(self) -> None:
        options = self.parsed("--api", LOOP, "--listen", "0.0.0.0:0", "--upstream", "unix:/var/run/x.sock")
        [(spec, _)] = options["proxies"]
        self.assertEqual((spec.listen, spec.upstream), ("0.0.0.0:0", "unix:/var/run/x.sock"))
