"""
The synthetic packets' headers and their pcapng blocks, laid out by dpkt:
the TCP flags, the enhanced packet block without options (L{Blocks}), and
a side's data packets (L{DataHeaders}) built once with dpkt and patched
per packet where dpkt's own field definitions say each field is.
"""

from __future__ import annotations

import struct
import sys
from typing import Any

from echoapp._accelerator import accelerator

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
OTHER = {"client": "server", "server": "client"}
PER_PACKET = ("seq", "ack", "sum")  # the TCP fields each data packet changes, in dpkt's names


def field_offset(kind: Any, name: str) -> int:
    """Where dpkt lays out the header field C{name} of the packet class C{kind}, in bytes."""
    codes = ""
    for field, code, _ in kind.__hdr__:
        if field == name:
            return struct.calcsize(kind.__hdr_fmt__[0] + codes)
        codes += code
    raise LookupError(name)


class Blocks:
    """
    dpkt's enhanced packet block with no options (the class its pcapng
    writer chooses by the machine's byte order), packed here: its header's
    fields but the length that ends it, the packet padded to 32 bits, then
    what dpkt writes after the packet (nothing, with no options) and the
    length again.
    """

    __slots__ = ("before", "block_type", "empty", "head", "options", "order", "trailers")

    def __init__(self, dpkt: Any) -> None:
        pcapng = dpkt.pcapng
        kind = pcapng.EnhancedPacketBlockLE if sys.byteorder == "little" else pcapng.EnhancedPacketBlock
        empty = bytes(kind(caplen=0, pkt_len=0, pkt_data=b""))
        order, head = kind.__hdr_fmt__[0], kind.__hdr_len__ - 4
        self.order, self.before = order, head  # the packet starts after the header's fields
        self.options = empty[head:-4]
        (self.block_type,) = struct.unpack(order + "I", empty[:4])
        self.head = struct.Struct(kind.__hdr_fmt__[:-1]).pack
        self.empty = len(empty)
        self.trailers = [struct.Struct(f"{order}{pad}x{len(self.options)}sI").pack for pad in range(4)]

    def block(self, at: float, packet: bytes, payload: bytes = b"") -> tuple[bytes, bytes, bytes, bytes, int]:
        """The block of C{packet + payload} sent C{at}: its four pieces, and its length."""
        size = len(packet) + len(payload)
        pad = -size % 4
        length = self.empty + size + pad
        stamp = round(at * 1e6)  # microseconds, as dpkt writes them
        head = self.head(self.block_type, length, 0, stamp >> 32, stamp & 0xFFFFFFFF, size, size)
        return head, packet, payload, self.trailers[pad](self.options, length), length


