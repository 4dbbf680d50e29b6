"""
toxiproxy's JSON, read and checked: a proxy (C{name}, C{listen},
C{upstream}, C{enabled}, and in a populate file its C{toxics}) and a toxic
(C{name}, C{type}, C{stream}, C{toxicity}, C{attributes}), each toxic type
mapped onto echoapp's faults.  Everything refused is an L{Invalid}
with one line; nothing here touches a proxy, so a
refused request changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from echoapp._faults import Faults
from echoapp._faults.spec import LARGEST, LONGEST
from echoapp._proxy.errors import Invalid, ProxyError
from echoapp._proxy.toxics import STREAMS, Toxic


def _ms(value: int) -> float:
    return value / 1000


# type -> its attributes with toxiproxy's defaults, and the faults they mean.
TOXICS: dict[str, tuple[dict[str, int], Callable[[dict[str, Any]], Faults]]] = {
    "noop": ({}, lambda a: Faults()),  # toxiproxy's toxic that does nothing (its default type)
    "latency": (
        {"latency": 0, "jitter": 0},
        lambda a: Faults(latency=_ms(a["latency"]), jitter=_ms(a["jitter"])),
    ),
    "bandwidth": ({"rate": 0}, lambda a: Faults(bandwidth=a["rate"] * 1000)),  # KB/s
    "slow_close": ({"delay": 0}, lambda a: Faults(slow_close=_ms(a["delay"]))),
    "timeout": (
        {"timeout": 0},
        # Data dropped ("on the ground"), and the connection closed after the timeout (0: never).
        lambda a: Faults(stall="answer", close_after=_ms(a["timeout"]) if a["timeout"] else None),
    ),
    "reset_peer": ({"timeout": 0}, lambda a: Faults(reset_after=_ms(a["timeout"]))),
    "slicer": (
        {"average_size": 0, "size_variation": 0, "delay": 0},  # delay in microseconds
        lambda a: Faults(
            slice=a["average_size"],
            slice_delay=a["delay"] / 1e6,
            slice_variation=a["size_variation"] if a["average_size"] else 0,
        ),
    ),
    "limit_data": (
        {"bytes": 0},
        lambda a: Faults(half_close_after_bytes=a["bytes"]) if a["bytes"] else Faults(),
    ),
}
# toxiproxy's Go names, for its words about a value of the wrong kind: the
# struct each type decodes into, and the Go type of each attribute.
GO_STRUCTS = {
    "noop": "NoopToxic",
    "latency": "LatencyToxic",
    "bandwidth": "BandwidthToxic",
    "slow_close": "SlowCloseToxic",
    "timeout": "TimeoutToxic",
    "reset_peer": "ResetToxic",
    "slicer": "SlicerToxic",
    "limit_data": "LimitDataToxic",
}
GO_INT = {"average_size", "size_variation"}  # slicer's are Go ints (64 bits here), the rest int64
INT64 = 1 << 63
# Each attribute's unit, and so its bound: echoapp's faults last at most a
# day (LONGEST) and count at most a terabyte (LARGEST).
_UNITS = {"latency": 1000, "jitter": 1000, "delay": 1000, "timeout": 1000}  # milliseconds
_BOUNDS = {
    **{key: int(LONGEST * per_second) for key, per_second in _UNITS.items()},
    "rate": LARGEST // 1000,  # KB/s
    "bytes": LARGEST,
    "average_size": LARGEST,
    "size_variation": LARGEST,
}
_SLICER_DELAY_BOUND = int(LONGEST * 1_000_000)  # microseconds


class JsonNumber(float):
    """A JSON number with a fraction or an exponent, which keeps its text for toxiproxy's words about it."""

    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


def parse_json(text: bytes) -> Any:
    """
    A request body: numbers with a fraction or an exponent keep their text;
    a body nested deeper than Python's stack is a mistake, not a crash.

    @raise Invalid: for a body that is not JSON.
    """
    try:
        return json.loads(text or b"null", parse_float=JsonNumber)
    except RecursionError:
        raise _body_error("JSON nested too deeply") from None
    except ValueError as error:
        raise _body_error(str(error)) from None


