"""
A proxy in front of the C echo (TCP, or for the KINDs named udp-... a UDP
echo), as one benchmark contender: the C echo upstream is started first
(pinned to the load generator's core, with a parent-death signal so it
goes when the proxy goes), then this process becomes the proxy (exec), so
the server figures are the proxy's alone: CPU per forwarded request, not
the upstream's.

    python proxied.py KIND PORT [API]    (KIND: see PROXIES)

The kinds with a toxic get it through toxiproxy's API, on port API if
given (a test asks it what the proxy has), else on a free one.
"""

from __future__ import annotations

import ctypes
import json
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
API: int | None = None  # where the API of the kinds with a toxic listens (main's third argument)
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


def toxiproxy(port: int, upstream: int) -> list[str]:
    """toxiproxy with the proxy from a config file, and no toxic."""
    path = os.path.join(tempfile.mkdtemp(prefix="echoapp-bench-"), "toxiproxy.json")
    with open(path, "w") as out:
        out.write(f'[{{"name":"echo","listen":"127.0.0.1:{port}","upstream":"127.0.0.1:{upstream}"}}]')
    return [TOXIPROXY, "-host", "127.0.0.1", "-port", str(free_port()), "-config", path]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def through_api(command: list[str], api: int, port: int, upstream: int, toxic: str) -> list[str]:
    """
    C{command}, a proxy that serves toxiproxy's API on C{api}, given its
    proxy and C{toxic} the one way both toxiproxy and echoapp-proxy take
    them: a child, forked now, makes the proxy C{echo} disabled, adds the
    toxic, then enables it.  The proxy's port answers only once the toxic
    is in place, so the benchmark (which waits for an answer) never
    measures a proxy without it; if a step fails the port never answers
    and the contender says it did not start.
    """
    if os.fork() == 0:
        code = 0 if set_up(api, port, upstream, toxic) else 1
        os._exit(code)
    return command


def set_up(api: int, port: int, upstream: int, toxic: str) -> bool:
    """The API steps of L{through_api} (in a child), once the API answers; whether all went through."""
    listen, upstream_address = f"127.0.0.1:{port}", f"127.0.0.1:{upstream}"
    proxy = {"name": "echo", "listen": listen, "upstream": upstream_address, "enabled": False}
    steps = [
        ("POST", "/proxies", json.dumps(proxy), 201),
        ("POST", "/proxies/echo/toxics", toxic, 200),
        ("POST", "/proxies/echo", '{"enabled":true}', 200),
    ]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            request(api, "GET", "/version")
            break
        except OSError:
            time.sleep(0.01)
    for method, path, body, expected in steps:
        try:
            if request(api, method, path, body) != expected:
                return False
        except OSError:
            return False
    return True


def request(api: int, method: str, path: str, body: str | None = None) -> int:
    """One request to the API on C{api}: its status."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", api, timeout=5)
    try:
        connection.request(method, path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def toxiproxy_api(port: int, upstream: int, toxic: str, api: int | None = None) -> list[str]:
    """toxiproxy with its API alone: the proxy and C{toxic} through it (L{through_api})."""
    api = api or API or free_port()
    command = [TOXIPROXY, "-host", "127.0.0.1", "-port", str(api)]
    return through_api(command, api, port, upstream, toxic)


def echoapp_api(port: int, upstream: int, toxic: str, *options: str, api: int | None = None) -> list[str]:
    """echoapp-proxy with toxiproxy's API alone: the proxy and C{toxic} through it, as toxiproxy's."""
    api = api or API or free_port()
    command = [
        os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=/dev/null", *options, "echoapp-proxy",
        "--api", f"tcp:{api}:interface=127.0.0.1", *LIMITS,
    ]  # fmt: skip
    return through_api(command, api, port, upstream, toxic)


# The toxic each proxy is given for the "a toxic" rows, as JSON through its
# API: latency, the toxic toxiproxy's users configure most, on the
# downstream (its default stream), with a delay small enough not to starve
# the load (50 connections, 1 ms a round trip still leaves tens of thousands of
# requests a second) but real: every chunk is held and sent by a timer, on
# both proxies.  (A latency of 0 ms is no toxic to echoapp-proxy, which
# leaves such a connection on its quiet path: the rows would measure no
# toxic at all.)  The same toxic of toxicity 0 spares every connection:
# what a configured toxic costs the connections it does not touch.
LATENCY_MS = 1
TOXIC = json.dumps(
    {
        "name": "latency",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": LATENCY_MS, "jitter": 0},
    }
)
SPARING = TOXIC.replace('"toxicity": 1.0', '"toxicity": 0')


PROXIES = {
    "portforward": lambda port, up: [sys.executable, "-c", PORTFORWARD, str(port), str(up)],
    "echoapp": lambda port, up: echoapp(port, up),
    "echoapp-uvloop": lambda port, up: echoapp(port, up, "--reactor=uvloop"),
    # The toxic (TOXIC) through the API, as toxiproxy's; and the same of toxicity 0, sparing all.
    "echoapp-toxic": lambda port, up: echoapp_api(port, up, TOXIC),
    "echoapp-uvloop-toxic": lambda port, up: echoapp_api(port, up, TOXIC, "--reactor=uvloop"),
    "echoapp-spared": lambda port, up: echoapp_api(port, up, SPARING),
    "echoapp-uvloop-spared": lambda port, up: echoapp_api(port, up, SPARING, "--reactor=uvloop"),
    # --record: the wire record to a capture file (rotating at its default bound) and in memory.
    "echoapp-record": lambda port, up: echoapp(port, up, record=True),
    "echoapp-uvloop-record": lambda port, up: echoapp(port, up, "--reactor=uvloop", record=True),
    "haproxy": haproxy,
    "toxiproxy": toxiproxy,
    "toxiproxy-toxic": lambda port, up: toxiproxy_api(port, up, TOXIC),
    "toxiproxy-spared": lambda port, up: toxiproxy_api(port, up, SPARING),
    # UDP, to a UDP echo.  A toxic of toxicity 0 (loss, sparing every
    # datagram) and one that applies to every datagram (latency 1 ms: 0 ms
    # is no fault at all, so it would measure the quiet path).
    "udp-echoapp": lambda port, up: echoapp_udp(port, up),
    "udp-echoapp-spared": lambda port, up: echoapp_udp(port, up, fault="loss=1,fraction=0"),
    "udp-echoapp-applied": lambda port, up: echoapp_udp(port, up, fault="latency=1ms"),
    "udp-echoapp-uvloop": lambda port, up: echoapp_udp(port, up, "--reactor=uvloop"),
    "udp-echoapp-uvloop-spared": lambda port, up: echoapp_udp(
        port, up, "--reactor=uvloop", fault="loss=1,fraction=0"
    ),
    "udp-echoapp-uvloop-applied": lambda port, up: echoapp_udp(
        port, up, "--reactor=uvloop", fault="latency=1ms"
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
    global API
    kind, port = sys.argv[1], int(sys.argv[2])
    API = int(sys.argv[3]) if len(sys.argv) > 3 else None
    upstream = upstream_echo(
        cpu=int(os.environ.get("ECHOAPP_UPSTREAM_CPU", "1")), udp=kind.startswith("udp-")
    )
    command = PROXIES[kind](port, upstream)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