class DataHeaders:
    """
    One side's data packets (PSH, ACK), as whole pcapng blocks: the IP and
    TCP headers built once with dpkt; for each size of payload (the last
    one kept: a side mostly sends one size after another) what depends on
    the size alone is made once (the block's lengths, the IP length and
    the IPv4 header checksum, the padding); per packet then only the time,
    the sequence and acknowledgement numbers and the TCP checksum are
    packed, with two C{struct} calls, where dpkt's fields say they are.
    The checksums are the one's-complement sums of RFC 1071, computed as a
    remainder: a sum of 16-bit words is congruent modulo 0xFFFF to the
    number the bytes spell (2**16 = 1 modulo 0xFFFF), so a payload's share
    is C{int.from_bytes(payload) % 0xFFFF}, in C, and the template's
    constant words are summed once.
    """

    __slots__ = (
        "base",
        "blocks",
        "first",
        "gaps",
        "head",
        "ip_base",
        "ip_fields",
        "length",
        "pack",
        "packed",
        "receiver",
        "second",
        "sender",
        "size",
        "tail",
        "tcp_base",
        "template",
        "total",
        "trailer",
    )

    def __init__(
        self, dpkt: Any, blocks: Blocks, addresses: dict[str, tuple[bytes, int]], six: bool, sender: str
    ) -> None:
        self.blocks = blocks
        self.sender, self.receiver = sender, OTHER[sender]
        (source, sport), (destination, dport) = addresses[sender], addresses[OTHER[sender]]
        segment = dpkt.tcp.TCP(sport=sport, dport=dport, flags=PSH | ACK, win=65535)
        tcp_header = len(bytes(segment))
        if six:
            ip = dpkt.ip6.IP6
            packet = ip(src=source, dst=destination, nxt=6, hlim=64, plen=tcp_header)
            packet.data = segment
            fields: list[tuple[int, int | None]] = [(field_offset(ip, "plen"), tcp_header)]  # no checksum
        else:
            ip = dpkt.ip.IP
            packet = ip(src=source, dst=destination, p=6, ttl=64, data=segment)
            fields = [(field_offset(ip, "len"), ip.__hdr_len__ + tcp_header), (field_offset(ip, "sum"), None)]
        template = bytearray(bytes(packet))
        below = ip.__hdr_len__
        for at, _ in fields:  # the IP fields a size changes: zero, summed without them
            template[at : at + 2] = bytes(2)
        seq, ack, tcp = (below + field_offset(dpkt.tcp.TCP, name) for name in PER_PACKET)
        template[seq : ack + 4] = bytes(8)
        template[tcp : tcp + 2] = bytes(2)
        self.template, self.ip_fields = bytes(template[:seq]), fields
        self.gaps = (bytes(template[ack + 4 : tcp]), bytes(template[tcp + 2 :]))
        self.tail = struct.Struct(f">II{tcp - ack - 4}sH{len(template) - tcp - 2}s").pack
        self.ip_base = 0 if six else int.from_bytes(template[:below], "big") % 0xFFFF
        pseudo = int.from_bytes(source, "big") + int.from_bytes(destination, "big") + 6  # + TCP length
        self.tcp_base = (pseudo + int.from_bytes(template[below:], "big") + tcp_header) % 0xFFFF
        self.length = len(template)  # the headers' length
        self.head = struct.Struct(f"{blocks.order}12sII{8 + seq}s").pack
        self.size = self.base = self.total = -1
        self.first = self.second = self.trailer = b""
        self.packed: tuple[Any, ...] = ()  # the accelerator's pack_run reads the sized pieces from here
        mmsg = accelerator()
        self.pack: Any = None if mmsg is None else mmsg.pack_data

    def _sized(self, size: int) -> None:
        """What depends on the payload's size alone, made for C{size}."""
        blocks, length = self.blocks, self.length + size
        pad = -length % 4
        total = blocks.empty + length + pad
        header = bytearray(self.template)
        for at, extra in self.ip_fields:
            if extra is None:  # the IPv4 header checksum, over the header with its length in
                struct.pack_into(">H", header, at, 0xFFFF - (self.ip_base + length) % 0xFFFF)
            else:
                struct.pack_into(">H", header, at, extra + size)
        self.first = struct.pack(f"{blocks.order}III", blocks.block_type, total, 0)
        self.second = struct.pack(f"{blocks.order}II", length, length) + bytes(header)
        self.trailer = blocks.trailers[pad](blocks.options, total)
        self.size, self.base, self.total = size, self.tcp_base + size, total
        gaps = self.gaps
        self.packed = (
            self.first,
            self.second,
            *gaps,
            self.trailer,
            self.base,
            total,
            self.sender,
            self.receiver,
        )

    def block(self, out: list[bytes], at: float, seq: int, ack: int, payload: bytes) -> int:
        """The block of a packet carrying C{payload} sent C{at}, added to C{out}: its length."""
        if len(payload) != self.size:
            self._sized(len(payload))
        pack = self.pack
        if pack is None:
            out += self._pieces(at, seq, ack, payload)
        else:  # the C accelerator's twin of L{_pieces}, in one piece
            first, second, (gap, after), trailer = self.first, self.second, self.gaps, self.trailer
            out.append(pack(first, second, gap, after, trailer, self.base, at, seq, ack, payload))
        return self.total

    def _pieces(self, at: float, seq: int, ack: int, payload: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """The block in four pieces, for the size L{_sized} made last."""
        number = int.from_bytes(payload, "big")
        if len(payload) & 1:
            number <<= 8  # an odd payload is summed padded with a zero byte
        tcp = 0xFFFF - (self.base + seq + ack + number) % 0xFFFF
        stamp = round(at * 1e6)  # microseconds, as dpkt writes them
        gaps = self.gaps
        return (
            self.head(self.first, stamp >> 32, stamp & 0xFFFFFFFF, self.second),
            self.tail(seq, ack, gaps[0], tcp, gaps[1]),
            payload,
            self.trailer,
        )

    def header(self, seq: int, ack: int, payload: bytes) -> bytes:
        """The IP and TCP headers of a packet carrying C{payload}, its checksums computed."""
        if len(payload) != self.size:
            self._sized(len(payload))
        pieces = self._pieces(0.0, seq, ack, payload)
        return pieces[0][self.blocks.before :] + pieces[1]
