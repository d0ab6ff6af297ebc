"""Gap injection: logs held back from their batch, so that the server records gaps
and the ACK and replay paths run all the time.

Half of the held logs go out a few batches later. The other half wait for a grace
period, which leaves the server's worker time to find them in the producer buffer
first. If the server still lists them as missing after that, the producer sends
them itself, so holding a log back never loses it.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Iterable

REPLAY_ONLY_SHARE = 0.5
LATER_BATCHES = (1, 3)
LATER_FLUSHES_FALLBACK = 3  # flush intervals after which a "later" log goes out anyway


@dataclass
class HeldLog:
    """A log held back, and when it becomes due: after release_after batches have
    been sent, or at release_at (monotonic seconds), whichever comes first."""

    member: bytes
    release_after: int
    release_at: float


class GapInjector:
    """Decides which new logs to hold back and keeps them until they are due."""

    def __init__(
        self, rng: random.Random, rate: float, flush_s: float, replay_grace_s: float
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"gap rate must be from 0 to 1, got {rate}")
        self.rng = rng
        self.rate = rate
        self.flush_s = flush_s
        self.replay_grace_s = replay_grace_s
        self.held_logs: dict[int, HeldLog] = {}

    def maybe_hold(
        self, seq: int, member: bytes, batches_sent: int, now: float
    ) -> bool:
        """Hold the log back with probability rate; return True when it was held."""
        if self.rate == 0.0 or self.rng.random() >= self.rate:
            return False
        if self.rng.random() < REPLAY_ONLY_SHARE:
            self.held_logs[seq] = HeldLog(
                member, sys.maxsize, now + self.replay_grace_s
            )
        else:
            later = self.rng.randint(*LATER_BATCHES)
            self.held_logs[seq] = HeldLog(
                member,
                batches_sent + later,
                now + LATER_FLUSHES_FALLBACK * self.flush_s,
            )
        return True

    def take_due(
        self, batches_sent: int, now: float, limit: int
    ) -> list[tuple[int, bytes]]:
        """Remove and return up to limit held logs that are due, by seq."""
        due = []
        for seq in sorted(self.held_logs):
            if len(due) >= limit:
                break
            held_log = self.held_logs[seq]
            if batches_sent >= held_log.release_after or now >= held_log.release_at:
                due.append((seq, held_log.member))
                del self.held_logs[seq]
        return due

    def is_held(self, seq: int) -> bool:
        return seq in self.held_logs

    def forget_through(self, durable_till: int) -> int:
        """Forget held logs with seq <= durable_till; return how many there were."""
        done = [seq for seq in self.held_logs if seq <= durable_till]
        for seq in done:
            del self.held_logs[seq]
        return len(done)

    def forget(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self.held_logs.pop(seq, None)

    def clear(self) -> None:
        self.held_logs.clear()

    def __len__(self) -> int:
        return len(self.held_logs)
