"""
The config dataclasses check themselves: a bad value is refused when built in
Python (C{services.*}, a C{.tac} file, C{echoapp.testing}) exactly as the
command line refuses it, with the same one-line reason.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echoapp import testing
from echoapp._fields import count, help_text, seconds, shown_default, typed, validate
from echoapp._framing import Framing
from echoapp._tap import echo, tcp, udp
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from echoapp.template import ReplyTemplate

# (config, field, bad Python value, the same value as typed, plugin that offers it)
BAD = [
    (TCPLimits, "idle_timeout", -5, "-5", tcp),
    (TCPLimits, "max_connections", 0, "0", tcp),
    (TCPLimits, "max_per_peer", -1, "-1", echo),
    (TCPLimits, "session_timeout", float("inf"), "inf", echo),
    (TCPLimits, "close_grace", 0.0, "0", tcp),
    (TCPLimits, "ipv6_prefix", 129, "129", tcp),
    (GreeterConfig, "max_line_length", 10**9, "1000000000", tcp),
    (GreeterConfig, "max_line_length", 0, "0", tcp),
    (GreeterConfig, "reply", "no placeholder", "no placeholder", tcp),
    (GreeterConfig, "reply", "x" * 257 + "{}", "x" * 257 + "{}", udp),
    (GreeterConfig, "framing", "lines", "lines", tcp),
    (UDPLimits, "rate", 0, "0", udp),
    (UDPLimits, "burst", 0, "0", udp),
    (UDPLimits, "max_sources", -3, "-3", udp),
]


def command_line_error(plugin: object, option: str, text: str) -> str:
    options = plugin.Options()  # type: ignore[attr-defined]
    try:
        options.parseOptions([f"--{option}={text}"])
    except usage.UsageError as error:
        return str(error)
    raise AssertionError(f"--{option}={text!r} was accepted")


class SameRulesEverywhereTests(SynchronousTestCase):
    def test_python_refuses_what_the_command_line_refuses(self) -> None:
        for config, name, value, text, plugin in BAD:
            error = self.assertRaises(ValueError, config, **{name: value})
            option = name.replace("_", "-")
            self.assertTrue(str(error).startswith(f"{option}: "), str(error))
            self.assertEqual(
                "--" + str(error), command_line_error(plugin, option, text), (config, name, value)
            )

    def test_test_peer_refuses_them_too(self) -> None:
        error = self.assertRaises(ValueError, testing.greeter, None, idle_timeout=-5)
        self.assertEqual(str(error), "idle-timeout: must be a positive number, got -5")
        error = self.assertRaises(ValueError, testing.greeter, None, max_line_length=10**9)
        self.assertIn("max-line-length: at most", str(error))

    def test_booleans_are_not_numbers(self) -> None:
        self.assertRaises(ValueError, TCPLimits, max_connections=True)
        self.assertRaises(ValueError, TCPLimits, idle_timeout=True)

    def test_wrong_types_are_refused_in_one_line(self) -> None:
        error = self.assertRaises(ValueError, TCPLimits, idle_timeout="50")
        self.assertEqual(str(error), "idle-timeout: must be a positive number, got '50'")
        error = self.assertRaises(ValueError, GreeterConfig, banner=5)
        self.assertEqual(str(error), "banner: must be bytes or text, got 5")


class ConversionTests(SynchronousTestCase):
    """What Python users may pass for convenience becomes what the protocols use."""

    def test_text_for_bytes_and_template(self) -> None:
        config = GreeterConfig(banner="Hi ✓", reply="<{}>", framing="line", exit_word="quit")
        self.assertEqual(config.banner, "Hi ✓".encode())
        self.assertEqual(config.reply, ReplyTemplate(b"<", b">"))
        self.assertIs(config.framing, Framing.LINE)
        self.assertEqual(config.exit_word, b"quit")

    def test_whole_seconds_become_floats(self) -> None:
        self.assertEqual(TCPLimits(idle_timeout=5).idle_timeout, 5.0)
        self.assertIsInstance(TCPLimits(idle_timeout=5).idle_timeout, float)

    def test_defaults_pass_their_own_rules(self) -> None:
        self.assertEqual(TCPLimits(), TCPLimits(**vars(TCPLimits())))
        GreeterConfig()
        UDPLimits()


class TypedKindTests(SynchronousTestCase):
    """
    L{typed}: the one rule for a field that takes the operator's text in
    Python too (the greeter's bytes and template, every fault).
    """

    def setUp(self) -> None:
        def even(value: object) -> int:
            if not isinstance(value, int) or value % 2:
                raise ValueError(f"must be even, got {value!r}")
            return value

        self.kind = typed(int, even)

    def test_text_is_read_then_checked_as_any_value(self) -> None:
        self.assertEqual(self.kind.check("4"), 4)
        self.assertEqual(str(self.assertRaises(ValueError, self.kind.check, "3")), "must be even, got 3")

    def test_a_value_is_checked_without_being_read(self) -> None:
        self.assertEqual(self.kind.check(6), 6)
        self.assertEqual(str(self.assertRaises(ValueError, self.kind.check, 4.0)), "must be even, got 4.0")

    def test_parse_is_the_command_line_reader(self) -> None:
        self.assertEqual(self.kind.parse("8"), 8)
        self.assertRaises(ValueError, self.kind.parse, "eight")

    def test_a_bad_template_text_is_refused_by_the_same_rule_as_a_value(self) -> None:
        long = "x" * 257 + "{}"
        as_text = str(self.assertRaises(ValueError, GreeterConfig, reply=long))
        as_value = str(self.assertRaises(ValueError, GreeterConfig, reply=ReplyTemplate.parse(long)))
        self.assertEqual(as_text, as_value)


@dataclass(frozen=True)
class Limits:
    """A config of the two field builders most limits use."""

    wait: float = seconds(2.0, "How long.")
    many: int = count(3, "How many.", most=5)

    def __post_init__(self) -> None:
        validate(self)


class FieldBuilderTests(SynchronousTestCase):
    """L{seconds} and L{count}: a limit's field said by its default and help alone."""

    def test_seconds_are_positive_and_become_floats(self) -> None:
        self.assertEqual(Limits(wait=1).wait, 1.0)
        self.assertIsInstance(Limits(wait=1).wait, float)
        self.assertEqual(
            str(self.assertRaises(ValueError, Limits, wait=0)), "wait: must be a positive number, got 0"
        )

    def test_counts_are_whole_and_bounded(self) -> None:
        self.assertEqual(Limits(many=5).many, 5)
        self.assertEqual(str(self.assertRaises(ValueError, Limits, many=6)), "many: at most 5, got 6")
        self.assertRaises(ValueError, Limits, many=2.0)

    def test_help_shows_the_default_and_the_bound(self) -> None:
        wait, many = fields(Limits)
        self.assertEqual((shown_default(wait), help_text(wait)), ("2", "How long."))
        self.assertEqual((shown_default(many), help_text(many)), ("3", "How many. (Largest value: 5.)"))


class ExitWordTests(SynchronousTestCase):
    """The exit-word rule has one home: L{GreeterConfig.exit_match}."""

    def test_an_empty_exit_word_matches_nothing(self) -> None:
        self.assertIsNone(GreeterConfig(exit_word=b"").exit_match)
        self.assertNotEqual(b"", GreeterConfig(exit_word=b"").exit_match)

    def test_the_word_itself(self) -> None:
        self.assertEqual(GreeterConfig(exit_word=b"bye").exit_match, b"bye")
