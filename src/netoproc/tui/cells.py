"""How one value looks in one cell: units, sparklines, rate colours, fitting to a width.

Pure functions, shared by every view so a rate, a size or a sparkline looks
the same wherever it appears. Untrusted text is made printable by the views
before it gets here; `fit` only measures and cuts.
"""

from __future__ import annotations

import time

from rich.cells import cell_len, set_cell_size
from rich.style import Style

from netoproc.model import V4_MAPPED_PREFIX, format_endpoint

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
_CLAMPED_LEVELS = SPARK_LEVELS + SPARK_LEVELS[-1]

# Rate colours: green below 1 KB/s, yellow to 100 KB/s, red above (README, "Monitor mode").
GREEN = Style(color="green")
YELLOW = Style(color="yellow")
RED = Style(color="red")
DIM = Style(dim=True)
BOLD = Style(bold=True)
PLAIN = Style()


def rate_style(rate: float) -> Style:
    """Green below 1 KB/s, yellow up to 100 KB/s, red above."""
    if rate < 1_000:
        return GREEN
    if rate <= 100_000:
        return YELLOW
    return RED


def count(value: int) -> str:
    """An integer with thousands separators: 1,234,567."""
    return f"{value:,}"


def milliseconds(value: float | None) -> str:
    """RTT or latency as the Connection and DNS views write it: 0.5ms, 12ms; `-` when unknown."""
    if value is None:
        return "-"
    if value < 0.1:
        return "<0.1ms"
    return f"{value:.1f}ms" if value < 10 else f"{value:.0f}ms"


def clock_time(timestamp: float) -> str:
    """Wall-clock HH:MM:SS in the local time zone."""
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def elapsed(seconds: float) -> str:
    """How long netoproc has been running, in minutes: <1m, 12m, 3h 02m. A clock of
    seconds would repaint an idle monitor every second; the rates show it is live."""
    hours, minutes = divmod(max(0, int(seconds)) // 60, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m" if minutes else "<1m"


def endpoint(addr: int, port: int) -> str:
    """address:port, with `*` for the wildcard address of listening and unbound sockets."""
    if addr in (0, V4_MAPPED_PREFIX):
        return f"*:{port}"
    return format_endpoint(addr, port)


def sparkline(values: tuple[float, ...], width: int) -> str:
    """The last `width` samples as block characters, scaled to their own maximum.

    Samples not yet taken are blank, so a process seen for five seconds shows
    five bars at the right, never invented history.
    """
    if width <= 0:
        return ""
    shown = values[-width:]
    peak = max(shown, default=0.0)
    if peak <= 0:
        return " " * (width - len(shown)) + SPARK_LEVELS[0] * len(shown)
    scale = len(SPARK_LEVELS) / peak
    levels = _CLAMPED_LEVELS  # the peak itself scales to one past the top
    return " " * (width - len(shown)) + "".join([levels[int(v * scale)] for v in shown])


def fit(text: str, width: int, right: bool = False) -> str:
    """`text` padded or cut to exactly `width` cells; a cut ends in `…`."""
    if width <= 0:
        return ""
    length = cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…"
    padding = " " * (width - length)
    return padding + text if right else text + padding


_SHORT_STATES = {"ESTABLISHED": "ESTAB", "CLOSE_WAIT": "CLOSE-W", "TIME_WAIT": "TIME-W"}


def state_text(state: str, width: int) -> str:
    """A connection state in `width` cells, with ss's short names when the full one is too wide."""
    if len(state) > width:
        state = _SHORT_STATES.get(state, state)
    return fit(state, width)
