"""py-spy profiles of the serve and worker processes, and a text summary of them.

``record`` attaches ``py-spy record --format raw`` (collapsed stacks, which
speedscope.app also opens) to a running process; ``python -m benchmarks.profile
FILE`` prints the functions with the most samples on their own (self), and the
TraceHub functions with the most samples anywhere on the stack (total). With
uvloop, time spent waiting in the event loop shows as self time of Runner.run.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

from benchmarks.harness import Bench, Child

SAMPLE_RATE_HZ = 200


def record(bench: Bench, pid: int, output: Path) -> Child | None:
    """Start py-spy on pid, writing collapsed stacks to output when stopped with SIGINT.

    Returns None when py-spy is not installed (pip install py-spy).
    """
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        str(SAMPLE_RATE_HZ),
        "--nonblocking",
        "--output",
        str(output),
    ]
    return bench.spawn(f"py-spy-{pid}", args)


def stop(bench: Bench, child: Child) -> None:
    """Stop py-spy with SIGINT so that it writes its output."""
    bench.stop(child, signal.SIGINT)


def summarise(path: Path, top: int) -> str:
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = stack.split(";")
        frames = [frame_name(f) for f in raw_frames]
        samples += count
        self_samples[frames[-1]] += count
        for raw, frame in set(zip(raw_frames, frames)):
            if is_tracehub(raw):
                total_samples[frame] += count
    lines = [f"{path.name}: {samples} samples"]
    for title, counter in (
        ("self", self_samples),
        ("total (TraceHub functions only)", total_samples),
    ):
        lines.append(f"\ntop {top} by {title} samples:")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / max(samples, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def is_tracehub(frame: str) -> bool:
    """Tell whether a frame is TraceHub code past start-up (py-spy shortens
    tracehub/server/routes.py to server/routes.py)."""
    path = frame.partition(" (")[2]
    if path.startswith(
        ("tracehub/cli.py", "tracehub/__main__.py", "tracehub/runner.py")
    ):
        return False
    return path.startswith(("tracehub/", "server/"))


def frame_name(frame: str) -> str:
    """Return 'function (file)' from a py-spy frame 'function (path:line)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__
    )
    parser.add_argument(
        "files", nargs="+", type=Path, help="py-spy raw (collapsed stack) files."
    )
    parser.add_argument(
        "--top", type=int, default=25, help="Functions to list per table."
    )
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top))
        print()


if __name__ == "__main__":
    main()
