"""
What the benchmark measures: the servers side by side (echoapp and the
servers it replaces), each a function from a port to a command line, and
the load scenarios.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, "servers")
PYTHON = sys.executable
BIN = os.path.dirname(PYTHON)


def twistd(*options: str) -> list[str]:
    def command(port: int) -> list[str]:
        # echoapp's own default backlog, as users get it.  The limits are raised:
        # the load generator is one loopback address opening 500 connections.
        listen = f"tcp:{port}:interface=127.0.0.1"
        return [
            os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", *options,
            "echoapp-tcp", "--listen", listen, "--max-per-peer=100000", "--max-connections=100000",
        ]  # fmt: skip

    return command  # type: ignore[return-value]


def script(name: str, *extra: str) -> Any:
    return lambda port: [PYTHON, os.path.join(SERVERS, name), str(port), *extra]


def echoapp_udp(*options: str) -> Any:
    # Guards on; rate limits opened up, as one load generator is one source.
    return lambda port: [
        os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", *options, "echoapp-udp",
        "--listen", f"udp:{port}:interface=127.0.0.1",
        "--rate=1e9", "--burst=1000000000", "--global-rate=1e9",
    ]  # fmt: skip


CONTENDERS: dict[str, Any] = {
    "echoapp-tcp, default reactor": twistd(),
    "echoapp-tcp, uvloop reactor": twistd("--reactor=uvloop"),
    "naive Twisted LineOnlyReceiver": script("naive_twisted.py"),
    "asyncio Protocol": script("asyncio_greeter.py"),
    "asyncio Protocol on uvloop": script("asyncio_greeter.py", "--uvloop"),
    "threads (socket + threading)": script("threaded.py"),
}
UDP_CONTENDERS: dict[str, Any] = {
    "echoapp-udp, guards on, default reactor": echoapp_udp(),
    "echoapp-udp, guards on, uvloop reactor": echoapp_udp("--reactor=uvloop"),
    "asyncio DatagramProtocol": script("udp_greeters.py"),
    "asyncio DatagramProtocol on uvloop": script("udp_greeters.py", "--uvloop"),
    "blocking recvfrom/sendto loop": script("udp_greeters.py", "--blocking"),
}


@dataclass(frozen=True)
class Scenario:
    key: str  # what --scenario takes
    name: str
    connections: int
    size: int
    depth: int = 1
    udp: bool = False


SCENARIOS = [
    Scenario("1", "ping-pong, 64 B lines, 1 connection", 1, 64),
    Scenario("50", "ping-pong, 64 B lines, 50 connections", 50, 64),
    Scenario("500", "ping-pong, 64 B lines, 500 connections", 500, 64),
    Scenario("16k", "ping-pong, 16 KiB messages, 50 connections", 50, 16384),
    Scenario("pipelined", "pipelined 16 deep, 64 B lines, 50 connections", 50, 64, 16),
]
UDP_SCENARIOS = [Scenario("udp", "UDP ping-pong, 64 B datagrams, 8 in flight", 8, 64, udp=True)]
IDLE_KEY = "idle"
IDLE = "idle connections: server RSS per connection"
SCENARIO_KEYS = [scenario.key for scenario in SCENARIOS + UDP_SCENARIOS] + [IDLE_KEY]
