from twisted.trial.unittest import SynchronousTestCase

from echoapp.template import DEFAULT_REPLY, ReplyTemplate


class ReplyTemplateTests(SynchronousTestCase):
    def test_default_greets(self) -> None:
        self.assertEqual(DEFAULT_REPLY.render(b"Michael"), b"Hello, Michael!")

    def test_terminator_follows_the_suffix(self) -> None:
        self.assertEqual(DEFAULT_REPLY.render(b"x", b"\r\n"), b"Hello, x!\r\n")

    def test_classic_variant(self) -> None:
        self.assertEqual(ReplyTemplate.parse("Loop_Msg: {}!").render(b"hi"), b"Loop_Msg: hi!")

    def test_echo_template(self) -> None:
        self.assertEqual(ReplyTemplate.parse("{}").render(b"\xff\x00"), b"\xff\x00")

    def test_bytes_are_never_decoded(self) -> None:
        self.assertEqual(DEFAULT_REPLY.render(b"\xc3\x28\xff"), b"Hello, \xc3\x28\xff!")

    def test_other_braces_are_literal(self) -> None:
        self.assertEqual(ReplyTemplate.parse("{x} {} }{").render(b"m"), b"{x} m }{")

    def test_non_ascii_template_is_utf8(self) -> None:
        self.assertEqual(ReplyTemplate.parse("Grüß {}").render(b"dich"), "Grüß dich".encode())

    def test_needs_exactly_one_placeholder(self) -> None:
        for text, found in [("Hello", "0"), ("{} and {}", "2"), ("", "0")]:
            error = self.assertRaises(ValueError, ReplyTemplate.parse, text)
            self.assertIn("exactly one {} placeholder", str(error))
            self.assertIn(f"found {found}", str(error))

    def test_overhead_and_round_trip(self) -> None:
        template = ReplyTemplate.parse("Hello, {}!")
        self.assertEqual(template.overhead, len("Hello, !"))
        self.assertEqual(str(template), "Hello, {}!")
