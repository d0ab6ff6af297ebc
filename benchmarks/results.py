"""Figures with their spread over runs, targets, and their table and JSON forms."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """A goal for the median of a figure: value compared with ``op`` (>=, <=, <)."""

    op: str
    value: float

    def met(self, measured: float) -> bool:
        if self.op == ">=":
            return measured >= self.value
        if self.op == "<=":
            return measured <= self.value
        if self.op == "<":
            return measured < self.value
        raise ValueError(f"unknown target operator {self.op!r}")

    def describe(self, unit: str) -> str:
        return f"{self.op} {format_number(self.value)} {unit}".strip()


@dataclass
class Figure:
    """One measured quantity: a value per run, with an optional target.

    A void figure (a missing or duplicated row, a run that timed out) keeps its
    values for reference, but the table shows it as void and never as met.
    """

    section: str
    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    target: Target | None = None
    void: str = ""
    note: str = ""

    @property
    def spread(self) -> tuple[float, float, float] | None:
        if not self.runs:
            return None
        return min(self.runs), statistics.median(self.runs), max(self.runs)

    @property
    def verdict(self) -> str:
        if self.void:
            return "void"
        spread = self.spread
        if self.target is None or spread is None:
            return ""
        return "met" if self.target.met(spread[1]) else "missed"

    def to_json(self) -> dict[str, Any]:
        spread = self.spread
        return {
            "section": self.section,
            "name": self.name,
            "unit": self.unit,
            "runs": self.runs,
            "min": spread[0] if spread else None,
            "median": spread[1] if spread else None,
            "max": spread[2] if spread else None,
            "target": self.target.describe(self.unit) if self.target else None,
            "verdict": self.verdict,
            "void": self.void or None,
            "note": self.note or None,
        }


def percentile(values: Sequence[float], p: float) -> float:
    """Return the p-th percentile (0..100) by the nearest-rank method."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table_rows(figures: Sequence[Figure]) -> list[list[str]]:
    """Return one row of text cells per figure, in the column order of HEADERS."""
    rows = []
    for figure in figures:
        spread = figure.spread
        cells = [format_number(v) for v in spread] if spread else ["-", "-", "-"]
        note = figure.void or figure.note
        target = figure.target.describe(figure.unit) if figure.target else ""
        rows.append(
            [
                figure.section,
                figure.name,
                *cells,
                figure.unit,
                target,
                figure.verdict,
                note,
            ]
        )
    return rows


HEADERS = [
    "section",
    "figure",
    "min",
    "median",
    "max",
    "unit",
    "target",
    "verdict",
    "note",
]


def markdown_table(figures: Sequence[Figure]) -> str:
    """Render figures as a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in table_rows(figures):
        cells = [cell.replace("|", "\\|") for cell in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
