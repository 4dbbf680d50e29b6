"""Option parsing for every plugin: defaults, replacements and one-line errors."""

import shutil
import tempfile
from typing import Any

from twisted.application.service import IServiceCollection, IServiceMaker
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoapp._framing import Framing
from echoapp._monitor import Monitored
from echoapp._record.service import RecordService
from echoapp._tap import compose, echo, everything, tcp, udp
from echoapp._tap.common import ListenOptions, RepeatableListen
from echoapp._transports.endpoints import UDPListen
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from tests.support import listeners


def parse(module: object, *args: str) -> usage.Options:
    options = module.Options()  # type: ignore[attr-defined]
    options.parseOptions(list(args))
    return options


def described(service: object) -> list[tuple[str, str]]:
    return [
        (listener.parent.name, getattr(listener, "description", None) or str(listener.listen))
        for listener in listeners(service)
    ]


class TCPOptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        options = parse(tcp)
        self.assertEqual([str(listen) for listen in options["endpoints"]], ["tcp:9999:interface=127.0.0.1"])
        self.assertEqual(options["config"], GreeterConfig())

    def test_everything_set(self) -> None:
        options = parse(
            tcp,
            "--listen=tcp:1:interface=127.0.0.1",
            "--listen",
            "unix:/tmp/g.sock",
            "--banner=Hello, I am server!",
            "--reply=Loop_Msg: {}!",
            "--exit-word=quit",
            "--farewell=",
            "--framing=line",
            "--max-line-length=10",
        )
        self.assertEqual(
            [str(listen) for listen in options["endpoints"]],
            ["tcp:1:interface=127.0.0.1", "unix:/tmp/g.sock"],
        )
        config = options["config"]
        self.assertEqual(
            (config.banner, config.reply.render(b"x"), config.exit_word, config.farewell),
            (b"Hello, I am server!", b"Loop_Msg: x!", b"quit", b""),
        )
        self.assertEqual((config.framing, config.max_line_length), (Framing.LINE, 10))

    def test_non_utf8_argument_bytes_survive(self) -> None:
        banner = b"caf\xe9".decode("utf-8", "surrogateescape")
        self.assertEqual(parse(tcp, "--banner", banner)["config"].banner, b"caf\xe9")

    def test_errors_are_one_line_usage_errors(self) -> None:
        cases = [
            (["--listen=foo:1"], "--listen: cannot listen on 'foo:1': unknown kind 'foo'"),
            (["--listen=tcp:port"], "--listen: cannot listen on 'tcp:port'"),
            (
                ["--reply=Hello"],
                "--reply: reply template 'Hello' must contain exactly one {} placeholder, found 0",
            ),
            (["--reply={} {}"], "found 2"),
            (["--framing=lines"], "--framing: unknown framing 'lines' (choose one of auto, line, raw)"),
            (["--max-line-length=0"], "--max-line-length: must be a positive whole number, got 0"),
            (["--max-line-length=-5"], "got -5"),
            (["--max-line-length=lots"], "got 'lots'"),
        ]
        for args, message in cases:
            error = self.assertRaises(usage.UsageError, parse, tcp, *args)
            self.assertIn(message, str(error), args)
            self.assertNotIn("\n", str(error))

    def test_help_documents_every_option_with_default(self) -> None:
        text = str(tcp.Options())
        for expected in (
            "--listen=",
            "tcp:9999:interface=127.0.0.1",
            "--banner=",
            "Welcome!",
            "--reply=",
            "Hello, {}!",
            "--exit-word=",
            "--farewell=",
            "--framing=",
            "[default: auto]",
            "--max-line-length=",
            "65536",
        ):
            self.assertIn(expected, text)

    def test_make_service(self) -> None:
        service = tcp.makeService(parse(tcp, "--listen=tcp:1", "--listen=tcp:2"))
        self.assertEqual(described(service), [("echoapp-tcp", "tcp:1"), ("echoapp-tcp", "tcp:2")])


