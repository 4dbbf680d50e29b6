"""
The wire record as a pcapng file that Wireshark and tshark open: a
L{Sink} for L{echoapp._record.store.Recorder} that streams each event to
disk as it happens.

Packets are synthetic but consistent: raw IPv4 or IPv6 (link type
LINKTYPE_RAW, so no made-up Ethernet addresses), with TCP headers whose
handshake (SYN, SYN-ACK, ACK), sequence and acknowledgement numbers follow
the bytes, so "Follow TCP stream" reassembles each connection byte for
byte; a FIN or an RST at the close, from the side that closed; UDP
datagrams as UDP packets.  A fault's note is an C{opt_comment} on the
packet it changed (C{frame.comment} in tshark), so it shows beside the
bytes in the packet list.  A connection that is not over IP (a UNIX
socket) gets addresses from the documentation networks (192.0.2.0/24 and
198.51.100.0/24), one port pair per connection.

dpkt stays in charge of the packet layout and the file format, and is
imported only when a capture file is opened, so C{import echoapp} and
recording to memory stay light.  It was chosen over scapy and
python-pcapng: it builds both the IP/TCP/UDP packets (checksums
included) and the pcapng blocks (with options, so comments), it is pure
Python, small (under 2 MB installed, no dependencies) and the fastest of
the three at building packets (scapy, kept up more actively, is some ten
times larger and builds a packet in tens of microseconds; python-pcapng
writes the file format only, leaving the packets to be made by hand).

Building a dpkt packet object per chunk cost some 25 us a packet (its
headers copied from defaults, its checksums summed in Python), eight
times a request's own CPU; so the common packet, a connection's data
with no note on it, is made another way, with dpkt's layout: each side's
IP and TCP headers are built once by dpkt (L{DataHeaders}); what depends
on the payload's size alone (the block's and the IP lengths, the IPv4
header checksum, the padding) is made once for each size a side sends
in a row; and per packet only the time, the sequence and
acknowledgement numbers and the TCP checksum are packed, at the offsets
dpkt's own header and block definitions give, with two C{struct} calls
(the block's fields are in the machine's byte order, the packet's in
the network's), or in one call of echoapp's optional C accelerator,
which makes the same bytes (L{DataHeaders.block}).  The checksums are computed, not left zero (Wireshark
does not check them by default, but a user who turns checking on should
not see every packet flagged): a one's-complement sum is the remainder
modulo 0xFFFF of the number the bytes spell, so a payload's share is
C{int.from_bytes(payload) % 0xFFFF}, done in C.  A packet with a note, a
handshake, a FIN or an RST, a UDP datagram and a chunk over L{SEGMENT}
are made whole by dpkt as before: they are few.  The packets come in
batches (L{CaptureFile.batch}: the store's journal,
L{echoapp._record.store}, settled every second by the capture file's
service, at every open and close, or past its size); each batch's blocks
are written in one call, so what waits in memory is one batch at most.

The file rotates when it passes C{max_bytes}: C{FILE} becomes C{FILE.1}
(and C{FILE.1} C{FILE.2}, up to C{keep} old files); the new file opens the
connections still open again with a handshake at their current sequence
numbers, so each file stands alone in Wireshark.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any, BinaryIO

from echoapp._accelerator import accelerator
from echoapp._record.packets import ACK, FIN, OTHER, PSH, RST, SYN, Blocks, DataHeaders
from echoapp._record.store import CLIENT, ConnectionRecord, Entry

LINKTYPE_RAW = 101
SEGMENT = 32768  # bytes of payload per synthetic packet (an IP packet holds 65535 at most)
ISN = {"client": 1000, "server": 5000}  # initial sequence numbers: fixed, so captures compare
MAX_SOURCES = 1024  # UDP sources whose addresses are kept made, not rebuilt per datagram
NO_LIMIT = 1 << 62  # bytes: a rotation size past any file's, within the C run's numbers


class Wire:
    """One connection's synthetic addresses and the next sequence number each side sends."""

    __slots__ = ("addresses", "headers", "seq", "six")

    def __init__(self, record: ConnectionRecord) -> None:
        client, server = record.client, record.server
        if client is None or server is None or (":" in client[0]) != (":" in server[0]):
            port = 1024 + record.number % 60000
            client, server = ("192.0.2.1", port), ("198.51.100.1", port)
        self.six = ":" in client[0]
        self.addresses = {
            "client": (ipaddress.ip_address(client[0]).packed, client[1]),
            "server": (ipaddress.ip_address(server[0]).packed, server[1]),
        }
        self.seq = {"client": ISN["client"], "server": ISN["server"]}
        self.headers: dict[str, DataHeaders] = {}  # by direction, made when the side first sends


