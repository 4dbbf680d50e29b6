"""
The synthetic packets' headers, laid out by dpkt: the TCP flags, and a
side's data headers (L{DataHeaders}) built once with dpkt and patched per
packet where dpkt's own field definitions say each field is.
"""

from __future__ import annotations

import struct
from typing import Any

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
OTHER = {"client": "server", "server": "client"}
ZEROED_TCP = (("seq", "I"), ("ack", "I"), ("sum", "H"))  # what changes per data packet, in dpkt's names


def field_offset(kind: Any, name: str) -> int:
    """Where dpkt lays out the header field C{name} of the packet class C{kind}, in bytes."""
    codes = ""
    for field, code, _ in kind.__hdr__:
        if field == name:
            return struct.calcsize(kind.__hdr_fmt__[0] + codes)
        codes += code
    raise LookupError(name)


class DataHeaders:
    """
    The IP and TCP headers of one side's data packets (PSH, ACK): built
    once with dpkt, then per packet its four changing fields (the IP
    length, the IPv4 header checksum, the sequence and acknowledgement
    numbers, the TCP checksum) packed into dpkt's layout with one
    C{struct} call, where dpkt's fields say they are.  The checksums are
    the one's-complement sums of RFC 1071, computed as a remainder: a sum
    of 16-bit words is congruent modulo 0xFFFF to the number the bytes
    spell (2**16 = 1 modulo 0xFFFF), so a payload's share is
    C{int.from_bytes(payload) % 0xFFFF}, in C, and the template's constant
    words are summed once.
    """

    __slots__ = ("gaps", "ip_base", "ip_header", "pack", "six", "tcp_base", "tcp_header")

    def __init__(self, dpkt: Any, addresses: dict[str, tuple[bytes, int]], six: bool, sender: str) -> None:
        (source, sport), (destination, dport) = addresses[sender], addresses[OTHER[sender]]
        segment = dpkt.tcp.TCP(sport=sport, dport=dport, flags=PSH | ACK, win=65535)
        self.tcp_header = len(bytes(segment))
        self.six = six
        if six:
            ip = dpkt.ip6.IP6
            packet = ip(src=source, dst=destination, nxt=6, hlim=64, plen=self.tcp_header)
            packet.data = segment
            fields = [(field_offset(ip, "plen"), "H")]  # IPv6 has no header checksum
        else:
            ip = dpkt.ip.IP
            packet = ip(src=source, dst=destination, p=6, ttl=64, data=segment)
            fields = [(field_offset(ip, "len"), "H"), (field_offset(ip, "sum"), "H")]
        template = bytes(packet)
        self.ip_header = below = ip.__hdr_len__
        fields += [(below + field_offset(dpkt.tcp.TCP, name), code) for name, code in ZEROED_TCP]
        # The struct: each changing field where dpkt put it, the template's bytes between.
        fmt, gaps, zeroed, end = ">", [], bytearray(template), 0
        for at, code in sorted(fields):
            fmt += f"{at - end}s{code}"
            gaps.append(template[end:at])
            end = at + struct.calcsize(">" + code)
            zeroed[at:end] = bytes(end - at)
        fmt += f"{len(template) - end}s"
        gaps.append(template[end:])
        self.pack = struct.Struct(fmt).pack
        self.gaps = gaps
        self.ip_base = 0 if six else int.from_bytes(zeroed[:below], "big") % 0xFFFF
        pseudo = int.from_bytes(source, "big") + int.from_bytes(destination, "big") + 6  # + TCP length
        self.tcp_base = (pseudo + int.from_bytes(zeroed[below:], "big") + self.tcp_header) % 0xFFFF

    def header(self, seq: int, ack: int, payload: bytes) -> bytes:
        """The headers of a packet carrying C{payload}, its checksums computed."""
        size = len(payload)
        number = int.from_bytes(payload, "big")
        if size & 1:
            number <<= 8  # an odd payload is summed padded with a zero byte
        tcp = 0xFFFF - (self.tcp_base + size + seq + ack + number) % 0xFFFF
        gaps = self.gaps
        if self.six:
            return self.pack(
                gaps[0], self.tcp_header + size, gaps[1], seq, gaps[2], ack, gaps[3], tcp, gaps[4]
            )
        length = self.ip_header + self.tcp_header + size
        ip = 0xFFFF - (self.ip_base + length) % 0xFFFF
        return self.pack(gaps[0], length, gaps[1], ip, gaps[2], seq, gaps[3], ack, gaps[4], tcp, gaps[5])