def _go_kind(value: Any) -> str:
    """What Go's JSON decoder calls C{value} when it cannot be the int64 it wanted."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, JsonNumber):
        return f"number {value.text}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# The longest name of a proxy or a toxic: names go into every answer that
# lists them and into log lines (toxiproxy sets none; a 256 KiB name made
# each GET /proxies that much longer).
MAX_NAME = 256
ECHOAPP_TYPE = "echoapp"  # attributes are --fault keys: {"latency": "50ms", "stall": "read"}


def _body_error(reason: str) -> Invalid:
    return Invalid(f"bad request body: {reason}")


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _body_error(f"{what} is a JSON object, not {type(data).__name__}")
    return data


def _text(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _body_error(f"{key} is a string, not {type(value).__name__}")
    if key == "name" and len(value) > MAX_NAME:
        raise _body_error(f"name is longer than {MAX_NAME} characters")
    # A lone surrogate ("\ud800", valid JSON, no Unicode) is U+FFFD, as Go's
    # decoder reads it: no log line or answer fails to encode it.
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _attributes(
    kind: str, given: Any, base: dict[str, Any]
) -> tuple[dict[str, Any], Faults, tuple[str, ...]]:
    attributes = dict(base)
    given = _object(given if given is not None else {}, "attributes")
    if kind == ECHOAPP_TYPE:
        for key, value in given.items():
            if not isinstance(value, str | int | float) or (isinstance(value, bool) and key != "refuse"):
                raise _body_error(f"attribute {key} is a string or a number")
            attributes[key] = value
        text = ",".join(f"{key}={'' if value is True else value}" for key, value in attributes.items())
        try:
            faults = Faults.parse(text)
        except ValueError as error:
            raise Invalid(str(error)) from None
        if faults.fraction != 1 or faults.seed is not None:
            raise Invalid("fraction and seed are not toxic attributes: use toxicity, and --seed")
        return attributes, faults, ()
    defaults, meaning = TOXICS[kind]
    ignored = []
    for key, value in given.items():
        if key not in defaults:
            ignored.append(key)  # toxiproxy's JSON decoder ignores it too, and answers 200
            continue
        if value is None:
            continue  # JSON null: Go's decoder leaves the field as it was
        attributes[key] = _whole_number(kind, key, value)
    try:
        faults = meaning(attributes)
    except ValueError as error:  # a bound of echoapp's faults the figures above did not catch
        raise Invalid(f"{kind} toxic: {error}") from None
    return attributes, faults, tuple(ignored)


def _whole_number(kind: str, key: str, value: Any) -> int:
    """
    An attribute's value: what toxiproxy's Go decoder refuses is refused in
    its words (a string, a fraction, beyond int64); what it takes but
    echoapp's faults cannot have (negative, longer than a day, more than a
    terabyte) in echoapp's.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not -INT64 <= value < INT64:
        go_type = "int" if key in GO_INT else "int64"
        raise _body_error(
            f"json: cannot unmarshal {_go_kind(value)[:40]} into Go struct field "
            f"{GO_STRUCTS[kind]}.attributes.{key} of type {go_type}"
        )
    bound = _SLICER_DELAY_BOUND if (kind, key) == ("slicer", "delay") else _BOUNDS[key]
    if not 0 <= value <= bound:
        raise _body_error(f"attribute {key} of {kind} is a whole number from 0 to {bound}, not {value}")
    return value


