"""
The welcome/echo/exit TCP greeter: a banner on connect, one templated reply
per message, and the exit word closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from echoapp.framing import Framing, LineSplitter, LineTooLong, split_terminator
from echoapp.limits import pause_reading_when_full
from echoapp.template import DEFAULT_REPLY, ReplyTemplate

CRLF = b"\r\n"
DEFAULT_MAX_LINE_LENGTH = 64 * 1024


@dataclass(frozen=True)
class GreeterConfig:
    """
    Everything a greeter connection says.  An empty C{banner}, C{farewell} or
    C{exit_word} switches that part off.
    """

    banner: bytes = b"Welcome!"
    reply: ReplyTemplate = field(default=DEFAULT_REPLY)
    exit_word: bytes = b"exit"
    farewell: bytes = b"Goodbye!"
    framing: Framing = Framing.AUTO
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH

    def too_long_error(self) -> bytes:
        return b"ERROR: line too long (limit %d bytes)\r\n" % self.max_line_length


@implementer(IHalfCloseableProtocol)
class Greeter(Protocol):
    """
    One connection's state machine: the framing it settled on, its partial
    line, and whether it is finished.  Every chunk is answered with a single
    write of all its replies, in order.  A client that half-closes after its
    last message still gets every reply before the connection closes.
    """

    log = Logger()
    transport: ITCPTransport  # set by makeConnection, before any callback runs

    def __init__(self, config: GreeterConfig) -> None:
        self.config = config
        self._framing = config.framing
        self._lines = LineSplitter(config.max_line_length)
        self._finished = False

    def connectionMade(self) -> None:
        pause_reading_when_full(self.transport)
        if self.config.banner:
            self.transport.write(self.config.banner + CRLF)

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        if self._framing is Framing.AUTO:
            self._framing = Framing.choose(data)
        replies: list[bytes] = []
        try:
            if self._framing is Framing.RAW:
                message, terminator = split_terminator(data)
                if len(message) > self.config.max_line_length:
                    raise LineTooLong()
                self._answer(message, terminator, replies)
            else:
                for message, terminator in self._lines.feed(data):
                    if not self._answer(message, terminator, replies):
                        break
        except LineTooLong:
            self.log.info("Closing {peer}: line too long", peer=self._peer())
            replies.append(self.config.too_long_error())
            self._finished = True
        if replies:
            self.transport.write(b"".join(replies))
        if self._finished:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """The client stopped reading; the close that follows ends us."""

    def _answer(self, message: bytes, terminator: bytes, replies: list[bytes]) -> bool:
        """
        Queue the reply to one message; False once the exit word has ended
        the conversation (anything pipelined after it is not answered).
        """
        config = self.config
        if config.exit_word and message == config.exit_word:
            if config.farewell:
                replies.append(config.farewell + terminator)
            self._finished = True
            return False
        replies.append(config.reply.render(message, terminator))
        return True

    def _peer(self) -> IAddress | None:
        return self.transport.getPeer() if self.transport is not None else None


class GreeterFactory(Factory):
    noisy = False

    def __init__(self, config: GreeterConfig | None = None) -> None:
        self.config = config or GreeterConfig()

    def buildProtocol(self, addr: IAddress | None) -> Greeter:
        protocol = Greeter(self.config)
        protocol.factory = self
        return protocol
