"""
The side-by-side benchmark: echoapp against the servers it replaces.

    python benchmarks/run.py            # about 9 minutes on 2 cores
    python benchmarks/run.py --smoke    # a second or two, to keep it working

Each contender runs as its own process pinned to CPU 0; the load generator,
a small C program (benchmarks/loadgen.c, compiled on first use), runs pinned
to CPU 1. Contenders are interleaved within each round and every figure is
the median of the rounds, with min and max. The headline is the server's CPU
time per request (utime + stime from /proc over the measured window), which
does not depend on how fast the client is; requests/s and latency
percentiles come from the load generator, whose own CPU is reported so that
a client-bound run is flagged. Results go to benchmarks/results/ as Markdown,
reStructuredText and (with matplotlib) a PNG chart. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, "servers")
PYTHON = sys.executable
BIN = os.path.dirname(PYTHON)
SERVER_CPU, CLIENT_CPU = 0, 1


def twistd(*options: str) -> list[str]:
    def command(port: int) -> list[str]:
        listen = f"tcp:{port}:interface=127.0.0.1:backlog=4096"
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
    name: str
    connections: int
    size: int
    depth: int = 1
    udp: bool = False


SCENARIOS = [
    Scenario("ping-pong, 64 B lines, 1 connection", 1, 64),
    Scenario("ping-pong, 64 B lines, 50 connections", 50, 64),
    Scenario("ping-pong, 64 B lines, 500 connections", 500, 64),
    Scenario("ping-pong, 16 KiB messages, 50 connections", 50, 16384),
    Scenario("pipelined 16 deep, 64 B lines, 50 connections", 50, 64, 16),
]
UDP_SCENARIOS = [Scenario("UDP ping-pong, 64 B datagrams, 8 in flight", 8, 64, udp=True)]
IDLE = "idle connections: server RSS per connection"


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
    target = os.path.join(HERE, "results", ".loadgen")
    source = os.path.join(HERE, "loadgen.c")
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise SystemExit("the benchmark needs a C compiler (cc) for its load generator")
        subprocess.run([compiler, "-O2", "-o", target, source], check=True)
    return target


def start_server(name: str, port: int) -> subprocess.Popen[bytes]:
    udp = name in UDP_CONTENDERS
    command = (UDP_CONTENDERS if udp else CONTENDERS)[name](port)
    server = subprocess.Popen(
        command, preexec_fn=pin(SERVER_CPU), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if udp:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.settimeout(0.2)
                    probe.sendto(b"ready?", ("127.0.0.1", port))
                    probe.recvfrom(100)
            else:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    probe.recv(100)
            return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.05)
    server.kill()
    raise SystemExit(f"{name} did not start")


def measure(
    loadgen: str,
    server: subprocess.Popen[bytes],
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
    command += [str(warmup), str(duration)] + (["udp"] if scenario.udp else [])
    client = subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=pin(CLIENT_CPU), text=True)
    assert client.stdout is not None
    first = client.stdout.readline().strip()
    before = cpu_seconds(server.pid)
    if first != "warm":
        raise SystemExit(f"load generator failed: {first}")
    result = client.stdout.readline().strip()
    after = cpu_seconds(server.pid)
    _, _, usage = os.wait4(client.pid, 0)
    figures = dict(item.split("=") for item in result.split())
    requests = int(figures["requests"])
    client_cpu = (usage.ru_utime + usage.ru_stime) / (warmup + duration)
    return Sample(
        cpu_us=(after - before) * 1e6 / max(requests, 1),
        rate=requests / float(figures["seconds"]),
        p50=float(figures["p50_us"]),
        p99=float(figures["p99_us"]),
        client_cpu=client_cpu,
        lost=int(figures.get("lost", 0)),
    )


def idle_rss(server: subprocess.Popen[bytes], port: int, count: int) -> float:
    """Server RSS added per idle connection, with C{count} connections open."""
    time.sleep(0.2)
    before = rss(server.pid)
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sockets.append(sock)
        for sock in sockets:
            sock.recv(100)  # the banner: the server has set the connection up
        time.sleep(0.5)
        return (rss(server.pid) - before) / count
    finally:
        for sock in sockets:
            sock.close()


def progress(done: int, total: int, text: str) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text[:70]:<70}")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> Results:
    loadgen = build_loadgen()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle_count = min(args.idle, hard - 100)
    scenarios = SCENARIOS[: args.scenarios]
    # (contender, its scenarios, idle connections to open) for each server run in a round
    plan = [(name, scenarios, idle_count) for name in args.contenders or CONTENDERS]
    if not (args.smoke or args.contenders):
        plan += [(name, UDP_SCENARIOS, 0) for name in UDP_CONTENDERS]
    total = args.rounds * sum(len(runs) + (1 if idle > 0 else 0) for _, runs, idle in plan)
    results = Results()
    done = 0
    for round_number in range(1, args.rounds + 1):
        for name, runs, idle in plan:
            port = free_port()
            server = start_server(name, port)
            try:
                for scenario in runs:
                    progress(done, total, f"round {round_number}: {name}: {scenario.name}")
                    sample = measure(loadgen, server, port, scenario, args.warmup, args.duration)
                    results.samples.setdefault((scenario.name, name), []).append(sample)
                    done += 1
                if idle > 0:
                    progress(done, total, f"round {round_number}: {name}: {idle} idle connections")
                    results.idle.setdefault(name, []).append(idle_rss(server, port, idle))
                    done += 1
            finally:
                server.terminate()
                server.wait()
    progress(done, total, "done")
    sys.stderr.write("\n")
    return results


def spread(values: list[float], unit: str = "", digits: int = 1) -> str:
    median = statistics.median(values)
    return f"{median:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def tables(results: Results, args: argparse.Namespace) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    for scenario in SCENARIOS[: args.scenarios] + UDP_SCENARIOS:
        header = ["server", "server CPU µs/request", "requests/s", "p50 µs", "p99 µs", "client CPU"]
        header += ["lost"] if scenario.udp else []
        rows = []
        for name in (args.contenders or list(CONTENDERS)) + list(UDP_CONTENDERS):
            samples = results.samples.get((scenario.name, name))
            if not samples:
                continue
            client = statistics.median(s.client_cpu for s in samples)
            rows.append(
                [
                    name,
                    spread([s.cpu_us for s in samples]),
                    spread([s.rate for s in samples], digits=0),
                    f"{statistics.median(s.p50 for s in samples):.0f}",
                    f"{statistics.median(s.p99 for s in samples):.0f}",
                    f"{client:.0%}" + (" CLIENT-BOUND" if client > 0.9 else ""),
                ]
                + ([f"{statistics.median(s.lost for s in samples):.0f}"] if scenario.udp else [])
            )
        if rows:
            out.append((scenario.name, header, rows))
    if results.idle:
        rows = [[name, spread([v / 1024 for v in values], " KiB")] for name, values in results.idle.items()]
        out.append((f"{IDLE} ({min(args.idle, 10**9)} open)", ["server", "RSS per connection"], rows))
    return out


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import twisted

    return (
        f"{model or platform.processor()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"Twisted {twisted.__version__}; server on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}"
    )


def markdown(all_tables: list[tuple[str, list[str], list[list[str]]]], about: str, command: str) -> str:
    lines = [f"Machine: {about}", "", f"Command: `{command}`", ""]
    for title, header, rows in all_tables:
        lines += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def rst(all_tables: list[tuple[str, list[str], list[list[str]]]], about: str, command: str) -> str:
    lines = [f"Machine: {about}", "", f"Command: ``{command}``", ""]
    for title, header, rows in all_tables:
        lines += [f".. list-table:: {title}", "   :header-rows: 1", ""]
        for row in [header, *rows]:
            lines.append("   * - " + row[0])
            lines += [f"     - {cell}" for cell in row[1:]]
        lines.append("")
    return "\n".join(lines)


def chart(results: Results, args: argparse.Namespace, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = SCENARIOS[: args.scenarios]
    names = list(args.contenders or CONTENDERS)
    figure, axis = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        values = [
            statistics.median(
                s.cpu_us for s in results.samples.get((scenario.name, name), [Sample(0, 0, 0, 0, 0)])
            )
            for scenario in scenarios
        ]
        axis.bar([i + index * width for i in range(len(scenarios))], values, width, label=name)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(scenarios))])
    axis.set_xticklabels([scenario.name.replace(", ", "\n", 1) for scenario in scenarios], fontsize=8)
    axis.set_ylabel("server CPU µs per request (lower is better)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    parser.add_argument(
        "--idle", type=int, default=10_000, help="idle connections for the RSS scenario (0: skip)"
    )
    parser.add_argument("--scenarios", type=int, default=len(SCENARIOS), help="run the first N scenarios")
    parser.add_argument("--contender", dest="contenders", action="append", choices=list(CONTENDERS))
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--smoke", action="store_true", help="one short run of echoapp, to keep this working")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.warmup, args.duration, args.idle, args.scenarios = 1, 0.2, 0.5, 50, 2
        args.contenders = args.contenders or ["echoapp-tcp, default reactor"]
    command = "python " + " ".join(["benchmarks/run.py", *sys.argv[1:]])
    results = run(args)
    all_tables = tables(results, args)
    about = machine()
    text = markdown(all_tables, about, command)
    print(text)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "latest.md"), "w") as out:
        out.write(text + "\n")
    with open(os.path.join(args.output, "latest.rst"), "w") as out:
        out.write(rst(all_tables, about, command) + "\n")
    if not chart(results, args, os.path.join(args.output, "latest.png")):
        print("(no chart: pip install matplotlib)")


if __name__ == "__main__":
    main()
