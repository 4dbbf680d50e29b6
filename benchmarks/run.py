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
import resource
import sys

from contenders import CONTENDERS, HERE, SCENARIOS, UDP_CONTENDERS, UDP_SCENARIOS
from measure import Results, build_loadgen, free_port, idle_rss, measure, start_server
from report import chart, machine, markdown, rst, tables


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