class CaptureFile:
    """A pcapng capture of everything a L{Recorder} hears, rotated by size."""

    def __init__(self, path: str, max_bytes: int = 0, keep: int = 0) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotations = 0
        self._file: BinaryIO | None = None
        self._writer: Any = None
        self._dpkt: Any = None
        self._wires: dict[int, Wire] = {}
        # The packet held back: (time, headers, payload, comments, record number).
        self._held: tuple[float, bytes, bytes, list[str], int] | None = None
        self._out: list[bytes] = []
        self._size = 0
        self._last = 0.0
        self._rotating = False
        self._datagram_wires: dict[int, Wire] = {}
        self._blocks: Blocks | None = None
        # L{batch}'s runs, in C (not in an accelerator built before it: Python's, then).
        self._run: Any = getattr(accelerator(), "pack_run", None)

    # --- the file ---

    def open(self, stream: BinaryIO | None = None) -> None:
        """
        Open (truncate) the file and write the pcapng header: an C{OSError}
        says why it cannot.  Given a C{stream}, the capture goes there (a
        capture made in memory), and is never rotated.
        """
        if self._dpkt is None:
            import dpkt  # lazily: only a capture needs it

            self._dpkt = dpkt
        self._file = stream if stream is not None else open(self.path, "wb")
        self._writer = self._dpkt.pcapng.Writer(self._file, snaplen=65535, linktype=LINKTYPE_RAW)
        if self._blocks is None:
            self._blocks = Blocks(self._dpkt)
        self._size = self._file.tell()

    def close(self) -> None:
        """Write what is held and close the file; the records still open stay as they are."""
        if self._file is None:
            return
        self._release()
        self._drain()
        self._file.close()
        self._file = None

    def flush(self) -> None:
        """What is written reaches the file (a reader of a live capture sees it)."""
        if self._file is not None:
            self._release()
            self._drain()
            self._file.flush()

    def _drain(self) -> None:
        """The blocks made, written in one call."""
        if self._out and self._file is not None:
            self._file.write(b"".join(self._out))
            self._out.clear()

    def _rotate(self) -> None:
        self.close()
        self.rotations += 1
        if self.keep:
            for number in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{number}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{number + 1}")
            os.replace(self.path, f"{self.path}.1")
        self.open()
        self._rotating = True  # the new file's handshakes never rotate it again
        try:
            for wire in self._wires.values():  # each file stands alone: open connections shake hands again
                self._handshake(wire, self._last, -1)
            self._release()
        finally:
            self._rotating = False

    # --- packets ---

    def _write(
        self, at: float, packet: bytes, comments: list[str], number: int, payload: bytes = b""
    ) -> None:
        """
        Hold the packet back until the next one: a fault that acted on it (L{ConnectionRecord.fault} with
        C{last}) can still add its note.
        """
        if self._file is None:
            return
        if self._held is not None:
            self._release()
        self._held = (at, packet, b"", list(comments), number)
        self._last = at

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is None or self._file is None:
            return
        at, packet, payload, comments, _ = held
        if not comments:  # the common block: dpkt's layout, packed here
            assert self._blocks is not None
            *pieces, length = self._blocks.block(at, packet, payload)
            self._out += pieces
            self._size += length
        else:
            self._drain()
            pcapng = self._dpkt.pcapng
            little = sys.byteorder == "little"
            option = pcapng.PcapngOptionLE if little else pcapng.PcapngOption
            block = pcapng.EnhancedPacketBlockLE if little else pcapng.EnhancedPacketBlock
            opts = [option(code=pcapng.PCAPNG_OPT_COMMENT, text=text) for text in comments]
            opts.append(option(code=pcapng.PCAPNG_OPT_ENDOFOPT))
            data = packet + payload
            epb = block(caplen=len(data), pkt_len=len(data), pkt_data=data, opts=opts)
            self._writer.writepkt(epb, at)
            self._size = self._file.tell()
        if self.max_bytes and not self._rotating and self._size >= self.max_bytes:
            self._rotate()

    def _ip(self, wire: Wire, sender: str, protocol: int, payload: Any) -> bytes:
        dpkt = self._dpkt
        source, destination = wire.addresses[sender][0], wire.addresses[OTHER[sender]][0]
        if wire.six:
            data = bytes(payload)
            packet = dpkt.ip6.IP6(src=source, dst=destination, nxt=protocol, hlim=64, plen=len(data))
            packet.data = payload
            return bytes(packet)
        return bytes(dpkt.ip.IP(src=source, dst=destination, p=protocol, ttl=64, data=payload))

    def _tcp(
        self, wire: Wire, at: float, sender: str, flags: int, data: bytes, comments: list[str], number: int
    ) -> None:
        receiver = OTHER[sender]
        segment = self._dpkt.tcp.TCP(
            sport=wire.addresses[sender][1],
            dport=wire.addresses[receiver][1],
            seq=wire.seq[sender] & 0xFFFFFFFF,
            ack=wire.seq[receiver] & 0xFFFFFFFF if flags & ACK else 0,
            flags=flags,
            win=65535,
            data=data,
        )
        self._write(at, self._ip(wire, sender, 6, segment), comments, number)
        wire.seq[sender] += len(data) + (1 if flags & (SYN | FIN) else 0)

    def _handshake(self, wire: Wire, at: float, number: int) -> None:
        wire.seq["client"] -= 1
        wire.seq["server"] -= 1
        self._tcp(wire, at, "client", SYN, b"", [], number)
        self._tcp(wire, at, "server", SYN | ACK, b"", [], number)
        self._tcp(wire, at, "client", ACK, b"", [], number)

    # --- the sink ---

    def opened(self, record: ConnectionRecord) -> None:
        """A connection: its handshake."""
        wire = self._wires[record.number] = Wire(record)
        self._handshake(wire, record.opened, record.number)

    def batch(self, entries: list[Entry], comments: dict[int, list[str]]) -> None:
        """
        What went on the wire since the last batch, in order, written in
        one call: a data packet of a connection made from its side's
        L{DataHeaders} (the last one held back, as every packet is, for a
        note that may still come); one with a note, one over L{SEGMENT} and
        a UDP datagram made whole by dpkt.  Where the C accelerator is
        built, its C{pack_run} makes the runs of data packets between the
        entries with a note (L{_entry} is its twin): made in Python, they
        cost half a microsecond more a request, a quarter of what recording
        added to one.
        """
        if self._file is None or not entries:
            return
        run, last, index = self._run, len(entries) - 1, 0
        noted, next_noted = sorted(comments) if comments and run is not None else [], 0
        while index <= last:
            # With a packet held back, the next entry is Python's (L{_entry} releases it, or keeps it
            # for an entry that makes no packet): the C run would release it first in any case.
            if run is not None and index < last and self._held is None:
                while next_noted < len(noted) and noted[next_noted] < index:
                    next_noted += 1
                stop = min(last, noted[next_noted]) if next_noted < len(noted) else last
                if index < stop:
                    start = index
                    limit = min(self.max_bytes, NO_LIMIT)  # C's 64-bit numbers (0: none)
                    wires, out = self._wires, self._out
                    index, self._size = run(entries, index, stop, wires, out, self._size, limit, SEGMENT)
                    if index > start and self.max_bytes and self._size >= self.max_bytes:
                        self._rotate()  # after the block that passed the size, as L{_entry} rotates
                        continue
            self._entry(index, entries[index], comments, last)
            index += 1
        self._last = entries[-1][0]
        self._drain()

    def _entry(self, index: int, entry: Entry, comments: dict[int, list[str]], last: int) -> None:
        """One entry of a batch (L{batch}), its packet made here."""
        at, record, direction, data = entry
        notes = comments.get(index) if comments else None
        wire = self._wires.get(record.number)  # None for a UDP source: its numbers are not in it
        if wire is None or notes or len(data) > SEGMENT:
            self.data(record, direction, data, notes or [], at)
            return
        if self._held is not None:
            self._release()
        side = wire.headers.get(direction)
        if side is None:
            side = wire.headers[direction] = self._side(wire, direction)
        seq = wire.seq
        sent = seq[side.sender]
        seq[side.sender] = sent + len(data)
        ack = seq[side.receiver] & 0xFFFFFFFF
        if index == last:  # held back: a fault's note may still be for it
            self._held = (at, side.header(sent & 0xFFFFFFFF, ack, data), data, [], record.number)
        else:
            self._size += side.block(self._out, at, sent & 0xFFFFFFFF, ack, data)
            if self.max_bytes and self._size >= self.max_bytes:
                self._rotate()

    def _side(self, wire: Wire, direction: str) -> DataHeaders:
        assert self._blocks is not None
        sender = "client" if direction == CLIENT else "server"
        return DataHeaders(self._dpkt, self._blocks, wire.addresses, wire.six, sender)

    def data(
        self, record: ConnectionRecord, direction: str, data: bytes, comments: list[str], at: float
    ) -> None:
        """Bytes as TCP segments of at most L{SEGMENT}, or one datagram as one UDP packet, made by dpkt."""
        sender = "client" if direction == CLIENT else "server"
        if record.kind == "udp":
            wire = self._datagram_wires.get(record.number)
            if wire is None:
                if len(self._datagram_wires) >= MAX_SOURCES:  # bounded: the oldest source is made again
                    del self._datagram_wires[next(iter(self._datagram_wires))]
                wire = self._datagram_wires[record.number] = Wire(record)
            room = 65535 - 8 - (0 if wire.six else 20)  # what a synthetic packet of the wire's IP holds
            if len(data) > room:  # a datagram over IPv6 drawn over IPv4 (a proxy between the two)
                comments = [*comments, f"{len(data)} bytes, cut to the {room} an IPv4 packet holds"]
                data = data[:room]
            dpkt = self._dpkt
            datagram = dpkt.udp.UDP(
                sport=wire.addresses[sender][1], dport=wire.addresses[OTHER[sender]][1], data=data
            )
            datagram.ulen = len(datagram)
            self._write(at, self._ip(wire, sender, 17, datagram), comments, record.number)
            return
        wire = self._wires.get(record.number)
        if wire is None:
            return
        for start in range(0, len(data), SEGMENT):
            self._tcp(wire, at, sender, PSH | ACK, data[start : start + SEGMENT], comments, record.number)
            comments = []

    def closed(self, record: ConnectionRecord, side: str, how: str, comments: list[str]) -> None:
        """A FIN or an RST from C{side}."""
        wire = self._wires.get(record.number)
        if wire is not None:
            flags = (RST | ACK) if how == "RST" else (FIN | ACK)
            self._tcp(wire, record.store.clock.seconds(), side, flags, b"", comments, record.number)

    def ended(self, record: ConnectionRecord) -> None:
        """The connection is gone: its state goes, and what is written reaches the disk."""
        if self._wires.pop(record.number, None) is not None:
            self.flush()

    def comment_last(self, record: ConnectionRecord, text: str) -> bool:
        """The note joins the packet held back, if it is C{record}'s."""
        if self._held is None or self._held[4] != record.number:
            return False
        self._held[3].append(text)
        return True
