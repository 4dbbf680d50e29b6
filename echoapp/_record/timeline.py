"""
The wire record as text, one block per connection or UDP source::

    conn 3  127.0.0.1:51234 -> echoapp-tcp 127.0.0.1:40011  seed 1234, faults latency=200ms
    +0.000  accepted
    +0.000  server->client  fault: latency held 10 B for 200 ms
    +0.001  client->server   6 B  "Hello\\n"
    +0.200  server->client  10 B  "Welcome!\\r\\n"
    +0.350  client closed (FIN)

Times are seconds since the connection opened, by the record's clock.
When the text is cut (a report has room for so much), the most relevant
records come first: refused or reset ones, then those a fault acted on,
then the newest, so the connection a failing test is about is the one
shown.
"""

from __future__ import annotations

from echoapp._record.recorder import Recorder
from echoapp._record.store import CLIENT, SERVER, Address, ConnectionRecord, Event

EXCERPT = 40  # bytes of each chunk shown; the capture has them all


def address_text(address: Address) -> str:
    """C{host:port} (C{[host]:port} for IPv6), or C{?} for an address that is not IP (a UNIX socket)."""
    if address is None:
        return "?"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def shown(data: bytes) -> str:
    """Bytes as a quoted line a reader can copy: escapes for what is not printable ASCII."""
    text = repr(bytes(data))[2:-1].replace('"', '\\"')
    return f'"{text}"'


def relevance(record: ConnectionRecord) -> tuple[int, int]:
    """The sort key, most relevant first: refused or reset, then faulted, then newest."""
    rank = 2 if record.refusal is not None or record.reset else 1 if record.faulted else 0
    return (-rank, -record.number)


def header(record: ConnectionRecord) -> str:
    """The block's first line: which connection, from where, to which listener, and its faults."""
    kind = "conn" if record.kind == "tcp" else "udp"
    line = f"{kind} {record.number}  {address_text(record.client)} -> {record.listener} "
    line += address_text(record.server)
    return f"{line}  {record.note}" if record.note else line


def event_line(record: ConnectionRecord, event: Event, width: int) -> str:
    """One event as a line, its time relative to the record's open."""
    at = f"+{event.at - record.opened:.3f}"
    if event.kind == "data":
        assert event.direction is not None
        excerpt = record.bytes[event.direction].excerpt(event.offset, min(event.size, EXCERPT))
        body = shown(excerpt) if excerpt is not None else "(bytes not kept)"
        if excerpt is not None and event.size > EXCERPT:
            body += " ..."
        return f"{at}  {event.direction}  {event.size:>{width}} B  {body}"
    if event.kind == "fault":
        way = f"{event.direction}  " if event.direction else ""
        return f"{at}  {way}fault: {event.text}"
    if event.kind == "refused":
        return f"{at}  refused: {event.text}"
    return f"{at}  {event.text}"


def block(record: ConnectionRecord) -> list[str]:
    """The lines of one record, with what was left out said where it was left out."""
    if not record.kept:
        return [header(record), "  (evicted: the store keeps the newest records within its bound)"]
    events = list(record.events())
    first = len(record.head)
    width = max((len(str(e.size)) for e in events if e.kind == "data"), default=1)
    lines = [header(record)]
    lines.extend(event_line(record, event, width) for event in events[:first])
    if record.events_left_out:
        lines.append(f"  ... {record.events_left_out} events left out ...")
    lines.extend(event_line(record, event, width) for event in events[first:])
    for direction in (CLIENT, SERVER):
        kept = record.bytes[direction]
        if kept.left_out:
            lines.append(
                f"  {direction}: {kept.total} B in all, {kept.left_out} B between the first and last not kept"
            )
    if not record.ended and record.kind == "tcp":
        lines.append("  (still open)")
    return lines


def render(recorder: Recorder, limit: int | None = None, owner: object = None) -> str:
    """
    The records C{recorder} keeps as text, most relevant first; with
    C{limit}, at most about that many characters, ending with how many
    records did not fit; with C{owner}, only the records of it (a proxy's).
    """
    kept = recorder.records
    records = sorted((r for r in kept if owner is None or r.owner is owner), key=relevance)
    out: list[str] = []
    used = 0
    for index, record in enumerate(records):
        text = "\n".join(block(record))
        if limit is not None and out and used + len(text) > limit:
            out.append(f"... {len(records) - index} more records left out")
            break
        out.append(text)
        used += len(text) + 2
    if recorder.evicted:
        out.append(f"({recorder.evicted} older records evicted to stay within {recorder.budget} bytes)")
    return "\n\n".join(out) + ("\n" if out else "")
