"""
How soon echoapp-proxy's API answers after its process starts: what a test
fixture waits for before its first call (toxiproxy's answers in 5-25 ms).

    python benchmarks/startup.py                 # 10 runs each, interleaved
    python benchmarks/startup.py --runs 20 --reactor uvloop

Each run starts ``twistd -n --pidfile= echoapp-proxy --api
tcp:0:interface=127.0.0.1`` from an empty directory, reads the API's port
from its "listening on" line and calls ``GET /version`` until it answers;
the figure is the time from just before the process is started to the
first answer, with bytecode cached as an installed package has it (a
checkout run with PYTHONDONTWRITEBYTECODE compiles each edited module at
every start: 50-90 ms more).  toxiproxy-server (where present: ``--toxiproxy PATH`` or
``$ECHOAPP_TOXIPROXY``) runs interleaved with it, so the ratio is of one
run, and so does Twisted's own web server under twistd (``twistd web``):
the floor any twistd plugin with an HTTP API starts from.  Medians, min and
max; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOXIPROXY = os.environ.get(
    "ECHOAPP_TOXIPROXY",
    os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "tools", "toxiproxy", "toxiproxy-server"),
)
LISTENING = re.compile(rb"echoapp-proxy listening on tcp:127\.0\.0\.1:(\d+)")
DEADLINE = 20.0  # seconds: a run that takes longer failed


def _answers(port: int, path: str = "/version") -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _twistd() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return beside if os.path.exists(beside) else (shutil.which("twistd") or "twistd")


def echoapp_once(reactor: str | None) -> float:
    """Seconds from starting echoapp-proxy to its first answer."""
    args = [_twistd(), "-n", "--pidfile="]
    if reactor:
        args.append(f"--reactor={reactor}")
    args += ["echoapp-proxy", "--api", "tcp:0:interface=127.0.0.1"]
    # As installed: no PYTHONPATH (the installed plugins), bytecode cached as an install caches it.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    }
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        process = subprocess.Popen(
            args, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            assert process.stdout is not None
            seen = b""
            while (found := LISTENING.search(seen)) is None:
                line = process.stdout.readline()
                if not line or time.perf_counter() - started > DEADLINE:
                    raise RuntimeError(f"echoapp-proxy did not listen:\n{seen.decode(errors='replace')}")
                seen += line
            port = int(found.group(1))
            while not _answers(port):
                time.sleep(0.001)
            return time.perf_counter() - started
        finally:
            process.terminate()
            process.wait()


def twistd_web_once() -> float:
    """
    Seconds from starting Twisted's own web server under twistd to its first
    answer: the floor of any twistd plugin with an HTTP API (Python, twistd,
    the reactor and twisted.web, nothing of echoapp's).
    """
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    }
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        process = subprocess.Popen(
            [
                _twistd(),
                "-n",
                "--pidfile=",
                "web",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--path",
                ".",
            ],
            cwd=directory,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not _answers(port, "/"):
                if time.perf_counter() - started > DEADLINE:
                    raise RuntimeError("twistd web did not answer")
                time.sleep(0.001)
            return time.perf_counter() - started
        finally:
            process.terminate()
            process.wait()


def toxiproxy_once(path: str) -> float:
    """Seconds from starting toxiproxy-server to its first answer (its port chosen beforehand)."""
    port = _free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [path, "-host", "127.0.0.1", "-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not _answers(port):
            if time.perf_counter() - started > DEADLINE:
                raise RuntimeError("toxiproxy-server did not answer")
            time.sleep(0.001)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait()


def _line(name: str, figures: list[float]) -> str:
    ms = [figure * 1000 for figure in figures]
    spread = f"min {min(ms):.1f}, max {max(ms):.1f}; {len(ms)} runs"
    return f"{name:<28} median {statistics.median(ms):7.1f} ms  ({spread})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--reactor", action="append", help="twistd reactor(s); default: the default one")
    parser.add_argument("--toxiproxy", default=TOXIPROXY)
    options = parser.parse_args()
    reactors = options.reactor or [None]
    results: dict[str, list[float]] = {}
    peer = os.access(options.toxiproxy, os.X_OK)
    for reactor in reactors:
        echoapp_once(reactor)  # a first run writes the bytecode and warms the file cache
    for _ in range(options.runs):
        for reactor in reactors:
            results.setdefault(f"echoapp-proxy ({reactor or 'default'})", []).append(echoapp_once(reactor))
        results.setdefault("twistd web (the floor)", []).append(twistd_web_once())
        if peer:
            results.setdefault("toxiproxy-server", []).append(toxiproxy_once(options.toxiproxy))
    for name, figures in results.items():
        print(_line(name, figures))


if __name__ == "__main__":
    main()
