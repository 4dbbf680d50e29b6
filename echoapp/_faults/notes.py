"""
What the faults tell the wire record, in words: each piece that acts
(L{sending}, L{reading}, L{closing}, L{datagrams}) calls
C{record.fault(kind, note, ...)} on its connection's record
(L{echoapp._record.record_of}), and only where one is there: a connection
nothing records pays one L{None} check where a fault acts, nothing more.
The words are made here, so the pieces stay about what they do.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from echoapp._faults.spec import OFF, Faults

_CONDITIONS = ("first", "after_messages", "match", "active_from", "active_until")


def ms(seconds: float) -> str:
    """A delay as a reader of a timeline wants it: C{"200 ms"}, C{"0.5 ms"}."""
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 10 or value == int(value) else f"{value:.2g} ms"


def held(size: int, delay: float, faults: Faults) -> str:
    """A write held before it goes: for how long, and how it will go (slices, paced)."""
    text = f"held {size} B for {ms(delay)}" if delay > 0 else f"{size} B"
    if faults.slice:
        text += f", cut into slices of {faults.slice} B"
        if faults.slice_delay:
            text += f" {ms(faults.slice_delay)} apart"
    elif faults.bandwidth:
        text += f", paced at {faults.bandwidth} B/s ({ms(size / faults.bandwidth)})"
    return text


def kind_of_hold(faults: Faults) -> str:
    """The fault a hold is named after: the one that shapes it most visibly."""
    if faults.slice:
        return "slice"
    if faults.bandwidth:
        return "bandwidth"
    return "latency"


def slice_note(start: int, size: int, total: int, whole: int, since: float | None) -> str:
    """One slice as it goes: which of how many, its bytes, and how long after the one before."""
    number, count = start // whole + 1, -(-total // whole)
    text = f"slice {number} of {count}: {size} B (bytes {start}-{start + size - 1} of {total})"
    if since is not None:
        text += f", {ms(since)} after the last"
    return text


def conditions(faults: Faults) -> str:
    """The conditions of conditional faults, as C{--fault} takes them (C{after-messages=2})."""
    chosen = {name: getattr(faults, name) for name in _CONDITIONS if getattr(faults, name) is not None}
    return str(replace(OFF, **chosen))


def switched(on: bool, faults: Faults) -> str:
    """A conditional fault switched on (or off) for this connection: which, and why."""
    if on:
        return f"faults on ({conditions(faults)}): {without_conditions(faults)}"
    return f"faults off ({conditions(faults)})"


def without_conditions(faults: Faults) -> str:
    """The faults themselves, their conditions left out."""
    unconditional: dict[str, Any] = {name: None for name in _CONDITIONS}
    return str(replace(faults, **unconditional, fraction=OFF.fraction))
