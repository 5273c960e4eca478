"""Reading the app's screen as text, for tests that assert on what a person would see."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from textual.app import App


def screen_text(app: App[Any]) -> str:
    """The whole screen as plain text, one line per terminal row."""
    width, height = app.size
    console = Console(
        file=io.StringIO(), width=width, height=height, color_system=None, force_terminal=True,
        legacy_windows=False, record=True,
    )  # fmt: skip
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


def screen_lines(app: App[Any]) -> list[str]:
    return [line.rstrip() for line in screen_text(app).splitlines()]