class EchoOptionsTests(SynchronousTestCase):
    def test_default_and_replacement(self) -> None:
        self.assertEqual(
            [str(listen) for listen in parse(echo)["endpoints"]], ["tcp:10888:interface=127.0.0.1"]
        )
        self.assertEqual([str(listen) for listen in parse(echo, "--listen=tcp:7")["endpoints"]], ["tcp:7"])
        self.assertIn("tcp:10888:interface=127.0.0.1", str(echo.Options()))

    def test_no_greeter_options(self) -> None:
        self.assertRaises(usage.UsageError, parse, echo, "--banner=x")

    def test_bad_endpoint(self) -> None:
        self.assertIn(
            "--listen: cannot listen on 'nope'",
            str(self.assertRaises(usage.UsageError, parse, echo, "--listen=nope")),
        )


class UDPOptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        options = parse(udp)
        self.assertEqual(options["ports"], [UDPListen(9999, "127.0.0.1")])
        self.assertEqual(options["template"].render(b"x"), b"Hello, x!")
        self.assertIn("udp:9999:interface=127.0.0.1", str(udp.Options()))

    def test_repeatable_and_ipv6(self) -> None:
        options = parse(udp, "--listen=udp:1", "--listen=udp:2:interface=::1", "--reply={}")
        self.assertEqual(options["ports"], [UDPListen(1, ""), UDPListen(2, "::1")])
        self.assertEqual(options["template"].render(b"x"), b"x")

    def test_errors(self) -> None:
        for args, message in [
            (["--listen=udp:x"], "--listen: cannot listen on 'udp:x': port 'x'"),
            (["--listen=tcp:1"], "not a UDP listen description"),
            (["--reply=none"], "--reply: reply template 'none'"),
        ]:
            self.assertIn(message, str(self.assertRaises(usage.UsageError, parse, udp, *args)))


class ListenOptionsTests(SynchronousTestCase):
    """L{ListenOptions}: a plugin names its C{LISTEN}, and C{--listen} is made from it."""

    def test_listen_is_made_from_the_plugins_own_listen(self) -> None:
        class Options(ListenOptions):
            LISTEN = RepeatableListen("listen", "tcp:7", "A test's endpoint")

        options = Options()
        options.parseOptions(["--listen", "tcp:1", "--listen", "tcp:2"])
        self.assertEqual(Options.LISTEN.given(options), ["tcp:1", "tcp:2"])
        self.assertEqual(Options.LISTEN.given(Options()), ["tcp:7"], "none given: the default")
        self.assertIn("A test's endpoint to listen on; repeatable [default: tcp:7]", str(Options()))

    def test_each_plugin_lists_its_own_default(self) -> None:
        for plugin, default in [
            (tcp, "tcp:9999:interface=127.0.0.1"),
            (echo, "tcp:10888:interface=127.0.0.1"),
            (udp, "udp:9999:interface=127.0.0.1"),
        ]:
            self.assertIn(f"[default: {default}]", plugin.Options.opt_listen.__doc__)
            self.assertEqual(plugin.Options.synopsis, "[options]")


class EverythingOptionsTests(SynchronousTestCase):
    def test_defaults_share_port_9999(self) -> None:
        service = everything.makeService(parse(everything))
        self.assertEqual(
            described(service),
            [
                ("echoapp-tcp", "tcp:9999:interface=127.0.0.1"),
                ("echoapp-udp", "udp:9999:interface=127.0.0.1"),
                ("echoapp-echo", "tcp:10888:interface=127.0.0.1"),
            ],
        )

    def test_each_kind_replaces_only_its_default(self) -> None:
        service = everything.makeService(parse(everything, "--udp=udp:1", "--udp=udp:2", "--echo=tcp:7"))
        self.assertEqual(
            described(service),
            [
                ("echoapp-tcp", "tcp:9999:interface=127.0.0.1"),
                ("echoapp-udp", "udp:1"),
                ("echoapp-udp", "udp:2"),
                ("echoapp-echo", "tcp:7"),
            ],
        )

    def test_message_options_apply_to_both_greeters(self) -> None:
        service = everything.makeService(parse(everything, "--reply=Loop_Msg: {}!", "--banner=Hi"))
        tcp_listener, udp_listener, _ = listeners(service)
        self.assertEqual(tcp_listener.factory.config.reply.render(b"m"), b"Loop_Msg: m!")
        self.assertEqual(tcp_listener.factory.config.banner, b"Hi")
        self.assertEqual(udp_listener.protocol.reply.render(b"m"), b"Loop_Msg: m!")

    def test_errors_name_the_option(self) -> None:
        for args, message in [
            (["--tcp=bad"], "--tcp: cannot listen on 'bad'"),
            (["--udp=udp:1:interface=x"], "--udp: cannot listen on 'udp:1:interface=x'"),
            (["--echo=tcp:"], "--echo: cannot listen on 'tcp:'"),
            (["--framing=x"], "--framing: unknown framing"),
        ]:
            self.assertIn(message, str(self.assertRaises(usage.UsageError, parse, everything, *args)))


