"""
What goes wrong (L{Faults}), with the rules of every field said once: a
field's L{Kind} reads it from C{--fault} text and checks it when a
C{Faults(...)} is made, so the command line, C{echoapp.testing} and a
C{.tac} file refuse the same bad value with the same one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from echoapp._fields import Kind, option_name, spec, typed, validate
from echoapp._tac import one_line_in_tac
from echoapp.template import encode_text

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")
_SIZE = re.compile(r"^(\d+)((?:[KM]I?)?B?)$", re.IGNORECASE)
# One unit rule everywhere, toxiproxy's: K and M are decimal (a toxic's rate
# in KB/s is 1000 bytes a second), KiB and MiB binary.
_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 10**6, "MB": 10**6}
_SIZE_UNITS |= {"KI": 1024, "KIB": 1024, "MI": 1 << 20, "MIB": 1 << 20}
STALLS = ("read", "answer")
# A day: a longer delay is a typo, and a bound keeps every time finite
# (C{latency=<400 digits>s} would otherwise be C{inf}).
LONGEST = 86400.0
LARGEST = 1 << 40  # bytes: a terabyte per second, or after a terabyte


def _duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (like 50ms or 2s)")
    value = float(match.group(1))
    value = value / 1000 if match.group(2) == "ms" else value
    if not value <= LONGEST:
        raise ValueError(f"{text[:20]!r}{'...' if len(text) > 20 else ''} is longer than a day")
    return value


def _check_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"must be 0 or more seconds (or text like '50ms'), got {value!r}")
    if value > LONGEST:
        raise ValueError(f"at most {LONGEST:g} seconds (a day), got {value!r}")
    return float(value)


def _size(text: str) -> int:
    match = _SIZE.match(text.replace("/s", ""))
    if not match:
        raise ValueError(f"{text!r} is not a size in bytes (like 512, 16KB, 16KiB or 1MB)")
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    if value > LARGEST:
        raise ValueError(f"{text[:20]!r}{'...' if len(text) > 20 else ''} is more than 1TB")
    return value


def _check_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LARGEST:
        raise ValueError(
            f"must be a whole number of bytes from 0 to 1TB (or text like '16KB'), got {value!r}"
        )
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a probability from 0 to 1") from None
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} is not a probability from 0 to 1")
    return value


def _check_probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"must be a probability from 0 to 1, got {value!r}")
    return float(value)


def _stall(value: Any) -> str:
    """Text and value alike: one of L{STALLS}, or C{""} for none."""
    if not isinstance(value, str) or (value not in STALLS and value != ""):
        raise ValueError(f"stall is {' or '.join(STALLS)}, not {value!r}")
    return value


def _flag(text: str) -> bool:
    if text not in ("", "true", "yes", "1"):
        raise ValueError(f"{text!r}: this fault takes no value")
    return True


def _check_flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {value!r}")
    return value


def _whole(what: str) -> Callable[[str], int]:
    """Reads a whole number from 0; C{what} starts the reason, where the key alone would not say it."""

    def parse(text: str) -> int:
        if not text.isdigit():
            raise ValueError(f"{what}{text!r} is not a whole number")
        return int(text)

    return parse


def _check_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number from 0, got {value!r}")
    return value


def _check_match(value: Any) -> bytes:
    if not isinstance(value, bytes) or not value:
        raise ValueError(f"must be some bytes (or text) a message contains, got {value!r}")
    return value


# Each takes the text C{--fault} types in Python too (L{typed}).
DURATION = typed(_duration, _check_duration)
SIZE = typed(_size, _check_size)
PROBABILITY = typed(_probability, _check_probability)
STALL = typed(_stall, _stall)
FLAG = typed(_flag, _check_flag)
COUNT = typed(_whole(""), _check_count)
SEED = typed(_whole("seed "), _check_count)
MATCH = typed(encode_text, _check_match)

# Where a fault can apply: on byte streams, on TLS listeners only, on
# streams without TLS (TLS cannot half-close), on datagrams.
STREAM, TLS, PLAIN, DATAGRAM = "stream", "tls", "plain", "datagram"
# The fields that choose which connections (or datagrams) get the faults:
# none of them is a fault by itself.
CONDITIONS = ("first", "after_messages", "active_from", "active_until", "match", "fraction", "seed")


def _spec(default: Any, kind: Kind, help: str, *where: str) -> Any:
    """A field of L{Faults}: its kind, its help, and the services it can apply to (none: a condition)."""
    return spec(default, kind, help, where=where)


@dataclass(frozen=True)
class Faults:
    """
    What goes wrong, and for which connections.  Durations in seconds (or
    text such as C{"50ms"}), sizes in bytes; C{None} and zeros mean the
    fault is off.  A bad value raises L{ValueError} in one line, naming it.
    """

    latency: float = _spec(0.0, DURATION, "delay before each reply", STREAM, DATAGRAM)
    jitter: float = _spec(0.0, DURATION, "latency varies by up to this", STREAM, DATAGRAM)
    bandwidth: int = _spec(0, SIZE, "bytes per second the server sends", STREAM)
    slice: int = _spec(0, SIZE, "replies sent in writes of this size", STREAM)
    slice_delay: float = _spec(0.0, DURATION, "pause between slices", STREAM)
    slice_variation: int = _spec(0, SIZE, "slices vary in size by up to this, either way", STREAM)
    read_latency: float = _spec(0.0, DURATION, "delay before the server reads what arrived", STREAM)
    read_bandwidth: int = _spec(0, SIZE, "bytes per second the server reads", STREAM)
    reset_after_bytes: int | None = _spec(None, SIZE, "RST after N bytes", STREAM)
    reset_after: float | None = _spec(None, DURATION, "RST a time after it applies", STREAM)
    close_after: float | None = _spec(
        None, DURATION, "close (FIN) a time after it applies; what is queued is dropped", STREAM
    )
    half_close_after_bytes: int | None = _spec(None, SIZE, "FIN after N bytes; reading goes on", PLAIN)
    slow_close: float = _spec(0.0, DURATION, "delay every close", STREAM)
    stall: str = _spec(
        "",
        STALL,
        "read: never read; answer: never reply (it still closes at the idle timeout, "
        "and at once on the exit word)",
        STREAM,
    )
    refuse: bool = _spec(False, FLAG, "accept, then close at once", STREAM)
    stall_handshake: bool = _spec(False, FLAG, "ssl: listeners never finish the handshake", TLS)
    loss: float = _spec(0.0, PROBABILITY, "UDP: drop a reply", DATAGRAM)
    duplicate: float = _spec(0.0, PROBABILITY, "UDP: send a reply twice", DATAGRAM)
    reorder: float = _spec(0.0, PROBABILITY, "UDP: hold a reply until after the next", DATAGRAM)
    first: int | None = _spec(None, COUNT, "only the first N connections (UDP: sources) get the faults")
    after_messages: int | None = _spec(None, COUNT, "faults begin after N messages on a connection")
    active_from: float | None = _spec(None, DURATION, "faults begin this long after start")
    active_until: float | None = _spec(None, DURATION, "faults end this long after start")
    match: bytes | None = _spec(None, MATCH, "faults begin at a message containing these bytes")
    fraction: float = _spec(1.0, PROBABILITY, "share of connections that get the faults")
    seed: int | None = _spec(None, SEED, "for every random choice")

    @one_line_in_tac
    def __post_init__(self) -> None:
        validate(self)
        if self.slice_variation and not self.slice:
            raise ValueError("fault slice-variation: varies slice=, which is not set")
        # Asked for every chunk a faulty connection passes (twice a forwarded
        # request): worked out once, as walking the fields was most of the
        # fault machinery's cost per request.
        active = any(getattr(self, f.name) != f.default for f in fields(self) if f.name not in CONDITIONS)
        object.__setattr__(self, "_active", active)

    @classmethod
    def parse(cls, text: str, base: Faults | None = None) -> Faults:
        """
        C{latency=50ms,jitter=10ms} (keys with C{-} or C{_}), on top of
        C{base}.

        @raise ValueError: with a one-line reason naming the key.
        """
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            name = key.strip().replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown fault {key!r} (known: {', '.join(cls.names())})")
            kind = known[name].metadata["kind"]
            try:
                changes[name] = kind.check(kind.parse(value.strip()))
            except ValueError as error:
                raise ValueError(f"fault {key}: {error}") from None
        return replace(base or cls(), **changes)

    @classmethod
    def names(cls) -> list[str]:
        """Every key C{--fault} takes, as typed."""
        return [option_name(f.name) for f in fields(cls)]

    def __bool__(self) -> bool:
        """Whether any fault is set (the conditions alone are none)."""
        return bool(self.__dict__["_active"])

    def conditional(self) -> bool:
        """Whether the faults apply to some connections or moments only (beyond C{fraction})."""
        return any(getattr(self, name) is not None for name in CONDITIONS[:5])

    def shapes_output(self) -> bool:
        """Whether any fault delays, slows, cuts or stops the bytes sent, so they are queued."""
        return bool(
            self.latency
            or self.jitter
            or self.bandwidth
            or self.slice
            or self.reset_after_bytes is not None
            or self.half_close_after_bytes is not None
        )

    def shapes_input(self) -> bool:
        """Whether reads are delayed or slowed."""
        return bool(self.read_latency or self.read_bandwidth)

    def check_applies(self, *where: str) -> None:
        """
        Refuse, in one line, a fault that nothing in C{where} (L{STREAM},
        L{TLS}, L{PLAIN}, L{DATAGRAM}: what the service offers) could apply: it would
        be logged as active and do nothing.

        @raise ValueError: naming the first such fault.
        """
        for f in fields(self):
            wanted = f.metadata["where"]
            if not wanted or getattr(self, f.name) == f.default or set(wanted) & set(where):
                continue
            if wanted == (TLS,):
                raise ValueError(f"fault {option_name(f.name)}: needs an ssl: listener")
            if wanted == (PLAIN,):
                raise ValueError(
                    f"fault {option_name(f.name)}: needs a listener without TLS (TLS cannot half-close)"
                )
            kinds = " or ".join("TCP" if kind == STREAM else "UDP" for kind in wanted)
            raise ValueError(f"fault {option_name(f.name)}: applies to {kinds} services only")

    def __str__(self) -> str:
        """As C{--fault} takes it, so a logged line can be pasted back."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            name = option_name(f.name)
            if value == f.default:
                continue
            if f.metadata["kind"] is DURATION:
                value = f"{value * 1000:g}ms"
            elif value is True:
                shown.append(name)
                continue
            elif isinstance(value, bytes):
                value = value.decode("utf-8", "surrogateescape")
            shown.append(f"{name}={value}")
        return ",".join(shown) or "none"


OFF = Faults()


def offered(streams: Iterable[Any] = (), datagrams: bool = False) -> tuple[str, ...]:
    """
    What a service with the stream listeners C{streams} (descriptions, or
    anything whose C{str} is one) and, with C{datagrams}, UDP ports offers
    its faults: the argument L{Faults.check_applies} takes.
    """
    where = [DATAGRAM] if datagrams else []
    for listen in streams:
        description = str(listen).removeprefix("haproxy:")
        where += [STREAM, TLS if description.partition(":")[0] == "ssl" else PLAIN]
    return tuple(where)
