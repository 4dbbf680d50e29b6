"""
A real twistd's wire record, read back from its C{--record} capture: the
pcapng file is turned into the same records (L{echoapp._record.Recorder})
an in-process peer keeps, so the report shows one timeline whatever ran
the peer.

Why the capture and not a text file beside it: the capture is what
C{--record} already writes, whole and in order, with every fault's note on
its packet, so nothing new runs in the daemon; a text the daemon wrote
would need a second writer in it and would say less (no bytes past the
excerpts).  The file is read as dpkt parses pcapng blocks, one block at a
time, into a store as bounded as a test peer's.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from twisted.internet.task import Clock

from echoapp._record import CLIENT, SERVER, ConnectionRecord, Recorder
from echoapp.testing._wire import TEST_RECORD_BYTES

SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
LITTLE = 0x1A2B3C4D
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
OPT_COMMENT, OPT_TSRESOL = 1, 9
MAX_OPEN = 4096  # connections (UDP sources) followed at once: past it, the oldest is let go


def packets(source: BinaryIO) -> Iterator[tuple[float, bytes, list[str]]]:
    """Each packet of a pcapng file: its time, its bytes (raw IP) and its comments."""
    import dpkt  # as the capture itself: only a capture needs it

    pcapng = dpkt.pcapng
    little = True
    divisor = 1e6
    while True:
        head = source.read(12)
        if len(head) < 8:
            return
        if struct.unpack("<I", head[:4])[0] == SHB:
            little = struct.unpack("<I", head[8:12])[0] == LITTLE
        order = "<" if little else ">"
        kind, length = struct.unpack(order + "II", head[:8])
        if length < 12:
            raise ValueError("not a pcapng file: a block shorter than its header")
        block = head + source.read(length - 12)
        if kind == IDB:
            idb = (pcapng.InterfaceDescriptionBlockLE if little else pcapng.InterfaceDescriptionBlock)(block)
            for option in idb.opts:
                if option.code == OPT_TSRESOL:
                    value = option.data[0]
                    divisor = float((2 if value & 0x80 else 10) ** (value & 0x7F))
        elif kind == EPB:
            epb = (pcapng.EnhancedPacketBlockLE if little else pcapng.EnhancedPacketBlock)(block)
            at = ((epb.ts_high << 32) | epb.ts_low) / divisor
            comments = [option.text for option in epb.opts if option.code == OPT_COMMENT]
            yield at, bytes(epb.pkt_data), comments


def _address(raw: bytes, port: int) -> tuple[str, int]:
    family = socket.AF_INET6 if len(raw) == 16 else socket.AF_INET
    return socket.inet_ntop(family, raw), port


def _parse(packet: bytes) -> tuple[Any, tuple[str, int], tuple[str, int]] | None:
    """The TCP or UDP part of a raw IP packet, and its source and destination."""
    import dpkt

    ip: Any = dpkt.ip6.IP6(packet) if packet[:1] and packet[0] >> 4 == 6 else dpkt.ip.IP(packet)
    inner = ip.data
    if not isinstance(inner, dpkt.tcp.TCP | dpkt.udp.UDP):
        return None
    return inner, _address(ip.src, inner.sport), _address(ip.dst, inner.dport)


def read_capture(source: BinaryIO, listeners: Mapping[tuple[str, str, int], str], note: str = "") -> Recorder:
    """
    The records of a capture: C{listeners} names the service at each
    C{("tcp" or "udp", host, port)} it listened on (a datagram to one of
    them is a client's); C{note} is each record's header's (the seed).
    Kept within L{TEST_RECORD_BYTES}.
    """
    clock = Clock()
    recorder = Recorder(clock, TEST_RECORD_BYTES)
    open_: dict[tuple[tuple[str, int], tuple[str, int]], ConnectionRecord] = {}
    for at, packet, comments in packets(source):
        found = _parse(packet)
        if found is None:
            continue
        inner, src, dst = found
        clock.rightNow = at
        tcp = inner.flags if hasattr(inner, "flags") else None
        if (
            tcp is not None and tcp & SYN and not tcp & ACK
        ):  # a connection (or one a rotated file opens again)
            open_[(src, dst)] = recorder.open("tcp", listeners.get(("tcp", *dst), "?"), src, dst, note)
            if len(open_) > MAX_OPEN:
                del open_[next(iter(open_))]
            continue
        client_sends = (src, dst) in open_ if tcp is not None else ("udp", *src) not in listeners
        key = (src, dst) if client_sends else (dst, src)
        record = open_.get(key)
        if record is None and tcp is None:
            record = open_[key] = recorder.open("udp", listeners.get(("udp", *key[1]), "?"), *key, note)
        if record is None or (tcp is not None and tcp & SYN):
            continue
        direction = CLIENT if client_sends else SERVER
        for comment in comments:
            if comment.startswith("refused: "):
                record.refused(comment[len("refused: ") :])
            else:
                record.fault("", comment, direction=direction)
        if inner.data:
            record.data(direction, bytes(inner.data))
        if tcp is not None and tcp & (FIN | RST):
            record.closed("client" if client_sends else "server", "RST" if tcp & RST else "FIN")
            if tcp & RST or {side for side, _ in record.closed_sides} == {"client", "server"}:
                record.lost(clean=not record.reset)
                del open_[key]
    return recorder