class ComposeOptionsTests(SynchronousTestCase):
    def test_composes_our_plugins_and_anyones(self) -> None:
        options = parse(
            compose,
            "--service",
            "echoapp-tcp --listen tcp:0:interface=127.0.0.1 --reply 'Loop_Msg: {}!'",
            "--service",
            "web --listen tcp:0:interface=127.0.0.1 --path .",
        )
        names = [maker.tapname for _, maker, _ in options["services"]]
        self.assertEqual(names, ["echoapp-tcp", "web"])
        self.assertEqual(options["services"][0][2]["config"].reply.render(b"x"), b"Loop_Msg: x!")
        service = compose.makeService(options)
        children = list(IServiceCollection(service))
        self.assertEqual(type(children[0]).__name__, "SignalService", "first: it starts before any listener")
        self.assertEqual(len(children), 3, "the two plugins' services and the signal handling")

    def test_process_parts_are_added_once_at_the_top(self) -> None:
        """Two of our plugins under compose: one SignalService, one metrics listener, both at the top."""
        options = parse(
            compose,
            "--metrics=tcp:0:interface=127.0.0.1",
            "--service",
            "echoapp-tcp --listen tcp:0:interface=127.0.0.1",
            "--service",
            "echoapp-udp --listen udp:0:interface=127.0.0.1",
        )
        service = compose.makeService(options)

        def walk(node: Any) -> list[str]:
            found = [type(node).__name__]
            for child in IServiceCollection(node, ()):
                found.extend(walk(child))
            return found

        kinds = walk(service)
        self.assertEqual(kinds.count("SignalService"), 1)
        self.assertEqual(kinds.count("Monitored"), 1)
        self.assertEqual(type(next(iter(IServiceCollection(service)))).__name__, "SignalService")

    def test_one_metrics_listener_per_process(self) -> None:
        options = parse(compose, "--service", "echoapp-echo --metrics tcp:0:interface=127.0.0.1")
        error = self.assertRaises(SystemExit, compose.makeService, options)
        self.assertIn("one metrics listener per process: give --metrics to echoapp-compose", str(error))

    def test_needs_a_service(self) -> None:
        self.assertIn("at least one --service", str(self.assertRaises(usage.UsageError, parse, compose)))

    def test_errors_name_the_service(self) -> None:
        cases = [
            ("no-such-plugin --x", "--service 'no-such-plugin --x': no twistd plugin named 'no-such-plugin'"),
            ("echoapp-tcp --bogus", "--service 'echoapp-tcp --bogus': option --bogus not recognized"),
            ("echoapp-tcp --reply x", "--service 'echoapp-tcp --reply x': --reply: reply template 'x'"),
            ("echoapp-udp --listen 'unclosed", "No closing quotation"),
            ("   ", "empty"),
        ]
        for spec, message in cases:
            error = self.assertRaises(usage.UsageError, parse, compose, "--service", spec)
            self.assertIn(message, str(error))
            self.assertNotIn("\n", str(error))


