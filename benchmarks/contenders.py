"""
What the benchmark measures: the servers side by side (echoapp and the
servers it replaces), each a function from a port to a command line, and
the load scenarios.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, "servers")
DEPLOY = os.path.join(os.path.dirname(HERE), "deploy")
PYTHON = sys.executable
BIN = os.path.dirname(PYTHON)


def twistd(*options: str, plugin: str = "echoapp-tcp", record: bool = False) -> list[str]:
    def command(port: int) -> list[str]:
        # echoapp's own default backlog, as users get it.  The limits are raised:
        # the load generator is one loopback address opening 500 connections.
        listen = f"tcp:{port}:interface=127.0.0.1"
        # --record: the wire record to a capture file, rotating at its default bound.
        recording = ["--record", os.path.join(tempfile.gettempdir(), f"echoapp-bench-{port}.pcapng")]
        return [
            os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", *options,
            plugin, "--listen", listen, "--max-per-peer=100000", "--max-connections=100000",
            *(recording if record else []),
        ]  # fmt: skip

    return command  # type: ignore[return-value]


def compiled(name: str) -> str:
    """A C program of the benchmark (loadgen.c, servers/NAME.c), compiled on first use."""
    source = os.path.join(HERE, f"{name}.c")
    if not os.path.exists(source):
        source = os.path.join(SERVERS, f"{name}.c")
    target = os.path.join(HERE, "results", f".{name}")
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise SystemExit("the benchmark needs a C compiler (cc) for its load generator and floor")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        subprocess.run([compiler, "-O2", "-o", target, source], check=True)
    return target


def c_server(*extra: str) -> Any:
    return lambda port: [compiled("epoll_server"), str(port), *extra]


def script(name: str, *extra: str) -> Any:
    return lambda port: [PYTHON, os.path.join(SERVERS, name), str(port), *extra]


def echoapp_udp(*options: str, accelerated: bool = True) -> Any:
    # Guards on; rate limits opened up, as one load generator is one source.
    # Without the C accelerator (recvmmsg): its Python fallback.
    off = [] if accelerated else ["env", "ECHOAPP_NO_ACCELERATOR=1"]
    return lambda port: [
        *off, os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", *options, "echoapp-udp",
        "--listen", f"udp:{port}:interface=127.0.0.1",
        "--rate=1e9", "--burst=1000000000", "--global-rate=1e9",
    ]  # fmt: skip


CONTENDERS: dict[str, Any] = {
    "echoapp-tcp, default reactor": twistd(),
    "echoapp-tcp, uvloop reactor": twistd("--reactor=uvloop"),
    "echoapp-tcp --record, default reactor": twistd(record=True),
    "echoapp-tcp --record, uvloop reactor": twistd("--reactor=uvloop", record=True),
    "naive Twisted LineOnlyReceiver": script("naive_twisted.py"),
    "naive Twisted + eager write": script("naive_twisted.py", "--eager"),
    "asyncio Protocol": script("asyncio_greeter.py"),
    "asyncio Protocol on uvloop": script("asyncio_greeter.py", "--uvloop"),
    "threads (socket + threading)": script("threaded.py"),
    "C epoll greeter (the floor)": c_server(),
}
# RFC 862 echo: echoapp-echo against a naive Twisted echo, a hand-written
# uvloop one and the C floor (no banner: the load generator's echo mode).
ECHO_CONTENDERS: dict[str, Any] = {
    "echoapp-echo, default reactor": twistd(plugin="echoapp-echo"),
    "echoapp-echo, uvloop reactor": twistd("--reactor=uvloop", plugin="echoapp-echo"),
    "naive Twisted echo": script("naive_twisted.py", "--echo"),
    "naive Twisted echo + eager write": script("naive_twisted.py", "--echo", "--eager"),
    "asyncio echo on uvloop": script("asyncio_greeter.py", "--echo", "--uvloop"),
    "C epoll echo (the floor)": c_server("echo"),
}


def proxied(kind: str) -> Any:
    """A proxy in front of the C echo (servers/proxied.py): the figures are the proxy's alone."""
    return lambda port: [
        compiled("epoll_server") and PYTHON,
        os.path.join(SERVERS, "proxied.py"),
        kind,
        str(port),
    ]


