"""
How the benchmark measures: servers and the load generator as processes
pinned to their own cores, CPU time and memory read from /proc.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from contenders import (
    CONTENDERS,
    ECHO_CONTENDERS,
    GROUP_CONTENDERS,
    UDP_CONTENDERS,
    UDP_PROXY_CONTENDERS,
    Group,
    Scenario,
    compiled,
)

SERVER_CPU, CLIENT_CPU = 0, 1


@dataclass
class Sample:
    cpu_us: float
    rate: float
    p50: float
    p99: float
    client_cpu: float
    lost: int = 0


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    idle: dict[str, list[float]] = field(default_factory=dict)
    steal: list[float] = field(default_factory=list)  # share of CPU time stolen, per round


# A round with more steal than this is marked noisy (and repeated with --repeat-noisy).
NOISY_STEAL = 0.05


def cpu_times(stat: str | None = None) -> tuple[int, int]:
    """
    C{(total, steal)} jiffies of all CPUs so far, from C{/proc/stat}'s first
    line (user nice system idle iowait irq softirq steal ...).  On a VM,
    steal is time the hypervisor gave another guest: a round with much of
    it measured a busier machine than the others.
    """
    if stat is None:
        with open("/proc/stat") as source:
            stat = source.readline()
    fields = [int(value) for value in stat.split()[1:9]]
    fields += [0] * (8 - len(fields))
    return sum(fields), fields[7]


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time stolen between two L{cpu_times} readings."""
    total = after[0] - before[0]
    return (after[1] - before[1]) / total if total > 0 else 0.0


def pin(cpu: int) -> Any:
    def preexec() -> None:
        try:
            os.sched_setaffinity(0, {cpu % os.cpu_count()})  # type: ignore[operator]
        except OSError:
            pass
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return preexec


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_loadgen() -> str:
    return compiled("loadgen")


class Server:
    """A contender's processes, pinned to the server's core; its figures are theirs together."""

    def __init__(self, processes: list[subprocess.Popen[bytes]], directory: str | None = None) -> None:
        self.processes = processes
        self.pids = [process.pid for process in processes]
        self._directory = directory

    def add(self, process: subprocess.Popen[bytes]) -> None:
        """One more process of this contender (a balancer, started after its backends)."""
        self.processes.append(process)
        self.pids.append(process.pid)

    def poll(self) -> int | None:
        codes = [process.poll() for process in self.processes]
        return next((code for code in codes if code is not None), None)

    def terminate(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()

    def wait(self) -> None:
        for process in self.processes:
            process.wait()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


def _popen(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, preexec_fn=pin(SERVER_CPU), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _healthy(port: int) -> bool:
    """C{/healthz} on C{port} answers 200: that instance is ready for a balancer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return probe.recv(100).split(b"\r\n", 1)[0].endswith(b" 200 OK")
    except OSError:
        return False


def _answers(port: int, udp: bool, echo: bool) -> bool:
    """One request on C{port} gets its first reply (the banner, or an echo)."""
    try:
        if udp:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.settimeout(0.2)
                probe.sendto(b"ready?", ("127.0.0.1", port))
                probe.recvfrom(100)
                return True
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            if echo:
                probe.sendall(b"ready?\n")
            return bool(probe.recv(100))
    except OSError:
        return False


def start_server(name: str, port: int) -> Server:
    """
    Start a contender and return once it serves: for a group, once its
    backends are healthy and then its front has answered one probe per
    backend in a row (a balancer sends each to the next backend).
    """
    udp = name in UDP_CONTENDERS or name in UDP_PROXY_CONTENDERS
    echo = name in ECHO_CONTENDERS or name in UDP_PROXY_CONTENDERS
    directory = None
    if name in GROUP_CONTENDERS:
        directory = tempfile.mkdtemp(prefix="echoapp-bench-")
        group = GROUP_CONTENDERS[name](port, directory)
    else:
        table = UDP_PROXY_CONTENDERS if udp and echo else UDP_CONTENDERS if udp else None
        command = (table or (ECHO_CONTENDERS if echo else CONTENDERS))[name](port)
        group = Group([command], [])
    commands = [*group.backends, *([group.front] if group.front else [])]
    server = Server([_popen(command) for command in group.backends], directory)
    deadline = time.monotonic() + 20
    waiting = list(group.health)
    in_a_row = 0
    front = group.front
    while time.monotonic() < deadline and server.poll() is None:
        if waiting:
            waiting = [health for health in waiting if not _healthy(health)]
        elif front is not None:
            server.add(_popen(front))
            front = None
        elif _answers(port, udp, echo):
            in_a_row += 1
            if in_a_row >= len(group.backends):
                return server
            continue
        else:
            in_a_row = 0
        time.sleep(0.05)
    server.terminate()
    server.wait()
    # On a line of its own, not glued to the progress bar, with what to run to see why.
    shown = "\n    ".join(" ".join(command) for command in commands)
    raise SystemExit(f"\n{name} did not start; to see why, run it by hand:\n    {shown}")


def measure(
    loadgen: str,
    server: Server,
    port: int,
    scenario: Scenario,
    warmup: float,
    duration: float,
) -> Sample:
    command = [
        loadgen,
        "127.0.0.1",
        str(port),
        str(scenario.connections),
        str(scenario.size),
        str(scenario.depth),
    ]
    mode = (
        "udpecho"
        if scenario.udp and scenario.echo
        else "udp"
        if scenario.udp
        else "echo"
        if scenario.echo
        else ""
    )
    command += [str(warmup), str(duration)] + ([mode] if mode else [])
    client = subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=pin(CLIENT_CPU), text=True)
    assert client.stdout is not None
    first = client.stdout.readline().strip()
    before = sum(map(cpu_seconds, server.pids))
    if first != "warm":
        raise SystemExit(f"load generator failed: {first}")
    result = client.stdout.readline().strip()
    after = sum(map(cpu_seconds, server.pids))
    _, _, usage = os.wait4(client.pid, 0)
    figures = dict(item.split("=") for item in result.split())
    requests = int(figures["requests"])
    if requests == 0:
        # A row of zeros would read as a figure; this is a run that measured nothing.
        raise SystemExit(f"\nno request was answered in {scenario.name!r}: the load generator said {result}")
    client_cpu = (usage.ru_utime + usage.ru_stime) / (warmup + duration)
    return Sample(
        cpu_us=(after - before) * 1e6 / max(requests, 1),
        rate=requests / float(figures["seconds"]),
        p50=float(figures["p50_us"]),
        p99=float(figures["p99_us"]),
        client_cpu=client_cpu,
        lost=int(figures.get("lost", 0)),
    )


def idle_rss(server: Server, port: int, count: int) -> float:
    """Server RSS added per idle connection, with C{count} connections open."""
    time.sleep(0.2)
    before = sum(map(rss, server.pids))
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sockets.append(sock)
        for sock in sockets:
            sock.recv(100)  # the banner: the server has set the connection up
        time.sleep(0.5)
        return (sum(map(rss, server.pids)) - before) / count
    finally:
        for sock in sockets:
            sock.close()
