"""End to end: three simulated services keep logging while every fault is injected,
one at a time and then all together, and nothing they generated is lost."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import httpx

from conftest import Isolated, RunningServer, wait_for
from test_sim import Live, assert_exactly_generated, control, sim_config

TIMED = {"crash-worker": 1500, "drop-network": 1500, "delay-ack": 1500}
ONE_BY_ONE = ("crash-worker", "drop-network", "delay-ack", "flush-queue", "reset")
RECOVERY_TIMEOUT_S = 8.0


async def poll_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll predicate every 50 ms; return whether it held before timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


RECOVERED = "recovered"


async def caught_up(live: Live) -> str:
    """Wait until every service is durable up to the seq it had generated when
    called. Return RECOVERED, or which services lag after RECOVERY_TIMEOUT_S."""
    marks = {name: stats.last_seq or 0 for name, stats in live.latest.items()}

    def lagging() -> list[str]:
        return [
            f"{name} durable {live.latest[name].durable_till} < {mark}"
            for name, mark in marks.items()
            if live.latest[name].durable_till < mark
        ]

    if await poll_until(lambda: not lagging(), RECOVERY_TIMEOUT_S):
        return RECOVERED
    return f"not recovered in {RECOVERY_TIMEOUT_S}s: " + ", ".join(lagging())


async def inject_and_recover(live: Live, url: str, action: str) -> str:
    """Inject one fault, wait for its end, and return how the services recovered."""
    answer = await control(url, action, TIMED.get(action))
    ends_at = answer.get("endsAt", time.time())
    await wait_for(lambda: time.time() >= ends_at, timeout=10, what=f"{action} to end")
    return await caught_up(live)


async def queued_batches(url: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return int((await client.get("/metrics/queue")).json()["stream"]["length"])


async def inject_all_overlapping(live: Live, url: str) -> tuple[str, int]:
    """Crash the worker, delay ACKs, flush the queued batches, then drop the network.
    End every fault with reset once producers retry.

    Returns how the services recovered, and how many batches were flushed.
    """
    await control(url, "crash-worker", 4000)
    await control(url, "delay-ack", 4000)
    await wait_for(
        lambda: queued_batches(url),
        timeout=10,
        what="batches queued behind the crashed worker",
    )
    flushed = (await control(url, "flush-queue"))["flushed"]["stream"]
    retries_before = sum(s.retries for s in live.latest.values())
    await control(url, "drop-network", 4000)
    await wait_for(
        lambda: sum(s.retries for s in live.latest.values()) > retries_before,
        timeout=10,
        what="retries under the dropped network",
    )
    await control(url, "reset")
    return await caught_up(live), flushed


def ack_state_agrees(isolated: Isolated, service: str, last_seq: int) -> bool:
    rows = isolated.sql(
        "SELECT ack_till, durable_till, lost FROM ack_state WHERE service = %s",
        (service,),
    )
    return rows == [(last_seq, last_seq, 0)]


async def test_every_fault_loses_nothing(
    server: RunningServer, isolated: Isolated
) -> None:
    config = sim_config(
        server.url, isolated, services=3, rate=40.0, gap_rate=0.02, drain_timeout_s=25.0
    )
    recovered: dict[str, str] = {}
    async with Live(config) as live:
        await live.wait_acked(20)
        for action in ONE_BY_ONE:
            recovered[action] = await inject_and_recover(live, server.url, action)
        recovered["all overlapping"], flushed = await inject_all_overlapping(
            live, server.url
        )
        result = await live.finish()

    for stats in result.services:
        assert stats.generated > 100, stats
        assert stats.retries > 0, stats
        assert stats.drained, (
            f"{stats.service} not drained; recovery after each fault: {recovered}"
        )
        assert_exactly_generated(isolated, stats)
    # The worker copies the ACK figures into ack_state about once a second.
    expected = {stats.service: stats.last_seq or 0 for stats in result.services}
    await wait_for(
        lambda: all(
            ack_state_agrees(isolated, s, last) for s, last in expected.items()
        ),
        timeout=10,
        what=f"ack_state at {expected}",
    )
    assert recovered == {action: RECOVERED for action in recovered}
    assert flushed > 0, "flush-queue found no queued batch to delete"