class LimitOptionsTests(SynchronousTestCase):
    def test_tcp_defaults_are_the_documented_limits(self) -> None:
        self.assertEqual(parse(tcp)["limits"], TCPLimits())
        self.assertEqual(parse(echo)["limits"], TCPLimits())
        self.assertEqual(parse(udp)["limits"], UDPLimits())
        options = parse(everything)
        self.assertEqual((options["tcp-limits"], options["udp-limits"]), (TCPLimits(), UDPLimits()))

    def test_tcp_limits_set(self) -> None:
        options = parse(
            tcp,
            "--max-connections=5",
            "--max-per-peer=2",
            "--idle-timeout=1.5",
            "--line-timeout=3",
            "--session-timeout=60",
            "--close-grace=0.25",
        )
        self.assertEqual(options["limits"], TCPLimits(5, 2, 1.5, 3.0, 60.0, 0.25))

    def test_limits_reach_the_factories(self) -> None:
        service = everything.makeService(parse(everything, "--max-per-peer=3", "--rate=7"))
        tcp_listener, udp_listener, echo_listener = listeners(service)
        self.assertEqual(tcp_listener.factory.limits.max_per_peer, 3)
        self.assertEqual(echo_listener.factory.limits.max_per_peer, 3)
        self.assertEqual(udp_listener.protocol.limits.rate, 7.0)

    def test_echo_has_no_line_timeout(self) -> None:
        self.assertRaises(usage.UsageError, parse, echo, "--line-timeout=3")

    def test_udp_limits_set(self) -> None:
        options = parse(udp, "--rate=2.5", "--burst=4", "--global-rate=100", "--max-sources=10")
        self.assertEqual(options["limits"], UDPLimits(2.5, 4, 100.0, 10))

    def test_bad_limits_are_one_line_errors(self) -> None:
        cases = [
            (tcp, ["--max-connections=0"], "--max-connections: must be a positive whole number, got 0"),
            (tcp, ["--max-per-peer=-1"], "--max-per-peer: must be a positive whole number"),
            (tcp, ["--idle-timeout=0"], "--idle-timeout: must be a positive number, got 0"),
            (tcp, ["--line-timeout=soon"], "--line-timeout: must be a positive number, got 'soon'"),
            (echo, ["--session-timeout=inf"], "--session-timeout: must be a positive number"),
            (echo, ["--close-grace=-2"], "--close-grace: must be a positive number"),
            (udp, ["--rate=0"], "--rate: must be a positive number"),
            (udp, ["--burst=1.5"], "--burst: must be a positive whole number"),
            (udp, ["--global-rate=nan"], "--global-rate: must be a positive number"),
            (everything, ["--max-sources=0"], "--max-sources: must be a positive whole number"),
        ]
        for module, args, message in cases:
            error = self.assertRaises(usage.UsageError, parse, module, *args)
            self.assertIn(message, str(error), args)


class MetricsOptionTests(SynchronousTestCase):
    def test_off_unless_given(self) -> None:
        self.assertNotIsInstance(tcp.makeService(parse(tcp)), Monitored)
        for module in (tcp, echo, udp, everything):
            service = module.makeService(parse(module, "--metrics=tcp:0:interface=127.0.0.1"))
            self.assertIsInstance(service, Monitored, module.__name__)
            self.assertEqual(service.metrics.description, "tcp:0:interface=127.0.0.1")
        composed = compose.makeService(parse(compose, "--metrics=tcp:0", "--service", "echoapp-echo"))
        self.assertIsInstance(composed, Monitored)

    def test_bad_metrics_endpoint(self) -> None:
        error = self.assertRaises(usage.UsageError, parse, echo, "--metrics=http:80")
        self.assertIn("--metrics: cannot listen on 'http:80'", str(error))


