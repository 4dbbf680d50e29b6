"""
The values C{--fault} takes (durations, sizes, probabilities, flags), each
read from its text with a one-line reason when it is not one.
"""

from __future__ import annotations

import re

DURATION_FORM = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")
SIZE_FORM = re.compile(r"^(\d+)([KM]?B?)$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1 << 20, "MB": 1 << 20}
STALLS = ("read", "answer")
MAX_DURATION = 86400.0  # seconds: the longest latency, delay or slow close a fault takes


def duration(text: str) -> float:
    match = DURATION_FORM.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (like 50ms or 2s)")
    value = float(match.group(1))
    seconds = value / 1000 if match.group(2) == "ms" else value
    if not seconds <= MAX_DURATION:  # 400 digits are inf, which --fault could not read back
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise ValueError(f"{shown!r} is longer than a day ({MAX_DURATION:g}s)")
    return seconds


def size(text: str) -> int:
    match = SIZE_FORM.match(text.replace("/s", ""))
    if not match:
        raise ValueError(f"{text!r} is not a size in bytes (like 512, 16KB or 1MB)")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).upper()]


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a probability from 0 to 1") from None
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} is not a probability from 0 to 1")
    return value


def stall(text: str) -> str:
    if text not in STALLS:
        raise ValueError(f"stall is {' or '.join(STALLS)}, not {text!r}")
    return text


def flag(text: str) -> bool:
    if text not in ("", "true", "yes", "1"):
        raise ValueError(f"{text!r}: this fault takes no value")
    return True


def seed(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"seed {text!r} is not a whole number")
    return int(text)
