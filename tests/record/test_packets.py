"""
The capture's common block (L{echoapp._record.packets}): a data packet
packed from its side's template is, byte for byte, the enhanced packet
block dpkt itself makes of the same packet, whatever the sizes that came
before it (what depends on a size is made once per size, and made again
when the size changes).
"""

from __future__ import annotations

import ipaddress
import random
import sys
from typing import Any

import dpkt
from twisted.trial.unittest import SynchronousTestCase

from echoapp._record.packets import ACK, PSH, Blocks, DataHeaders
from tests.support import udp_accelerator

SIZES = [64, 64, 3, 64, 0, 1, 1500, 1500, 2, 64]  # sizes again, odd and even, and none
AT = 1_700_000_000.123456


def by_dpkt(
    source: bytes, destination: bytes, six: bool, seq: int, ack: int, payload: bytes
) -> tuple[bytes, bytes]:
    """The data packet as dpkt makes it, and the enhanced packet block its writer makes of it at L{AT}."""
    flags = PSH | ACK
    segment = dpkt.tcp.TCP(sport=51234, dport=40011, seq=seq, ack=ack, flags=flags, win=65535, data=payload)
    if six:
        packet = dpkt.ip6.IP6(src=source, dst=destination, nxt=6, hlim=64, plen=len(bytes(segment)))
        packet.data = segment
    else:
        packet = dpkt.ip.IP(src=source, dst=destination, p=6, ttl=64, data=segment)
    data = bytes(packet)
    pcapng = dpkt.pcapng
    kind = pcapng.EnhancedPacketBlockLE if sys.byteorder == "little" else pcapng.EnhancedPacketBlock
    stamp = round(AT * 1e6)
    high, low = stamp >> 32, stamp & 0xFFFFFFFF
    block = kind(caplen=len(data), pkt_len=len(data), pkt_data=data, ts_high=high, ts_low=low)
    return data, bytes(block)


def packers() -> list[Any]:
    """Python's packing, and the C accelerator's where it is built."""
    mmsg = udp_accelerator()
    return [None] + ([mmsg.pack_data] if mmsg is not None else [])


class DataBlockTests(SynchronousTestCase):
    def test_each_block_is_dpkts_own(self) -> None:
        for six, host, peer, pack in (
            (six, host, peer, pack)
            for six, host, peer in ((False, "127.0.0.1", "127.0.0.2"), (True, "::1", "fe80::1"))
            for pack in packers()
        ):
            source, destination = ipaddress.ip_address(peer).packed, ipaddress.ip_address(host).packed
            addresses = {"client": (source, 51234), "server": (destination, 40011)}
            side = DataHeaders(dpkt, Blocks(dpkt), addresses, six, "client")
            side.pack = pack
            seq, ack = 0xFFFFFF00, 5000  # the sequence number wraps on the way
            for size in SIZES:
                payload = bytes((size * 7 + i) % 256 for i in range(size))
                pieces: list[bytes] = []
                length = side.block(pieces, AT, seq & 0xFFFFFFFF, ack, payload)
                packet, block = by_dpkt(source, destination, six, seq & 0xFFFFFFFF, ack, payload)
                self.assertEqual(b"".join(pieces), block, (six, size))
                self.assertEqual(length, len(block))
                headers = side.header(seq & 0xFFFFFFFF, ack, payload)  # a packet held back, made whole later
                self.assertEqual(headers + payload, packet, (six, size))
                seq += size

    def test_the_accelerators_blocks_are_pythons(self) -> None:
        """Random sizes, times (half microseconds too), numbers near the 32-bit wrap; IPv4 and IPv6."""
        if len(packers()) < 2:
            self.skipTest("echoapp's C accelerator is not built here")
        rng = random.Random(29)
        for six in (False, True):
            source, destination = (
                bytes(rng.randrange(256) for _ in range(16 if six else 4)) for _ in range(2)
            )
            addresses = {
                "client": (source, rng.randrange(65536)),
                "server": (destination, rng.randrange(65536)),
            }
            side = DataHeaders(dpkt, Blocks(dpkt), addresses, six, "server")
            for _ in range(300):
                size = rng.choice([0, 1, 2, 3, 63, 64, 1499, rng.randrange(32769)])
                payload = rng.randbytes(size)
                at = rng.choice([AT, 0.0, 1.5e-6, 2.5e-6, rng.uniform(0, 4e9)])
                seq, ack = rng.choice([0, 0xFFFFFFFF, rng.randrange(1 << 32)]), rng.randrange(1 << 32)
                made: list[list[bytes]] = []
                for pack in packers():
                    side.pack = pack
                    pieces: list[bytes] = []
                    side.block(pieces, at, seq, ack, payload)
                    made.append(pieces)
                self.assertEqual(b"".join(made[0]), b"".join(made[1]), (six, size, at, seq, ack))
