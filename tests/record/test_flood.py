"""
The wire record under a flood, on a real twistd over loopback (bounded in
count and in time): the process's memory stays within the store's stated
bound (L{echoapp._record.STORE_BYTES}) plus a margin for the process
itself, and the capture file rotates within its bound.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from echoapp._record import KEEP_BYTES, RECORD_BOUND, STORE_BYTES
from echoapp._record.capture import SEGMENT
from tests.support import DEADLINE, LOOP, Twistd

CONNECTIONS = 1200  # each past a record's bound, together some 5 times the store's
AT_ONCE = 40
LINES = 300  # 64-byte lines each way: over 18 KiB, past the first and last KiB a record keeps
MAX_SIZE = 1 << 20
MARGIN = 8 << 20  # the process's own growth under load (buffers, allocator), not the records


def rss(pid: int) -> int:
    """The resident set of C{pid}, from /proc (bytes)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def converse(port: int, count: int) -> None:
    """C{count} clients at once, each sending L{LINES} lines, reading every reply, then closing."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) for _ in range(count)]
    try:
        lines = b"".join(b"%061d\r\n" % n for n in range(LINES))
        for sock in socks:
            sock.sendall(lines)
        for sock in socks:
            got = 0
            while got < LINES:
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("closed before every reply came")
                got += chunk.count(b"\n")
    finally:
        for sock in socks:
            sock.close()


class FloodTests(SynchronousTestCase):
    def test_memory_and_capture_stay_bounded(self) -> None:
        # Unbounded, the records alone would pass the bound checked below.
        self.assertGreater(CONNECTIONS * RECORD_BOUND, STORE_BYTES + MARGIN, "the flood outgrows the store")
        self.assertGreaterEqual(LINES * 63, 2 * KEEP_BYTES, "each record fills its first and last bytes")
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "flood.pcapng")
        limits = ["--max-per-peer=100000", "--max-connections=100000"]
        rotation = ["--record-max-size", str(MAX_SIZE), "--record-keep", "1"]
        server = Twistd(["echoapp-tcp", "--listen", LOOP, *limits, "--record", path, *rotation])
        self.addCleanup(server.stop)
        port = server.address_port("echoapp-tcp")
        assert server.process is not None
        pid = server.process.pid
        converse(port, AT_ONCE)  # the process as it runs, before the records grow
        before = rss(pid)
        peak = before
        deadline = time.monotonic() + 10 * DEADLINE
        for _ in range(CONNECTIONS // AT_ONCE):
            self.assertLess(time.monotonic(), deadline, "the flood is bounded in time too")
            converse(port, AT_ONCE)
            peak = max(peak, rss(pid))
        grown = peak - before
        self.assertLessEqual(grown, STORE_BYTES + MARGIN, f"RSS grew {grown} B (bound {STORE_BYTES} B)")
        files = sorted(name for name in os.listdir(directory))
        self.assertEqual(files, ["flood.pcapng", "flood.pcapng.1"], "rotated, one old file kept")
        for name in files:
            size = os.path.getsize(os.path.join(directory, name))
            self.assertLessEqual(size, MAX_SIZE + 2 * SEGMENT + RECORD_BOUND, name)
