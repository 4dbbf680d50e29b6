"""
Option rules shared by several plugins, so each rule has one home: the
greeter's message options (used by echoapp-tcp and echoapp) and the
validation of listen descriptions.
"""

from __future__ import annotations

from twisted.python import usage

from echoapp.framing import Framing
from echoapp.greeter import DEFAULT_MAX_LINE_LENGTH, GreeterConfig
from echoapp.listen import UDPListen, check_endpoint
from echoapp.template import DEFAULT_REPLY, ReplyTemplate, encode_text

GREETER_PARAMETERS = [
    ["banner", None, "Welcome!", "Line sent on connect ('' for none)."],
    ["reply", None, str(DEFAULT_REPLY), "Reply template; exactly one {} stands for the message."],
    ["exit-word", None, "exit", "Message that closes the connection ('' for none)."],
    ["farewell", None, "Goodbye!", "Line sent before closing on the exit word ('' for none)."],
    ["framing", None, Framing.AUTO.value, "auto, line or raw: how bytes become messages (see README)."],
    [
        "max-line-length",
        None,
        str(DEFAULT_MAX_LINE_LENGTH),
        "Longest message in bytes; a longer one gets an error line and the connection is closed.",
    ],
]


class RepeatableListen:
    """
    A repeatable listen option: C{--NAME DESCRIPTION} given any number of
    times replaces the default.  Bound into an L{usage.Options} subclass as
    C{opt_NAME = RepeatableListen("NAME", DEFAULT).option()}.
    """

    def __init__(self, name: str, default: str, kind: str = "Endpoint string") -> None:
        self.name = name
        self.default = default
        self.kind = kind

    def option(self) -> object:
        key = self.name

        def opt(options: usage.Options, description: str) -> None:
            options.setdefault(key, []).append(description)

        opt.__doc__ = f"{self.kind} to listen on; repeatable [default: {self.default}]"
        return opt

    def given(self, options: usage.Options) -> list[str]:
        return list(options.get(self.name, [])) or [self.default]


def stream_listens(option: RepeatableListen, options: usage.Options) -> list[str]:
    try:
        return [check_endpoint(description) for description in option.given(options)]
    except ValueError as error:
        raise usage.UsageError(f"--{option.name}: {error}") from None


def udp_listens(option: RepeatableListen, options: usage.Options) -> list[UDPListen]:
    try:
        return [UDPListen.parse(description) for description in option.given(options)]
    except ValueError as error:
        raise usage.UsageError(f"--{option.name}: {error}") from None


def reply_template(options: usage.Options) -> ReplyTemplate:
    try:
        return ReplyTemplate.parse(options["reply"])
    except ValueError as error:
        raise usage.UsageError(f"--reply: {error}") from None


def _framing(text: str) -> Framing:
    try:
        return Framing(text)
    except ValueError:
        choices = ", ".join(framing.value for framing in Framing)
        raise usage.UsageError(f"--framing: unknown framing {text!r} (choose one of {choices})") from None


def _positive(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise usage.UsageError(f"--{name}: must be a positive whole number, got {text!r}")
    return value


def greeter_config(options: usage.Options) -> GreeterConfig:
    """The L{GreeterConfig} that C{GREETER_PARAMETERS} describe."""
    return GreeterConfig(
        banner=encode_text(options["banner"]),
        reply=reply_template(options),
        exit_word=encode_text(options["exit-word"]),
        farewell=encode_text(options["farewell"]),
        framing=_framing(options["framing"]),
        max_line_length=_positive("max-line-length", options["max-line-length"]),
    )