def toxic_from_json(data: Any, existing: Toxic | None = None) -> Toxic:
    """
    A new toxic from C{data}, or C{existing} updated by it (as toxiproxy
    updates: the name, type and stream stay, the rest is merged).

    An attribute the type does not have is left out, as toxiproxy leaves
    it out (and answers 200); the toxic's C{ignored} names it, for the
    API's one line about it.

    @raise Invalid: for an unknown type or stream, or a bad value.
    """
    data = _object(data, "a toxic")
    if existing is not None:
        kind, stream, name = existing.type, existing.stream, existing.name
        base = existing.attributes
        toxicity = existing.toxicity
    else:
        kind = _text(data, "type")
        if kind not in TOXICS and kind != ECHOAPP_TYPE:
            raise Invalid("invalid toxic type")
        stream = _text(data, "stream", "downstream") or "downstream"
        if stream.lower() not in STREAMS:
            raise Invalid("stream was invalid, can be either upstream or downstream")
        name = _text(data, "name") or f"{kind}_{stream}"
        base = dict(TOXICS[kind][0]) if kind in TOXICS else {}
        toxicity = 1.0
    if data.get("toxicity") is not None:  # JSON null: the default, as Go's decoder reads it
        value = data["toxicity"]
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise _body_error(f"toxicity is a number from 0 to 1, not {repr(value)[:40]}")
        toxicity = float(value)
    attributes, faults, ignored = _attributes(kind, data.get("attributes"), base)
    return Toxic(name, kind, stream, toxicity, faults, attributes, ignored)


@dataclass
class ProxySpec:
    """A proxy as toxiproxy describes one; the addresses are checked when it is made."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True
    protocol: str = "tcp"  # "udp": echoapp's own; toxiproxy ignores a "type" and proxies TCP


def spec_from_json(data: Any, base: ProxySpec | None = None) -> ProxySpec:
    """
    A proxy from C{data} (or C{base} updated by it).

    @raise Invalid: for a missing field or a value of the wrong kind.
    """
    data = _object(data, "a proxy")
    spec = ProxySpec(
        _text(data, "name", base.name if base else ""),
        _text(data, "listen", base.listen if base else ""),
        _text(data, "upstream", base.upstream if base else ""),
        base.enabled if base else True,
        _text(data, "type", base.protocol if base else "tcp") or "tcp",
    )
    if spec.protocol not in ("tcp", "udp"):
        raise _body_error(f"type is tcp or udp, not {spec.protocol!r}")
    if base is not None and spec.protocol != base.protocol:
        raise _body_error(f"a {base.protocol} proxy stays one: delete it and create a {spec.protocol} proxy")
    if data.get("enabled") is not None:  # JSON null: the default, as Go's decoder reads it
        if not isinstance(data["enabled"], bool):
            raise _body_error(f"enabled is true or false, not {data['enabled']!r}")
        spec.enabled = data["enabled"]
    for key in ("name", "upstream"):
        if not getattr(spec, key):
            raise Invalid(f"missing required field: {key}")
    return spec


def batch_from_json(data: Any) -> list[tuple[ProxySpec, list[Toxic]]]:
    """
    A populate body, or a C{--config} file: a list of proxies, each with
    its toxics (which toxiproxy drops; echoapp applies them).

    @raise Invalid: naming the proxy by its place (1 is the first).
    """
    batch: list[tuple[ProxySpec, list[Toxic]]] = []
    for _ in checking_batch(data, batch):
        pass
    return batch


def checking_batch(data: Any, batch: list[tuple[ProxySpec, list[Toxic]]]) -> Iterator[None]:
    """
    L{batch_from_json} a proxy at a time, into C{batch}: the API checks a
    populate's body in slices of the reactor's time (a body of 2,500
    proxies with a toxic each took some 45 ms to check).
    """
    if not isinstance(data, list):
        raise _body_error(f"a list of proxies, not {type(data).__name__}")
    for place, entry in enumerate(data, 1):
        try:
            spec = spec_from_json(entry)
            toxics = entry.get("toxics") or []
            if not isinstance(toxics, list):
                raise _body_error("toxics is a list")
            batch.append((spec, [toxic_from_json(toxic) for toxic in toxics]))
        except ProxyError as error:
            raise type(error)(f"{error} at proxy {place}") from None
        yield None