class BoundsTests(SynchronousTestCase):
    """Upper bounds on what one option can make the server hold or send, stated in --help."""

    def test_max_line_length(self) -> None:
        self.assertEqual(parse(tcp, "--max-line-length=1048576")["config"].max_line_length, 1 << 20)
        error = self.assertRaises(usage.UsageError, parse, tcp, "--max-line-length=1000000000000")
        self.assertEqual(str(error), "--max-line-length: at most 1048576, got 1000000000000")

    def test_reply_template_size(self) -> None:
        self.assertEqual(parse(udp, "--reply=" + "x" * 256 + "{}")["template"].overhead, 256)
        error = self.assertRaises(usage.UsageError, parse, udp, "--reply=" + "x" * 257 + "{}")
        self.assertEqual(str(error), "--reply: the template adds 257 bytes to each message; at most 256")
        self.assertRaises(usage.UsageError, parse, tcp, "--reply=" + "x" * 65000 + "{}")

    def test_ipv6_prefix(self) -> None:
        self.assertEqual(parse(tcp, "--ipv6-prefix=48")["limits"].ipv6_prefix, 48)
        self.assertEqual(parse(udp, "--ipv6-prefix=56")["limits"].ipv6_prefix, 56)
        self.assertRaises(usage.UsageError, parse, echo, "--ipv6-prefix=129")
        self.assertRaises(usage.UsageError, parse, echo, "--ipv6-prefix=0")

    def test_bounds_are_in_the_help(self) -> None:
        text = str(tcp.Options())
        self.assertIn("(Largest value: 1048576.)", " ".join(text.split()))
        self.assertIn("(Largest bytes added to a message: 256.)", " ".join(text.split()))


class ComposeFailureTests(SynchronousTestCase):
    """A plugin whose makeService fails: one line naming the --service and the error."""

    def maker(self, make: Any) -> Any:
        @implementer(IServiceMaker)
        class Maker:
            tapname = "broken"
            description = "fails"

            def options(self) -> usage.Options:
                return usage.Options()

            def makeService(self, options: usage.Options) -> Any:
                return make()

        return Maker()

    def test_raises(self) -> None:
        def boom() -> None:
            raise RuntimeError("no database\nat all")

        error = self.assertRaises(
            SystemExit, compose.make_one, "broken --x", self.maker(boom), usage.Options()
        )
        self.assertEqual(str(error), "--service 'broken --x': broken failed: no database at all")

    def test_returns_none(self) -> None:
        error = self.assertRaises(
            SystemExit, compose.make_one, "broken", self.maker(lambda: None), usage.Options()
        )
        self.assertEqual(str(error), "--service 'broken': broken made no service (got None)")

    def test_same_plugin_twice_gets_two_names(self) -> None:
        options = parse(
            compose,
            "--service",
            "echoapp-tcp --listen tcp:0:interface=127.0.0.1",
            "--service",
            "echoapp-tcp --listen tcp:0:interface=127.0.0.1 --banner Hi",
            "--service",
            "echoapp-tcp --listen tcp:0:interface=127.0.0.1 --banner Ho",
        )
        service = compose.makeService(options)
        names = [child.name for child in service][1:]  # after the signal handling, which is unnamed
        self.assertEqual(names, ["echoapp-tcp", "echoapp-tcp-2", "echoapp-tcp-3"])


class RecordOptionTests(SynchronousTestCase):
    """C{--record} on the daemons: the file gets the bytes; memory keeps events only."""

    def test_a_daemons_records_in_memory_keep_no_bytes(self) -> None:
        directory = tempfile.mkdtemp(prefix="echoapp-rec-")
        self.addCleanup(shutil.rmtree, directory, True)
        options = parse(tcp, "--listen", "tcp:0:interface=127.0.0.1", "--record", f"{directory}/d.pcapng")
        tree = tcp.service_tree(options, Clock())
        [record_service] = [child for child in tree if isinstance(child, RecordService)]
        record_service.startService()  # the capture file opens; the listener is not needed
        self.addCleanup(record_service.stopService)
        recorder = record_service.recorder
        [listener] = listeners(tree)
        protocol = listener.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 51234))
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 51234)))
        protocol.dataReceived(b"Hello\n")
        recorder.settle()
        [record] = recorder.records
        self.assertEqual([bytes(kept.head) + bytes(kept.tail) for kept in record.bytes.values()], [b"", b""])
        self.assertIn("open", {event.kind for event in record.events()})
