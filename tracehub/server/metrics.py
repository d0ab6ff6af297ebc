"""Figures for GET /metrics and the metrics:snapshot event."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from tracehub.faults import Faults
from tracehub.ingest import Ingestor
from tracehub.queue import RedisQueue
from tracehub.storage import Store

WORKER_ALIVE_S = 10.0
LATENCY_WINDOW = 4096


class LatencyWindow:
    """The most recent ACK latencies of this node, in milliseconds."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self.samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self.samples.append(ms)

    def percentile(self, p: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))
        return round(ordered[index], 3)


def _sum(buckets: list[dict[str, int]], name: str) -> int:
    return sum(b.get(name, 0) for b in buckets)


async def snapshot(
    queue: RedisQueue, store: Store, ingestor: Ingestor, faults: Faults, latency: LatencyWindow
) -> dict[str, Any]:
    """Return the cluster-wide figures (from Redis and PostgreSQL) and this node's latency."""
    minute = await queue.stats_window(60)
    last = minute[-1] if minute else {}
    ingested_min = _sum(minute, "in")
    depth = await queue.depth()
    workers = await queue.workers()
    now = time.time()
    replay_counts = await store.replay_counts()
    services = []
    for service in await queue.known_services():
        figures = await ingestor.state_of(service)
        if figures is None:
            continue
        ingested = _sum(minute, f"in:{service}")
        errors = _sum(minute, f"err:{service}")
        figures.pop("missingRanges", None)
        figures.update(
            eps1s=last.get(f"in:{service}", 0),
            eps1m=round(ingested / 60, 1),
            errorRate=round(errors / ingested, 4) if ingested else 0.0,
            lag=figures["ackTill"] - figures["durableTill"],
        )
        services.append(figures)
    return {
        "at": now,
        "eps": {"1s": last.get("in", 0), "1m": round(ingested_min / 60, 1)},
        "committedEps": {"1s": last.get("committed", 0), "1m": round(_sum(minute, "committed") / 60, 1)},
        "ackRate": {"1s": last.get("acks", 0), "1m": round(_sum(minute, "acks") / 60, 2)},
        "errorRate": round(_sum(minute, "err") / ingested_min, 4) if ingested_min else 0.0,
        "ackLatencyMs": {"p50": latency.percentile(50), "p99": latency.percentile(99)},
        "queue": {"depth": depth["stream"], "pending": depth["pending"], "retry": depth["retry"], "dead": depth["dead"]},
        "replays": {"pending": replay_counts.get("pending", 0), "completed": replay_counts.get("completed", 0),
                    "lost": replay_counts.get("lost", 0)},
        "workers": [
            {**info, "alive": now - info.get("at", 0) < WORKER_ALIVE_S and info.get("state") == "running"}
            for info in workers.values()
        ],
        "services": services,
        "faults": faults.snapshot(),
    }  # fmt: skip


async def queue_figures(queue: RedisQueue) -> dict[str, Any]:
    """Return the figures of GET /metrics/queue."""
    depth = await queue.depth()
    return {
        "stream": {"key": queue.keys.stream, "length": depth["stream"], "pending": depth["pending"]},
        "retry": {"key": queue.keys.retry, "length": depth["retry"]},
        "dead": {"key": queue.keys.dead, "length": depth["dead"]},
        "consumers": await queue.consumers(),
    }
