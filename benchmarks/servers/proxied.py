"""
A proxy in front of the C echo (TCP, or for the KINDs named udp-... a UDP
echo), as one benchmark contender: the C echo upstream is started first
(pinned to the load generator's core, with a parent-death signal so it
goes when the proxy goes), then this process becomes the proxy (exec), so
the server figures are the proxy's alone: CPU per forwarded request, not
the upstream's.

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


def echoapp(port: int, upstream: int, *options: str, fault: str = "", record: bool = False) -> list[str]:
    faults = ["--fault", fault] if fault else []
    if record:
        faults += ["--record", os.path.join(tempfile.gettempdir(), f"echoapp-bench-proxy-{port}.pcapng")]
    return [
        os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", *options, "echoapp-proxy",
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--upstream", f"tcp:127.0.0.1:{upstream}",
        *LIMITS, *faults,
    ]  # fmt: skip


def echoapp_udp(port: int, upstream: int, *options: str, fault: str = "") -> list[str]:
    """echoapp-proxy forwarding UDP, driven through its command line as users run it."""
    faults = ["--fault", fault] if fault else []
    return [
        os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", *options, "echoapp-proxy",
        "--listen", f"udp:{port}:interface=127.0.0.1", "--upstream", f"udp:127.0.0.1:{upstream}", *faults,
    ]  # fmt: skip


NGINX_UDP = """
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log stderr error;
events {{ worker_connections 1024; }}
stream {{
    server {{
        listen 127.0.0.1:{port} udp;
        proxy_pass 127.0.0.1:{upstream};
        proxy_timeout 60s;
    }}
}}
"""


def nginx_udp(port: int, upstream: int) -> list[str]:
    """
    nginx's stream module proxying UDP (a session per client source, as
    echoapp-proxy's), one process (master_process off) so that its CPU is
    the one process's the benchmark reads.
    """
    directory = tempfile.mkdtemp(prefix="echoapp-bench-")
    path = os.path.join(directory, "nginx.conf")
    with open(path, "w") as out:
        out.write(
            NGINX_UDP.format(module=NGINX_STREAM_MODULE, directory=directory, port=port, upstream=upstream)
        )
    return [nginx_binary(), "-p", directory, "-e", "stderr", "-c", path]


NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def nginx_binary() -> str:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin") or "nginx"


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


def toxiproxy(port: int, upstream: int, toxic: str = "") -> list[str]:
    """
    toxiproxy with the proxy from a config file; with C{toxic} (JSON), that
    toxic added through its API once it answers (a config file's toxics are
    not applied), by a child that is gone before the load begins.
    """
    path = os.path.join(tempfile.mkdtemp(prefix="echoapp-bench-"), "toxiproxy.json")
    with open(path, "w") as out:
        out.write(f'[{{"name":"echo","listen":"127.0.0.1:{port}","upstream":"127.0.0.1:{upstream}"}}]')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        api = sock.getsockname()[1]
    if toxic and os.fork() == 0:
        add_toxic(api, toxic)
        os._exit(0)
    return [TOXIPROXY, "-host", "127.0.0.1", "-port", str(api), "-config", path]


def add_toxic(api: int, toxic: str) -> None:
    """POST C{toxic} to the proxy C{echo} once toxiproxy's API on C{api} knows it (in a child)."""
    import http.client

    for _ in range(500):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", api, timeout=1)
            connection.request("POST", "/proxies/echo/toxics", toxic, {"Content-Type": "application/json"})
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)


# The toxic each proxy is given for the "a toxic" rows: it applies to every
# connection and delays nothing, so the figure is what a configured toxic costs.
TOXIC = '{"name":"l","type":"latency","attributes":{"latency":0}}'


PROXIES = {
    "portforward": lambda port, up: [sys.executable, "-c", PORTFORWARD, str(port), str(up)],
    "echoapp": lambda port, up: echoapp(port, up),
    "echoapp-uvloop": lambda port, up: echoapp(port, up, "--reactor=uvloop"),
    # A fault configured that spares every connection: what the fault machinery costs per request.
    "echoapp-uvloop-fault": lambda port, up: echoapp(
        port, up, "--reactor=uvloop", fault="latency=1ms,fraction=0"
    ),
    "echoapp-toxic": lambda port, up: echoapp(port, up, fault="latency=0ms"),
    "echoapp-uvloop-toxic": lambda port, up: echoapp(port, up, "--reactor=uvloop", fault="latency=0ms"),
    # --record: the wire record to a capture file (rotating at its default bound) and in memory.
    "echoapp-record": lambda port, up: echoapp(port, up, record=True),
    "echoapp-uvloop-record": lambda port, up: echoapp(port, up, "--reactor=uvloop", record=True),
    "haproxy": haproxy,
    "toxiproxy": toxiproxy,
    "toxiproxy-toxic": lambda port, up: toxiproxy(port, up, TOXIC),
    # UDP, to a UDP echo.  A toxic of toxicity 0 (loss, sparing every
    # datagram) and one that applies to every datagram (latency 0 ms).
    "udp-echoapp": lambda port, up: echoapp_udp(port, up),
    "udp-echoapp-spared": lambda port, up: echoapp_udp(port, up, fault="loss=1,fraction=0"),
    "udp-echoapp-applied": lambda port, up: echoapp_udp(port, up, fault="latency=0ms"),
    "udp-echoapp-uvloop": lambda port, up: echoapp_udp(port, up, "--reactor=uvloop"),
    "udp-echoapp-uvloop-spared": lambda port, up: echoapp_udp(
        port, up, "--reactor=uvloop", fault="loss=1,fraction=0"
    ),
    "udp-echoapp-uvloop-applied": lambda port, up: echoapp_udp(
        port, up, "--reactor=uvloop", fault="latency=0ms"
    ),
    "udp-nginx": nginx_udp,
    "udp-relay": lambda port, up: [sys.executable, os.path.join(HERE, "udp_relay.py"), str(port), str(up)],
}


def upstream_echo(cpu: int, udp: bool = False) -> int:
    """The C echo (TCP or UDP) on a free port, pinned to C{cpu}, ended by SIGTERM when its parent ends."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = os.path.join(HERE, "..", "results", ".epoll_server")

    def preexec() -> None:
        os.sched_setaffinity(0, {cpu})
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    subprocess.Popen([server, str(port), "udpecho" if udp else "echo"], preexec_fn=preexec)
    for _ in range(200):
        try:
            if udp:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.settimeout(0.05)
                    probe.sendto(b"ready?", ("127.0.0.1", port))
                    probe.recv(100)
            else:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            time.sleep(0.02)
    raise SystemExit("the C echo upstream did not start")


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    upstream = upstream_echo(
        cpu=int(os.environ.get("ECHOAPP_UPSTREAM_CPU", "1")), udp=kind.startswith("udp-")
    )
    command = PROXIES[kind](port, upstream)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
