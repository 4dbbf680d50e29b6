"""
How received bytes become messages, and which terminator each reply mirrors.

Two framings, both over bytes: I{line} (a message ends at LF; a CR just
before the LF belongs to the terminator) and I{raw} (each received chunk is
one message, the way a plain-socket client that C{send()}s without a newline
and then C{recv()}s expects).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

LF = b"\n"
CRLF = b"\r\n"
CR = 0x0D


class Framing(enum.Enum):
    """
    How a greeter turns bytes into messages: C{LINE} splits on LF (a CR
    before it is kept with the terminator), C{RAW} takes each chunk as it
    comes, C{AUTO} decides from the first chunk, so both C{nc} and
    line-oriented clients work unconfigured.
    """

    AUTO = "auto"
    LINE = "line"
    RAW = "raw"

    @classmethod
    def choose(cls, first_chunk: bytes) -> Framing:
        """
        What C{auto} becomes for a connection: line framing if the first
        chunk holds a LF, raw otherwise.
        """
        return cls.LINE if LF in first_chunk else cls.RAW


class LineTooLong(Exception):
    """A message is longer than the configured maximum."""


def split_terminator(chunk: bytes) -> tuple[bytes, bytes]:
    """
    Split the trailing run of CR/LF off a raw message, so that the reply can
    end with exactly what the message ended with (or nothing).
    """
    message = chunk.rstrip(b"\r\n")
    return message, chunk[len(message) :]


def raw_message(chunk: bytes, max_length: int) -> tuple[bytes, bytes]:
    """
    A raw chunk as C{(message, terminator)}, held to the same limit as a
    line: the terminator does not count.

    @raise LineTooLong: if the message is over C{max_length} bytes.
    """
    message, terminator = split_terminator(chunk)
    if len(message) > max_length:
        raise LineTooLong()
    return message, terminator


class LineSplitter:
    """
    Cuts a byte stream into LF-terminated lines, holding at most one partial
    line of at most C{max_length} bytes (+1 for a CR that may be the start of
    a CRLF), so memory stays bounded whatever a client sends.

    The limit is passed in on each call rather than kept: the connection's
    configuration holds it once, and an idle connection holds one slot less.

    The partial line is kept as a list of chunks and joined once, when its LF
    arrives: a client trickling one byte at a time costs linear, not
    quadratic, copying.
    """

    __slots__ = ("_pending", "_pending_length")  # one per connection

    def __init__(self) -> None:
        # No list until a partial line needs one: most connections never do,
        # and an idle connection should cost as little as possible.
        self._pending: list[bytes] | tuple[()] = ()
        self._pending_length = 0

    def feed(self, data: bytes, max_length: int) -> Iterator[tuple[bytes, bytes]]:
        """
        Yield C{(message, terminator)} for each line that C{data} completes.

        @raise LineTooLong: once the lines before the offending one have been
            yielded; the splitter is then of no further use.  The error is
            raised as soon as the length is certain, and never for a line
            that fits, so any chunking of a stream gives the same result.
        """
        if LF not in data:
            self._hold(data, max_length)
            return
        if self._pending:
            data = b"".join([*self._pending, data])
            self._pending = ()
            self._pending_length = 0
        start = 0
        while (end := data.find(LF, start)) >= 0:
            stop = end - 1 if end > start and data[end - 1] == CR else end
            if stop - start > max_length:
                raise LineTooLong()
            yield data[start:stop], data[stop : end + 1]
            start = end + 1
        self._hold(data[start:], max_length)

    def whole_lines(self, data: bytes, max_length: int) -> list[tuple[bytes, bytes]] | None:
        """
        The usual chunk, split in one pass: nothing held from before, LF at
        the end, and too short to hold a line over the limit.  Gives what
        L{feed} would yield, or L{None} to say that L{feed} must decide.
        """
        if self._pending or data[-1:] != LF or len(data) > max_length + 1:
            return None
        end = len(data) - 1
        if data.find(LF, 0, end) < 0:  # one line: request and response clients
            if end and data[end - 1] == CR:
                return [(data[: end - 1], CRLF)]
            return [(data[:end], LF)]
        lines = data.split(LF)
        lines.pop()  # the empty remainder after the final LF
        return [(line[:-1], CRLF) if line[-1:] == b"\r" else (line, LF) for line in lines]

    @property
    def pending(self) -> int:
        """Bytes of the partial line held so far."""
        return self._pending_length

    def _hold(self, partial: bytes, max_length: int) -> None:
        if not partial:
            return
        if self._pending:
            self._pending.append(partial)
        else:
            self._pending = [partial]
        self._pending_length += len(partial)
        excess = self._pending_length - max_length
        # One byte over may still be the CR of a CRLF; two bytes over cannot.
        if excess > 1 or (excess == 1 and partial[-1] != CR):
            raise LineTooLong()
