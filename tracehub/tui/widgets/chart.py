"""A bar chart of recent values, scaled from zero, one column per value."""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

BARS = " ▁▂▃▄▅▆▇"


class BarChart(Widget):
    """Vertical bars from zero to the largest shown value, newest on the right.

    Unlike Textual's Sparkline, which stretches the data over the whole width and
    scales from the smallest value, a steady load here draws full bars and a
    chart with few points stays short, so the width reads as time.
    """

    DEFAULT_CSS = """
    BarChart {
        height: 4;
        color: $accent;
    }
    """

    data: reactive[tuple[float, ...]] = reactive(tuple, layout=False)

    def plot(self, values: Sequence[float]) -> None:
        self.data = tuple(values)

    def render(self) -> Text:
        width, height = self.content_size
        points = self.data[-width:] if width else ()
        top = max(points, default=0.0) or 1.0
        lines = []
        for level in range(height, 0, -1):
            cells = "".join(_cell(value / top * height, level) for value in points)
            lines.append(cells.rjust(width))
        return Text("\n".join(lines), no_wrap=True)


def _cell(scaled: float, level: int) -> str:
    """Return the character for row `level` (1 = bottom) of a bar `scaled` rows high."""
    fill = scaled - (level - 1)
    if fill >= 1:
        return "█"
    if fill <= 0:
        return "▁" if level == 1 and scaled > 0 else " "
    return BARS[max(1, int(fill * len(BARS)))]
