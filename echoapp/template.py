"""
Reply templates: C{"Hello, {}!"} with exactly one placeholder.

Templates are split once, at start-up, into the bytes before and after the
placeholder, so rendering a reply is a concatenation of bytes: a message is
never decoded, and invalid UTF-8 from a client cannot break anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from echoapp._tac import one_line_in_tac

__all__ = ["DEFAULT_REPLY", "PLACEHOLDER", "ReplyTemplate", "encode_text"]

PLACEHOLDER = "{}"


def encode_text(text: str) -> bytes:
    """
    Turn command-line text into the bytes sent on the wire.

    C{surrogateescape} gives back the exact bytes of an argument that was not
    valid UTF-8, instead of failing on it.
    """
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class ReplyTemplate:
    prefix: bytes
    suffix: bytes

    @classmethod
    @one_line_in_tac
    def parse(cls, text: str) -> ReplyTemplate:
        """
        @raise ValueError: with a one-line reason, unless C{text} holds
            exactly one C{{}} placeholder.
        """
        count = text.count(PLACEHOLDER)
        if count != 1:
            raise ValueError(
                f"reply template {text!r} must contain exactly one {{}} placeholder, found {count}"
            )
        before, after = text.split(PLACEHOLDER)
        return cls(encode_text(before), encode_text(after))

    def render(self, message: bytes, terminator: bytes = b"") -> bytes:
        """
        The reply to C{message}, built by concatenation (no formatting of the
        client's bytes), ending in C{terminator}.
        """
        return self.prefix + message + self.suffix + terminator

    @property
    def overhead(self) -> int:
        """The bytes a reply adds to its message: the whole of the amplification."""
        return len(self.prefix) + len(self.suffix)

    def __str__(self) -> str:
        return (self.prefix + PLACEHOLDER.encode() + self.suffix).decode("utf-8", "surrogateescape")


DEFAULT_REPLY = ReplyTemplate.parse("Hello, {}!")
