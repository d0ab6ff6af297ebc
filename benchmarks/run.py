"""The benchmark command: ``python -m benchmarks.run [--quick] [--json F] [--only A,B]``.

Runs the measurements in order on a TraceHub of its own (see benchmarks.harness),
prints a table with each figure's min, median and max over the runs, and can
write the figures as JSON and as a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from benchmarks.harness import ROOT, open_bench
from benchmarks.loadgen import find_loghub
from benchmarks.results import HEADERS, Figure, markdown_table, table_rows

log = logging.getLogger("benchmarks.run")

ATTEMPTS = 2
MEASUREMENTS = [
    "throughput",
    "ceilings",
    "rsyslog",
    "latency",
    "gaps",
    "queries",
    "live",
    "memory",
]

# Sizes of a full run and of --quick (which must finish in under 3 minutes).
FULL: dict[str, Any] = {
    "events": 1_000_000,
    "services": [3, 30],
    "batches": [100, 1000],
    "workers": [1, 2],
    "processes": 1,
    "latency_rate": 20_000,
    "latency_batch": 100,
    "latency_services": 30,
    "latency_s": 60.0,
    "gap_samples": 100,
    "query_rows": 10_000_000,
    "query_requests": 200,
    "live_rate": 10_000,
    "live_s": 30.0,
    "idle_clients": 200,
    "slow_clients": 5,
    "memory_s": 30.0,
}
QUICK: dict[str, Any] = {
    **FULL,
    "events": 100_000,
    "services": [30],
    "batches": [1000],
    "workers": [2],
    "latency_s": 6.0,
    "gap_samples": 10,
    "query_rows": 1_000_000,
    "query_requests": 40,
    "live_s": 6.0,
    "memory_s": 6.0,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Smaller counts (under 3 minutes), still 3 runs.",
    )
    parser.add_argument(
        "--json", type=Path, help="Write every figure to this JSON file."
    )
    parser.add_argument(
        "--markdown", type=Path, help="Write the table as Markdown to this file."
    )
    parser.add_argument(
        "--only", help=f"Comma-separated measurements to run: {','.join(MEASUREMENTS)}."
    )
    parser.add_argument(
        "--loghub", help="Folder of Loghub *.log samples [default: tests/data/loghub]."
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="Runs per figure (at least 3 for a spread)."
    )
    parser.add_argument(
        "--events",
        type=int,
        help="Events per throughput run [1,000,000; quick 100,000].",
    )
    parser.add_argument(
        "--processes", type=int, help="Load generator processes per throughput run [1]."
    )
    parser.add_argument(
        "--plans", type=Path, help="Write the EXPLAIN plans of the query shapes here."
    )
    parser.add_argument(
        "--profile", type=Path, help="Folder for py-spy profiles of serve and worker."
    )
    parser.add_argument(
        "--rsyslog-sweep",
        action="store_true",
        help="Measure every rsyslog configuration.",
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="Keep process logs after the run."
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="Log at DEBUG level."
    )
    return parser.parse_args(argv)


def selected(only: str | None) -> list[str]:
    if not only:
        return list(MEASUREMENTS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        raise SystemExit(
            f"unknown measurement {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}"
        )
    return [n for n in MEASUREMENTS if n in names]


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    options = dict(QUICK if args.quick else FULL)
    if args.events:
        options["events"] = args.events
    if args.processes:
        options["processes"] = args.processes
    options["profile"] = args.profile
    options["rsyslog_sweep"] = args.rsyslog_sweep
    return options


async def run_all(
    bench: Any, names: list[str], options: dict[str, Any]
) -> tuple[list[Figure], dict[str, Any]]:
    figures: list[Figure] = []
    shared: dict[str, Any] = {"timings": {}}
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.monotonic()
        log.info("measuring %s", name)
        figures += await measure_with_retry(name, module, bench, options, shared)
        shared["timings"][name] = time.monotonic() - started
        log.info("%s took %.0fs", name, shared["timings"][name])
    return figures, shared


async def measure_with_retry(
    name: str, module: Any, bench: Any, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    """Run one measurement, once more if it fails; a second failure becomes a void figure.

    The retry is for processes that exit under the benchmark (on a shared machine,
    another session's cleanup may signal them).
    """
    error = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await module.measure(bench, options, shared)
        except Exception as exc:  # one failed measurement must not lose the others
            log.exception(
                "measurement %s failed (attempt %d of %d)", name, attempt, ATTEMPTS
            )
            error = f"{type(exc).__name__}: {exc}"
    return [Figure(name, "measurement failed", "", void=error)]


def print_table(figures: list[Figure], console: Console) -> None:
    table = Table(header_style="bold", show_lines=False)
    for header in HEADERS:
        table.add_column(
            header,
            overflow="fold",
            justify="right" if header in ("min", "median", "max") else "left",
        )
    styles = {"met": "green", "missed": "red", "void": "bold red"}
    for figure, row in zip(figures, table_rows(figures)):
        table.add_row(*row, style=styles.get(figure.verdict))
    console.print(table)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "argv": sys.argv,
        "commit": git_describe(),
    }


def git_describe() -> str:
    """Return the checked-out commit, with '+changes' when the work tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+changes" if dirty else commit


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    names = selected(args.only)
    options = options_of(args)
    loghub = find_loghub(args.loghub, ROOT)
    started = time.monotonic()
    with open_bench(
        loghub, args.quick, args.runs, keep_workdir=args.keep_workdir
    ) as bench:
        figures, shared = run_all_with_loop(bench, names, options)
    elapsed = time.monotonic() - started
    print_table(figures, Console(width=max(Console().width, 180)))
    print(
        f"{'quick' if args.quick else 'full'} run of {', '.join(names)} at {git_describe()}: {elapsed:.0f}s"
    )
    if args.json:
        payload = {
            "quick": args.quick,
            "runs": args.runs,
            "seconds": elapsed,
            "environment": environment(),
            "options": {k: v for k, v in options.items() if k != "profile"},
            "figures": [f.to_json() for f in figures],
            "plans": shared.get("plans"),
            "timings": shared["timings"],
        }
        args.json.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    if args.markdown:
        args.markdown.write_text(markdown_table(figures))
    if args.plans and shared.get("plans"):
        args.plans.write_text(plans_markdown(shared["plans"]))


def plans_markdown(plans: dict[str, str]) -> str:
    return "".join(
        f"#### {name}\n\n```\n{plan}\n```\n\n" for name, plan in plans.items()
    )


def run_all_with_loop(
    bench: Any, names: list[str], options: dict[str, Any]
) -> tuple[list[Figure], dict[str, Any]]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_all(bench, names, options))
    return uvloop.run(run_all(bench, names, options))


if __name__ == "__main__":
    main()