# Proxies: the echo scenarios through a proxy to the C echo, the proxy's CPU per forwarded request.
PROXY_CONTENDERS: dict[str, Any] = {
    "Twisted portforward": proxied("portforward"),
    "echoapp-proxy, default reactor": proxied("echoapp"),
    "echoapp-proxy, uvloop reactor": proxied("echoapp-uvloop"),
    "echoapp-proxy --record, default reactor": proxied("echoapp-record"),
    "echoapp-proxy --record, uvloop reactor": proxied("echoapp-uvloop-record"),
    # One toxic through the API, on every connection (latency 1 ms: servers/proxied.py says why),
    # and the same toxic of toxicity 0 (configured, sparing every connection); toxiproxy's alike.
    "echoapp-proxy, default reactor, a toxic (latency 1 ms)": proxied("echoapp-toxic"),
    "echoapp-proxy, uvloop, a toxic (latency 1 ms)": proxied("echoapp-uvloop-toxic"),
    "echoapp-proxy, default reactor, a toxic sparing all (toxicity 0)": proxied("echoapp-spared"),
    "echoapp-proxy, uvloop, a toxic sparing all (toxicity 0)": proxied("echoapp-uvloop-spared"),
    "HAProxy, mode tcp": proxied("haproxy"),
    "toxiproxy": proxied("toxiproxy"),
    "toxiproxy, a toxic (latency 1 ms)": proxied("toxiproxy-toxic"),
    "toxiproxy, a toxic sparing all (toxicity 0)": proxied("toxiproxy-spared"),
}
ECHO_CONTENDERS.update(PROXY_CONTENDERS)
TOXIPROXY = os.environ.get(
    "ECHOAPP_TOXIPROXY",
    os.path.join(os.path.dirname(HERE), "..", "shared", "tools", "toxiproxy", "toxiproxy-server"),
)

UDP_CONTENDERS: dict[str, Any] = {
    "echoapp-udp, guards on, default reactor": echoapp_udp(),
    "echoapp-udp, guards on, uvloop reactor": echoapp_udp("--reactor=uvloop"),
    "echoapp-udp, guards on, default reactor, no accelerator": echoapp_udp(accelerated=False),
    "echoapp-udp, guards on, uvloop, no accelerator": echoapp_udp("--reactor=uvloop", accelerated=False),
    "asyncio DatagramProtocol": script("udp_greeters.py"),
    "asyncio DatagramProtocol on uvloop": script("udp_greeters.py", "--uvloop"),
    "blocking recvfrom/sendto loop": script("udp_greeters.py", "--blocking"),
}


