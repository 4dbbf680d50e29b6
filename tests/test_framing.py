from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from echoapp._framing import Framing, LineSplitter, LineTooLong, split_terminator
from tests.support import chunked, reference_lines


class SplitTerminatorTests(SynchronousTestCase):
    def test_cases(self) -> None:
        cases = {
            b"hello": (b"hello", b""),
            b"hello\n": (b"hello", b"\n"),
            b"hello\r\n": (b"hello", b"\r\n"),
            b"hello\r": (b"hello", b"\r"),
            b"a\nb\r\n\r\n": (b"a\nb", b"\r\n\r\n"),
            b"\r\n": (b"", b"\r\n"),
            b"\xff\xfe": (b"\xff\xfe", b""),
        }
        for chunk, expected in cases.items():
            self.assertEqual(split_terminator(chunk), expected, chunk)


class ChooseTests(SynchronousTestCase):
    def test_lf_means_lines(self) -> None:
        self.assertIs(Framing.choose(b"abc\n"), Framing.LINE)
        self.assertIs(Framing.choose(b"a\nbc"), Framing.LINE)

    def test_no_lf_means_raw(self) -> None:
        self.assertIs(Framing.choose(b"abc"), Framing.RAW)
        self.assertIs(Framing.choose(b"abc\r"), Framing.RAW)


class LineSplitterTests(SynchronousTestCase):
    def test_lf_and_crlf(self) -> None:
        splitter = LineSplitter()
        self.assertEqual(list(splitter.feed(b"a\nb\r\nc", 100)), [(b"a", b"\n"), (b"b", b"\r\n")])
        self.assertEqual(list(splitter.feed(b"d\n", 100)), [(b"cd", b"\n")])

    def test_cr_split_from_its_lf(self) -> None:
        splitter = LineSplitter()
        self.assertEqual(list(splitter.feed(b"abc\r", 100)), [])
        self.assertEqual(list(splitter.feed(b"\n", 100)), [(b"abc", b"\r\n")])

    def test_lone_cr_inside_a_line_is_content(self) -> None:
        self.assertEqual(list(LineSplitter().feed(b"a\rb\n", 100)), [(b"a\rb", b"\n")])

    def test_line_at_the_limit_fits(self) -> None:
        self.assertEqual(list(LineSplitter().feed(b"abc\r\n", 3)), [(b"abc", b"\r\n")])

    def test_complete_line_over_the_limit(self) -> None:
        splitter = LineSplitter()
        lines = []
        with self.assertRaises(LineTooLong):
            for line in splitter.feed(b"ok\nabcd\nlater\n", 3):
                lines.append(line)
        self.assertEqual(lines, [(b"ok", b"\n")])

    def test_partial_line_over_the_limit_fails_early(self) -> None:
        splitter = LineSplitter()
        self.assertEqual(list(splitter.feed(b"abc", 3)), [])
        self.assertRaises(LineTooLong, list, splitter.feed(b"d", 3))

    def test_partial_line_may_end_in_the_cr_of_crlf(self) -> None:
        splitter = LineSplitter()
        self.assertEqual(list(splitter.feed(b"abc\r", 3)), [])
        self.assertRaises(LineTooLong, list, splitter.feed(b"x", 3))

    def test_memory_is_bounded(self) -> None:
        splitter = LineSplitter()
        with self.assertRaises(LineTooLong):
            for _ in range(10_000):
                list(splitter.feed(b"x" * 100, 1024))
        self.assertLessEqual(splitter._pending_length, 1024 + 100)


def feed_all(
    chunks: list[bytes], max_length: int, fast: bool = False
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """With C{fast}, as the greeter does: L{LineSplitter.whole_lines} first."""
    splitter = LineSplitter()
    lines: list[tuple[bytes, bytes]] = []
    try:
        for chunk in chunks:
            whole = splitter.whole_lines(chunk, max_length) if fast else None
            lines.extend(splitter.feed(chunk, max_length) if whole is None else whole)
    except LineTooLong:
        return lines, True
    return lines, False


streams = st.lists(st.sampled_from([b"a", b"bc", b"\r", b"\n", b"\r\n", b"\xff", b"exit"]), max_size=60).map(
    b"".join
)


class LineSplitterProperties(SynchronousTestCase):
    @given(streams, st.lists(st.integers(min_value=0), max_size=20), st.integers(min_value=1, max_value=8))
    def test_any_chunking_gives_the_reference_lines(self, stream: bytes, cuts: list[int], limit: int) -> None:
        self.assertEqual(feed_all(chunked(stream, cuts), limit), reference_lines(stream, limit))

    @given(streams, st.lists(st.integers(min_value=0), max_size=20), st.integers(min_value=1, max_value=8))
    def test_the_fast_path_changes_nothing(self, stream: bytes, cuts: list[int], limit: int) -> None:
        self.assertEqual(feed_all(chunked(stream, cuts), limit, fast=True), reference_lines(stream, limit))

    def test_fast_path_takes_the_usual_chunks_only(self) -> None:
        splitter = LineSplitter()
        self.assertEqual(splitter.whole_lines(b"ab\r\n", 4), [(b"ab", b"\r\n")])
        self.assertEqual(splitter.whole_lines(b"a\nb\r\n", 4), [(b"a", b"\n"), (b"b", b"\r\n")])
        self.assertIsNone(splitter.whole_lines(b"ab", 4), "no final LF")
        self.assertIsNone(splitter.whole_lines(b"abcdef\n", 4), "may be over the limit")
        list(splitter.feed(b"ab", 4))
        self.assertIsNone(splitter.whole_lines(b"c\n", 4), "a partial line is held")
