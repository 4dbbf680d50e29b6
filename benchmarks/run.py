"""
The side-by-side benchmark: echoapp against the servers it replaces.

    python benchmarks/run.py            # about 17 minutes on 2 cores
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
import resource
import sys
import time

from contenders import (
    CONTENDERS,
    ECHO_CONTENDERS,
    GROUP_CONTENDERS,
    HERE,
    IDLE_KEY,
    SCENARIO_KEYS,
    UDP_CONTENDERS,
    UDP_PROXY_CONTENDERS,
    every_contender,
    have_haproxy,
    have_nginx_stream,
)
from measure import (
    NOISY_STEAL,
    Results,
    build_loadgen,
    cpu_times,
    free_port,
    idle_rss,
    measure,
    start_server,
    steal_share,
)
from report import chart, machine, markdown, rst, selected, tables

SMOKE_SCENARIOS = ["1", "50", IDLE_KEY]


def progress(done: int, total: int, text: str) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text[:70]:<70}")
    sys.stderr.flush()


def plan_of(args: argparse.Namespace, idle_count: int) -> list[tuple[str, list, int]]:
    """(contender, its scenarios, idle connections to open) for each server run in a round."""
    chosen = selected(args)
    tcp = [scenario for scenario in chosen if not scenario.udp and not scenario.echo]
    echo = [scenario for scenario in chosen if scenario.echo and not scenario.udp]
    udp = [scenario for scenario in chosen if scenario.udp and not scenario.echo]
    udp_proxy = [scenario for scenario in chosen if scenario.udp and scenario.echo]
    idle = idle_count if IDLE_KEY in args.scenarios else 0
    names = args.contenders or every_contender()
    plan = []
    for name in names:
        if name in UDP_PROXY_CONTENDERS:
            runs = udp_proxy
        else:
            runs = udp if name in UDP_CONTENDERS else echo if name in ECHO_CONTENDERS else tcp
        # Idle memory is one process's: not measured for servers of several processes.
        idle_here = idle if name in CONTENDERS else 0
        if runs or idle_here:
            plan.append((name, runs, idle_here))
    return plan


def run(args: argparse.Namespace) -> Results:
    loadgen = build_loadgen()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    plan = plan_of(args, min(args.idle, hard - 100))
    per_round = sum(len(runs) + (1 if idle > 0 else 0) for _, runs, idle in plan)
    total = args.rounds * per_round
    results = Results()
    done = 0
    round_number = 0
    repeats = args.repeat_noisy
    while round_number < args.rounds:
        round_number += 1
        before = cpu_times()
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
        results.steal.append(steal_share(before, cpu_times()))
        if results.steal[-1] > NOISY_STEAL and repeats > 0:
            repeats -= 1
            args.rounds += 1  # one more round: the noisy one stays in, marked, beside it
            total += per_round
    progress(done, total, "done")
    sys.stderr.write("\n")
    return results


def needs(args: argparse.Namespace) -> str | None:
    """What the chosen contenders need that is missing, as the one line to print."""
    names = args.contenders or every_contender()
    if any("HAProxy" in name for name in names) and not have_haproxy():
        return "the HAProxy contenders need haproxy (Debian: apt-get install haproxy)"
    if any("nginx" in name for name in names) and not have_nginx_stream():
        return (
            "the nginx contender needs nginx and its stream module "
            "(Debian: apt-get install nginx-light libnginx-mod-stream)"
        )
    if any("uvloop" in name for name in names):
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return (
                "the uvloop contenders need uvloop: pip install '.[bench]' from a checkout "
                "(or 'echoapp[bench]'), or choose others with --contender"
            )
    return None


def default_output(now: float | None = None) -> str:
    """A fresh directory for this run's results: the tracked ones change only when asked."""
    stamp = time.strftime("run-%Y%m%d-%H%M%S", time.localtime(now))
    return os.path.join(HERE, "results", stamp)


def main() -> None:
    names = [*CONTENDERS, *GROUP_CONTENDERS, *ECHO_CONTENDERS, *UDP_CONTENDERS, *UDP_PROXY_CONTENDERS]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="contenders (quote the name for --contender):\n" + "\n".join(f"  {name}" for name in names),
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every contender once")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    parser.add_argument(
        "--idle", type=int, default=10_000, help="idle connections for the RSS scenario (0: skip)"
    )
    parser.add_argument(
        "--scenario",
        dest="scenarios",
        action="append",
        choices=SCENARIO_KEYS,
        metavar="SCENARIO",
        help=f"run this scenario; repeatable; all by default ({', '.join(SCENARIO_KEYS)})",
    )
    parser.add_argument(
        "--contender",
        dest="contenders",
        action="append",
        choices=names,
        metavar="NAME",
        help="run this server; repeatable; all by default (the names are listed below)",
    )
    parser.add_argument(
        "--output",
        help="directory for latest.md, latest.rst and latest.png; by default a new "
        "benchmarks/results/run-DATE-TIME (--output benchmarks/results updates the figures the docs show)",
    )
    parser.add_argument(
        "--repeat-noisy",
        type=int,
        default=0,
        metavar="N",
        help=f"run up to N more rounds when one had more than {NOISY_STEAL:.0%}% CPU steal",
    )
    parser.add_argument("--smoke", action="store_true", help="one short run of echoapp, to keep this working")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.warmup, args.duration, args.idle = 1, 0.2, 0.5, 50
        args.scenarios = args.scenarios or SMOKE_SCENARIOS
        args.contenders = args.contenders or ["echoapp-tcp, default reactor"]
    args.scenarios = args.scenarios or SCENARIO_KEYS
    missing = needs(args)
    if missing:
        raise SystemExit(f"benchmarks/run.py: {missing}")
    output = args.output or default_output()
    command = "python " + " ".join(["benchmarks/run.py", *sys.argv[1:]])
    results = run(args)
    all_tables = tables(results, args)
    about = machine()
    text = markdown(all_tables, about, command)
    print(text)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "latest.md"), "w") as out:
        out.write(text + "\n")
    with open(os.path.join(output, "latest.rst"), "w") as out:
        out.write(rst(all_tables, about, command) + "\n")
    if not chart(results, args, os.path.join(output, "latest.png")):
        print("(no chart: pip install matplotlib)")
    print(f"Results in {output}")


if __name__ == "__main__":
    main()
