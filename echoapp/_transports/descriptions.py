"""
Endpoint descriptions as people write them, and their mistakes explained in
echoapp's words: Twisted's parser misreads some (C{interface=::1} is three
options to it) and reports others with its internals (a function's name and
arguments), so each mistake gets one line naming what to write instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import re

from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import getPlugins

from echoapp._transports.haproxy import PREFIX


def one_line(error: BaseException) -> str:
    """An error as one line of text (a multi-line message folded; its type when it says nothing)."""
    return " ".join(str(error).split()) or type(error).__name__


def split_proxy(description: str) -> tuple[bool, str]:
    """
    Whether C{description} asks for PROXY headers first (C{haproxy:}), and
    the endpoint description behind the prefix: the one place that knows it.
    """
    if description.startswith(PREFIX):
        return True, description[len(PREFIX) :]
    return False, description


# What people write, by kind: the options each of Twisted's own kinds takes
# (for "did you mean"), and an example to copy.
_FIELD = re.compile(r"(?<!\\):")
_OPTIONS = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "interface", "backlog"),
    "ssl": (
        "port",
        "interface",
        "backlog",
        "privateKey",
        "certKey",
        "sslmethod",
        "extraCertChain",
        "dhParameters",
    ),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "systemd": ("domain", "index", "name"),
}
_EXAMPLES = {
    "tcp": "tcp:9999:interface=127.0.0.1",
    "tcp6": "tcp6:9999:interface=\\:\\:1",
    "ssl": "ssl:9443:privateKey=key.pem:certKey=cert.pem",
    "unix": "unix:/run/echoapp.sock",
    "systemd": "systemd:domain=INET:index=0",
}
_KINDS = f"{', '.join(_EXAMPLES.values())}, or haproxy: before any of them"


def _fields(description: str) -> tuple[str, list[str], dict[str, str], list[str]]:
    """C{(kind, positional, named, raw fields)} of a description, split on unescaped colons."""
    kind, *fields = _FIELD.split(description)
    named = dict(field.split("=", 1) for field in fields if "=" in field)
    return kind, [field for field in fields if "=" not in field], named, fields


def _unescaped_ipv6(head: str, kind: str, fields: list[str]) -> str | None:
    """The description rewritten with an C{interface=} IPv6 address's colons escaped, if they were not."""
    for index, field in enumerate(fields):
        if not field.startswith("interface="):
            continue
        last = next((i for i in range(index + 1, len(fields)) if "=" in fields[i]), len(fields))
        for end in range(last, index + 1, -1):
            address = ":".join([field[len("interface=") :], *fields[index + 1 : end]])
            try:
                ipaddress.IPv6Address(address.split("%")[0])
            except ValueError:
                continue
            escaped = "interface=" + address.replace(":", "\\:")
            return ":".join([head + kind, *fields[:index], escaped, *fields[end:]])
    return None


# The kernel caps a backlog at net.core.somaxconn (65,535 at most on Linux);
# listen() itself takes a C int, and a larger number was Python's words.
MAX_BACKLOG = 65535


def _bad_number(kind: str, key: str, text: str) -> str | None:
    if key == "port" and not (text.isdigit() and int(text) <= 65535):
        return f"port {text!r} is not a number from 0 to 65535: write e.g. {_EXAMPLES[kind]}"
    if key == "backlog" and not (text.isdigit() and 0 < int(text) <= MAX_BACKLOG):
        return f"backlog {text[:20]!r} is not a whole number from 1 to {MAX_BACKLOG}: write e.g. backlog=128"
    if key == "mode" and not re.fullmatch(r"(0o)?[0-7]{1,4}", text):
        return f"mode {text!r} is not an octal file mode: write e.g. mode=660"
    if key == "index" and not text.isdigit():
        return f"index {text!r} is not a whole number: write e.g. {_EXAMPLES['systemd']}"
    return None


def description_mistake(description: str) -> str | None:
    """
    What is wrong with a stream description, in echoapp's words and naming
    what to write instead, for the mistakes Twisted's parser misreports
    (C{interface=::1} reads as three options) or lets through (C{tcp:99999});
    L{None} when there is none of those.
    """
    proxy, description = split_proxy(description)
    head = PREFIX if proxy else ""
    if not description:
        if head:
            return f"haproxy: needs the endpoint it reads from: write e.g. haproxy:{_EXAMPLES['tcp']}"
        return f"no endpoint: write one of {_KINDS}"
    kind, positional, named, fields = _fields(description)
    fixed = _unescaped_ipv6(head, kind, fields)
    if fixed is not None:
        return f"an IPv6 address's colons end the option unless escaped: write '{fixed}' (quoted in a shell)"
    if kind not in _OPTIONS:
        return None
    keys = [field.split("=", 1)[0] for field in fields if "=" in field]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        return f"{twice[0]}= is given twice: write it once"
    first = "address" if kind == "unix" else "port"
    if kind != "systemd" and not named.get(first) and not (positional and positional[0]):
        what = "path" if kind == "unix" else "port"
        return f"no {what}: write {kind}:{what.upper()}, e.g. {_EXAMPLES[kind]}"
    if positional and first not in named and kind != "unix":
        named = {first: positional[0], **named}
    for key, text in named.items():
        bad = _bad_number(kind, key, text)
        if bad is not None:
            return bad
    return None


def explain_failure(description: str, error: BaseException) -> str:
    """
    Why Twisted could not make an endpoint of C{description}, as one line
    without Twisted's or Python's internals (a function's name and its
    arguments say nothing to someone who wrote a description).
    """
    kind, positional, named, _ = _fields(split_proxy(description)[1])
    options = _OPTIONS.get(kind)
    if options is None:
        known = {parser.prefix for parser in getPlugins(IStreamServerEndpointStringParser)}
        if kind not in known:
            return f"unknown kind {kind!r}: write one of {_KINDS}"
    else:
        for key in named:
            if key not in options:
                close = difflib.get_close_matches(key, options, 1)
                hint = f"did you mean {close[0]}=? " if close else ""
                return f"{kind}: has no option {key!r}; {hint}it takes {', '.join(options)}"
        if len(positional) > len(options):
            return f"too many values without a KEY=: write options as KEY=VALUE, e.g. {_EXAMPLES[kind]}"
    if isinstance(error, OSError) and error.filename:
        hint = f" ({kind}: reads privateKey=KEY.pem:certKey=CERT.pem)" if kind == "ssl" else ""
        return f"cannot read {error.filename}: {error.strerror}{hint}"
    text = one_line(error)
    if re.search(r"\w\(\)|invalid literal|Traceback|\b_\w+\.", text):
        return f"Twisted cannot read it as a {kind}: description: write e.g. {_EXAMPLES.get(kind, _KINDS)}"
    return text
