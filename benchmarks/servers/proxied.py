"""
A proxy in front of the C echo, as one benchmark contender: the C echo
upstream is started first (pinned to the load generator's core, with a
parent-death signal so it goes when the proxy goes), then this process
becomes the proxy (exec), so the server figures are the proxy's alone:
CPU per forwarded request, not the upstream's.

    python proxied.py KIND PORT    (KIND: see PROXIES)
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
TOXIPROXY = os.environ.get(
    "ECHOAPP_TOXIPROXY",
    os.path.join(HERE, "..", "..", "..", "shared", "tools", "toxiproxy", "toxiproxy-server"),
)
LIMITS = ["--max-per-peer=100000", "--max-connections=100000"]
PORTFORWARD = """
import sys
from twisted.internet import reactor
from twisted.protocols.portforward import ProxyFactory
reactor.listenTCP(int(sys.argv[1]), ProxyFactory("127.0.0.1", int(sys.argv[2])), interface="127.0.0.1")
reactor.run()
"""


def echoapp(port: int, upstream: int, *options: str, fault: str = "") -> list[str]:
    faults = ["--fault", fault] if fault else []
    return [
        os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", *options, "echoapp-proxy",
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--upstream", f"tcp:127.0.0.1:{upstream}",
        *LIMITS, *faults,
    ]  # fmt: skip


def haproxy(port: int, upstream: int) -> list[str]:
    config = (
        "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n"
        "  timeout client 60s\n  timeout server 60s\n"
        f"listen front\n  bind 127.0.0.1:{port}\n  server echo 127.0.0.1:{upstream}\n"
    )
    path = os.path.join(tempfile.mkdtemp(prefix="echoapp-bench-"), "haproxy.cfg")
    with open(path, "w") as out:
        out.write(config)
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin") or "haproxy"
    return [binary, "-db", "-f", path]


def toxiproxy(port: int, upstream: int) -> list[str]:
    path = os.path.join(tempfile.mkdtemp(prefix="echoapp-bench-"), "toxiproxy.json")
    with open(path, "w") as out:
        out.write(f'[{{"name":"echo","listen":"127.0.0.1:{port}","upstream":"127.0.0.1:{upstream}"}}]')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        api = sock.getsockname()[1]
    return [TOXIPROXY, "-host", "127.0.0.1", "-port", str(api), "-config", path]


PROXIES = {
    "portforward": lambda port, up: [sys.executable, "-c", PORTFORWARD, str(port), str(up)],
    "echoapp": lambda port, up: echoapp(port, up),
    "echoapp-uvloop": lambda port, up: echoapp(port, up, "--reactor=uvloop"),
    # A fault configured that spares every connection: what the fault machinery costs per request.
    "echoapp-uvloop-fault": lambda port, up: echoapp(
        port, up, "--reactor=uvloop", fault="latency=1ms,fraction=0"
    ),
    "haproxy": haproxy,
    "toxiproxy": toxiproxy,
}


def upstream_echo(cpu: int) -> int:
    """The C echo on a free port, pinned to C{cpu}, ended by SIGTERM when its parent ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = os.path.join(HERE, "..", "results", ".epoll_server")

    def preexec() -> None:
        os.sched_setaffinity(0, {cpu})
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    subprocess.Popen([server, str(port), "echo"], preexec_fn=preexec)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            time.sleep(0.02)
    raise SystemExit("the C echo upstream did not start")


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    upstream = upstream_echo(cpu=int(os.environ.get("ECHOAPP_UPSTREAM_CPU", "1")))
    command = PROXIES[kind](port, upstream)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