# UDP through a proxy to a C UDP echo (on the load generator's core): the
# proxy's CPU per forwarded datagram and its reply.  echoapp-proxy runs
# through its command line, with no fault, with a toxic of toxicity 0
# (configured, sparing every datagram) and with one that applies to every
# datagram (latency 0 ms); nginx's stream module where nginx is installed.
UDP_PROXY_CONTENDERS: dict[str, Any] = {
    "echoapp-proxy UDP, default reactor": proxied("udp-echoapp"),
    "echoapp-proxy UDP, default reactor, a toxic of toxicity 0": proxied("udp-echoapp-spared"),
    "echoapp-proxy UDP, default reactor, latency=1ms on every datagram": proxied("udp-echoapp-applied"),
    "echoapp-proxy UDP, uvloop reactor": proxied("udp-echoapp-uvloop"),
    "echoapp-proxy UDP, uvloop, a toxic of toxicity 0": proxied("udp-echoapp-uvloop-spared"),
    "echoapp-proxy UDP, uvloop, latency=1ms on every datagram": proxied("udp-echoapp-uvloop-applied"),
    "nginx stream, UDP": proxied("udp-nginx"),
    "plain Python UDP relay": proxied("udp-relay"),
}
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def have_nginx_stream() -> bool:
    """nginx and its stream module (Debian: nginx-light and libnginx-mod-stream)."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    return bool(nginx) and os.path.exists(NGINX_STREAM_MODULE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _instance(listen: str, *options: str) -> list[str]:
    return [
        os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", "echoapp-tcp",
        "--listen", listen, "--max-per-peer=100000", "--max-connections=100000", *options,
    ]  # fmt: skip


@dataclass
class Group:
    """
    A contender of several processes: the C{backends} start first, the
    C{front} (a balancer, if any) only once each port in C{health} answers
    C{/healthz} with 200.  A balancer started beside its backends checks them
    before they listen and marks them down (HAProxy: at the first failed
    check), which a short run then measures as no requests at all.
    """

    backends: list[list[str]]
    health: list[int]
    front: list[str] | None = None


def behind_haproxy(instances: int) -> Any:
    """
    The shipped HAProxy front (deploy/haproxy/haproxy.cfg, ports changed
    only: PROXY protocol, health checks) before N echoapp-tcp instances
    listening as the systemd template says.  Several processes: the server
    CPU figure is theirs together, HAProxy's included.
    """

    def commands(port: int, directory: str) -> Group:
        with open(os.path.join(DEPLOY, "haproxy", "haproxy.cfg")) as shipped:
            config = shipped.read().replace("bind 127.0.0.1:9000", f"bind 127.0.0.1:{port}")
        servers, health = [], []
        for name in "ab"[:instances]:
            listen, metrics = _free_port(), _free_port()
            config = re.sub(
                rf"(?m)^(\s*server {name} 127\.0\.0\.1:)\d+( check port )\d+",
                rf"\g<1>{listen}\g<2>{metrics}",
                config,
            )
            servers.append(
                _instance(
                    f"haproxy:tcp:{listen}:interface=127.0.0.1",
                    "--proxy-from=127.0.0.1",
                    f"--metrics=tcp:{metrics}:interface=127.0.0.1",
                )
            )
            health.append(metrics)
        if instances == 1:
            config = re.sub(r"(?m)^\s*server b .*$", "", config)
        path = os.path.join(directory, "haproxy.cfg")
        with open(path, "w") as out:
            out.write(config)
        haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin") or "haproxy"
        return Group(servers, health, [haproxy, "-db", "-f", path])

    return commands


def reuse_port(instances: int) -> Any:
    """N echoapp-tcp processes on one port (--reuse-port), the kernel spreading connections: no balancer."""
    return lambda port, directory: Group(
        [_instance(f"tcp:{port}:interface=127.0.0.1", "--reuse-port") for _ in range(instances)], []
    )


# Contenders of several processes: a function from (port, scratch directory)
# to their L{Group}.  On this machine they share the server's core, so
# they show what the balancer hop costs, not how instances add cores.
GROUP_CONTENDERS: dict[str, Any] = {
    "echoapp-tcp behind HAProxy, 1 instance": behind_haproxy(1),
    "echoapp-tcp behind HAProxy, 2 instances": behind_haproxy(2),
    "echoapp-tcp, 2 --reuse-port instances": reuse_port(2),
}


@dataclass(frozen=True)
class Scenario:
    key: str  # what --scenario takes
    name: str
    connections: int
    size: int
    depth: int = 1
    udp: bool = False
    echo: bool = False


SCENARIOS = [
    Scenario("1", "ping-pong, 64 B lines, 1 connection", 1, 64),
    Scenario("50", "ping-pong, 64 B lines, 50 connections", 50, 64),
    Scenario("500", "ping-pong, 64 B lines, 500 connections", 500, 64),
    Scenario("16k", "ping-pong, 16 KiB messages, 50 connections", 50, 16384),
    Scenario("pipelined", "pipelined 16 deep, 64 B lines, 50 connections", 50, 64, 16),
]
ECHO_SCENARIOS = [
    Scenario("echo50", "echo ping-pong, 64 B, 50 connections", 50, 64, echo=True),
    Scenario("echo500", "echo ping-pong, 64 B, 500 connections", 500, 64, echo=True),
]
UDP_SCENARIOS = [
    Scenario("udp", "UDP ping-pong, 64 B datagrams, 8 in flight", 8, 64, udp=True),
    Scenario(
        "udpproxy",
        "UDP through a proxy to a UDP echo, 64 B datagrams, 8 in flight",
        8,
        64,
        udp=True,
        echo=True,
    ),
]
IDLE_KEY = "idle"
IDLE = "idle connections: server RSS per connection"
SCENARIO_KEYS = [scenario.key for scenario in SCENARIOS + ECHO_SCENARIOS + UDP_SCENARIOS] + [IDLE_KEY]


def have_haproxy() -> bool:
    return bool(shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin"))


def every_contender() -> list[str]:
    """The default run: every server, those behind HAProxy only where it is installed."""
    groups = [name for name in GROUP_CONTENDERS if "HAProxy" not in name or have_haproxy()]
    echo = [
        name
        for name in ECHO_CONTENDERS
        if ("HAProxy" not in name or have_haproxy())
        and (not name.startswith("toxiproxy") or os.access(TOXIPROXY, os.X_OK))
    ]
    udp_proxies = [name for name in UDP_PROXY_CONTENDERS if "nginx" not in name or have_nginx_stream()]
    return [*CONTENDERS, *groups, *echo, *UDP_CONTENDERS, *udp_proxies]
