"""
How the benchmark reports: medians with their spread, as Markdown and
reStructuredText tables and (with matplotlib) a chart.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

from contenders import (
    ECHO_CONTENDERS,
    ECHO_SCENARIOS,
    IDLE,
    SCENARIOS,
    UDP_CONTENDERS,
    UDP_PROXY_CONTENDERS,
    UDP_SCENARIOS,
    Scenario,
    every_contender,
)
from measure import CLIENT_CPU, NOISY_STEAL, SERVER_CPU, Results, Sample

import twisted


def spread(values: list[float], unit: str = "", digits: int = 1) -> str:
    median = statistics.median(values)
    return f"{median:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def selected(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios --scenario chose (all of them by default), in table order."""
    return [
        scenario for scenario in SCENARIOS + ECHO_SCENARIOS + UDP_SCENARIOS if scenario.key in args.scenarios
    ]


def tables(results: Results, args: argparse.Namespace) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    for scenario in selected(args):
        header = ["server", "server CPU µs/request", "requests/s", "p50 µs", "p99 µs", "client CPU"]
        header += ["lost"] if scenario.udp else []
        rows = []
        for name in args.contenders or every_contender():
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
    if results.steal:
        rows = [
            [str(number), f"{share:.1%}", "noisy" if share > NOISY_STEAL else ""]
            for number, share in enumerate(results.steal, 1)
        ]
        out.append((f"CPU steal per round (noisy above {NOISY_STEAL:.0%})", ["round", "steal", ""], rows))
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
    scenarios = [scenario for scenario in selected(args) if not scenario.udp and not scenario.echo]
    names = [
        name
        for name in args.contenders or every_contender()
        if name not in UDP_CONTENDERS and name not in ECHO_CONTENDERS and name not in UDP_PROXY_CONTENDERS
    ]
    if not scenarios or not names:
        return False
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
