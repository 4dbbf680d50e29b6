"""
The welcome/echo/exit TCP greeter: a banner on connect, one templated reply
per message, and the exit word closes the connection.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from zope.interface import implementer

from echoapp._framing import Framing, LineSplitter, LineTooLong, raw_message
from echoapp._limits.guard import Connections, GuardedFactory, GuardedProtocol
from echoapp._metrics import TCPStats
from echoapp._reasons import SHUTDOWN, TIMEOUTS
from echoapp.config import GreeterConfig

_AUTO, _LINE, _RAW = Framing.AUTO, Framing.LINE, Framing.RAW

CRLF = b"\r\n"


@implementer(IHalfCloseableProtocol)
class Greeter(GuardedProtocol):
    """
    One connection's state machine: the framing it settled on, its partial
    line, and whether it is finished.  Every chunk is answered with a single
    write of all its replies, in order.  A client that half-closes after its
    last message still gets every reply before the connection closes.
    """

    def __init__(self, config: GreeterConfig) -> None:
        self.config = config
        self._exit = config.exit_match
        self._framing = config.framing
        self._lines = LineSplitter()
        self._finished = False
        self._too_long = False

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.config.banner:
            self.transport.write(self.config.banner + CRLF)
            self.stats.bytes_out += len(self.config.banner) + 2

    def notice(self, key: str) -> bytes:
        if key == SHUTDOWN:
            return self.config.farewell + CRLF if self.config.farewell else b""
        return b"ERROR: %s\r\n" % TIMEOUTS[key].encode()

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        if self._flow_controlled:
            self._last_seen = self.factory.now()  # what activity() does once set up, without the call
        else:
            self.activity()
        stats = self.stats
        stats.bytes_in += len(data)
        framing = self._framing
        if framing is _AUTO:
            framing = self._framing = Framing.choose(data)
        config = self.config
        lines = self._lines.whole_lines(data, config.max_line_length) if framing is _LINE else None
        if lines is not None and len(lines) == 1:
            # The usual request, one whole line and not the exit word: no
            # list of replies, no join, no timing to keep (nothing is held).
            message, terminator = lines[0]
            if message != self._exit:
                out = config.reply.render(message, terminator)
                self.transport.write(out)
                stats.messages += 1
                stats.bytes_out += len(out)
                if self._message_started is not None:
                    self.message_finished()
                return
        replies: list[bytes] = []
        if lines is not None:
            for message, terminator in lines:
                if not self._answer(message, terminator, replies):
                    break
        else:
            self._answer_any(framing, data, replies)
        if replies:
            out = b"".join(replies)
            self.transport.write(out)
            stats.messages += len(replies)
            stats.bytes_out += len(out)
        if self._finished:
            self.close(linger=self._too_long)
        elif self._message_started is not None or self._lines.pending:
            self._time_partial_line(bool(replies))

    def _answer_any(self, framing: Framing, data: bytes, replies: list[bytes]) -> None:
        """The general path: raw chunks, partial lines, lines over the limit."""
        max_length = self.config.max_line_length
        try:
            if framing is _RAW:
                self._answer(*raw_message(data, max_length), replies)
            else:
                for message, terminator in self._lines.feed(data, max_length):
                    if not self._answer(message, terminator, replies):
                        break
        except LineTooLong:
            self.closing_because("line too long")
            self.stats.too_long += 1
            replies.append(self.config.too_long_error())
            self._finished = self._too_long = True

    def _time_partial_line(self, completed: bool) -> None:
        """
        A partial line is timed from when it began: a new one begins when
        none was held, or when this chunk completed one and left another.
        """
        if not self._lines.pending:
            self.message_finished()
        elif self._message_started is None or completed:
            self.message_started()

    def readConnectionLost(self) -> None:
        """
        The client half-closed after its last message: every reply has been
        written; close once it has gone.
        """
        self.close()

    def writeConnectionLost(self) -> None:
        """The client stopped reading; the close that follows ends us."""

    def _answer(self, message: bytes, terminator: bytes, replies: list[bytes]) -> bool:
        """
        Queue the reply to one message; False once the exit word has ended
        the conversation (anything pipelined after it is not answered).
        """
        config = self.config
        if message == self._exit:
            if config.farewell:
                replies.append(config.farewell + terminator)
            self._finished = True
            return False
        replies.append(config.reply.render(message, terminator))
        return True


class GreeterFactory(GuardedFactory):
    """
    Builds greeter connections sharing one L{GreeterConfig}, under the
    service's limits (L{GuardedFactory}).
    """

    def __init__(
        self,
        config: GreeterConfig | None = None,
        connections: Connections | None = None,
        clock: IReactorTime | None = None,
        stats: TCPStats | None = None,
        log_connections: bool = False,
    ) -> None:
        super().__init__(connections, clock, stats, log_connections)
        self.config = config or GreeterConfig()

    def make_protocol(self) -> Greeter:
        """A new greeter connection with the service's messages."""
        return Greeter(self.config)
