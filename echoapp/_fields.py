"""
What a configuration field accepts, said once for every way in.

A field of L{echoapp.config}'s dataclasses (and of the test peer's
C{Faults}) names its L{Kind} in its metadata: how to read it from the text an
operator types (C{parse}) and what values it may hold (C{check}).  The
dataclasses run C{check} on every field in C{__post_init__} (L{validate}), so
C{services.*}, a C{.tac} file, C{echoapp.testing} and the command line refuse
the same bad value with the same one-line reason; the command line only adds
C{parse} in front and C{--} before the name.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from echoapp.template import ReplyTemplate, encode_text


def option_name(field_name: str) -> str:
    """A field's name as an option: C{max_line_length} is C{max-line-length}."""
    return field_name.replace("_", "-")


@dataclass(frozen=True)
class Kind:
    """
    How one kind of field is read from text and held to its rules.

    @ivar parse: text -> value; raises L{ValueError} with a one-line reason.
    @ivar check: value -> the value to store (it may normalise, such as
        C{str} to C{bytes}); raises L{ValueError} with a one-line reason.
    @ivar show: value -> the text C{--help} shows as the default, as it
        would be typed.
    @ivar bound: the largest value (or template overhead), for C{--help}.
    """

    parse: Callable[[str], Any]
    check: Callable[[Any], Any]
    show: Callable[[Any], str] = str
    bound: str | None = None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"must be a positive whole number, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a positive number, got {text!r}") from None


def _shown(value: Any) -> str:
    """A bad value as the reason quotes it: numbers as typed (C{-5}, not C{-5.0}), anything else as repr."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return repr(value)


def positive_int(most: int | None = None) -> Kind:
    """A whole number above zero, and at most C{most}."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"must be a positive whole number, got {_shown(value)}")
        if most is not None and value > most:
            raise ValueError(f"at most {most}, got {_shown(value)}")
        return value

    return Kind(_whole, check, str, None if most is None else f"Largest value: {most}.")


def positive_seconds(most: float | None = None) -> Kind:
    """A finite number above zero (seconds, or a rate per second)."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ValueError(f"must be a positive number, got {_shown(value)}")
        if most is not None and value > most:
            raise ValueError(f"at most {most}, got {_shown(value)}")
        return float(value)

    def show(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else str(value)

    return Kind(_number, check, show)


def typed(
    parse: Callable[[str], Any],
    check: Callable[[Any], Any],
    show: Callable[[Any], str] = str,
    bound: str | None = None,
) -> Kind:
    """
    A kind whose values may be given in Python as the text an operator
    types too (C{GreeterConfig(banner="Hi")}, C{Faults(latency="50ms")}):
    text is read by C{parse}, and what it reads is then held to C{check}
    like any value, so that text and value meet one rule, said once.
    """

    def check_value_or_text(value: Any) -> Any:
        return check(parse(value) if isinstance(value, str) else value)

    return Kind(parse, check_value_or_text, show, bound)


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"must be bytes or text, got {value!r}")
    return value


TEXT = typed(encode_text, _bytes, lambda value: value.decode("utf-8", "surrogateescape"))
"""Bytes sent on the wire; text is encoded as UTF-8 (C{surrogateescape})."""


def template(most: int) -> Kind:
    """A reply template with one C{{}}, adding at most C{most} bytes to a message."""

    def check(value: Any) -> ReplyTemplate:
        if not isinstance(value, ReplyTemplate):
            raise ValueError(f"must be a template like 'Hello, {{}}!', got {value!r}")
        if value.overhead > most:
            raise ValueError(f"the template adds {value.overhead} bytes to each message; at most {most}")
        return value

    return typed(ReplyTemplate.parse, check, str, f"Largest bytes added to a message: {most}.")


def choice(kind: type[enum.Enum], what: str) -> Kind:
    """One of an enumeration's values, by value."""

    def check(value: Any) -> enum.Enum:
        if isinstance(value, kind):
            return value
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(str(member.value) for member in kind)
            raise ValueError(f"unknown {what} {value!r} (choose one of {choices})") from None

    return Kind(check, check, lambda value: str(value.value))


def spec(default: Any, kind: Kind, help: str, **metadata: Any) -> Any:
    """A dataclass field of C{kind}, with its default and C{--help} text."""
    return dataclasses.field(default=default, metadata={"kind": kind, "help": help, **metadata})


def seconds(default: float, help: str) -> Any:
    """A field of L{positive_seconds} (a duration, or a rate per second): the kind most limits are."""
    return spec(default, positive_seconds(), help)


def count(default: int, help: str, most: int | None = None) -> Any:
    """A field of L{positive_int}: how many, at most C{most}."""
    return spec(default, positive_int(most), help)


def validate(instance: Any) -> None:
    """
    Check every field of the dataclass C{instance} that names a L{Kind}, and
    store what the check returns (frozen dataclasses included).

    @raise ValueError: C{"NAME: reason"}, NAME as the option is spelled.
    """
    for field in dataclasses.fields(instance):
        kind = field.metadata.get("kind")
        if kind is None:
            continue
        value = getattr(instance, field.name)
        if value is None and field.default is None:
            continue
        try:
            checked = kind.check(value)
        except ValueError as error:
            raise ValueError(f"{option_name(field.name)}: {error}") from None
        if checked is not value:
            object.__setattr__(instance, field.name, checked)


def from_text(config: type[Any], texts: dict[str, str], base: Any = None) -> Any:
    """
    An instance of the dataclass C{config} from option texts by field name,
    on top of C{base} (or the defaults).

    @raise ValueError: C{"NAME: reason"}, for the first bad text or value.
    """
    known = {field.name: field for field in dataclasses.fields(config)}
    values = {}
    for name, text in texts.items():
        try:
            values[name] = known[name].metadata["kind"].parse(text)
        except ValueError as error:
            raise ValueError(f"{option_name(name)}: {error}") from None
    return dataclasses.replace(base, **values) if base is not None else config(**values)


def help_text(field: dataclasses.Field[Any]) -> str:
    """The field's help, and its bound when it has one: the bound is part of the contract."""
    text = str(field.metadata["help"])
    bound = field.metadata["kind"].bound
    return text if bound is None else f"{text} ({bound})"


def shown_default(field: dataclasses.Field[Any]) -> str:
    """The field's default as C{--help} shows it."""
    return str(field.metadata["kind"].show(field.default))
