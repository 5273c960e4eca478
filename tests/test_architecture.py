"""The architecture, checked rather than hoped for.

- Layers import only downwards (docs/ARCHITECTURE.md, "Layers"); the front ends never
  reach the capture, the platform or the engine.
- Snapshot mode never loads the TUI toolkit.
- Only `platform/__init__.py` and `capture/__init__.py` ask which OS this is.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "netoproc"

# layer -> the netoproc layers it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "clock": set(),
    "ebpf": set(),  # loading the kernel programs: used by the layers that talk to the kernel
    "capture": {"model", "ebpf"},
    "decode": {"model", "capture"},
    "platform": {"model", "ebpf"},
    "snapshot": {"model"},
    "engine": {"model", "decode", "capture", "snapshot"},
    "output": {"model", "snapshot"},
    "ledger": {"model", "snapshot", "output"},
    "session": {"model", "clock", "capture", "decode", "platform", "engine", "snapshot"},
    "exporter": {"output", "snapshot", "model"},  # --listen: the HTTP side of the metrics
    "backends": {"capture", "platform"},  # --version: what this machine offers
    "cli": {
        "backends",
        "session",
        "output",
        "capture",
        "clock",
        "snapshot",
        "model",
        "tui",
        "exporter",
        "ledger",
    },
    "tui": {"model", "snapshot", "output"},
    "__main__": {"cli"},
}


def _layer(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else "__init__"


def _netoproc_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "netoproc" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if _layer(p) != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_layers_import_downwards(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{layer} is not a known layer"
    wrong = _netoproc_imports(path) - ALLOWED[layer] - {layer}
    assert not wrong, f"{path.relative_to(SRC)} imports {sorted(wrong)}"


def test_snapshot_mode_never_loads_the_tui_toolkit() -> None:
    code = (
        "import sys\n"
        "import netoproc.cli, netoproc.session, netoproc.output.formats\n"
        "import netoproc.engine, netoproc.capture.linux, netoproc.platform.linux\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_only_the_selectors_ask_which_os_this_is() -> None:
    allowed = {SRC / "platform" / "__init__.py", SRC / "capture" / "__init__.py"}
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path not in allowed and "sys.platform" in path.read_text()
    ]
    assert offenders == []


def test_the_report_loads_neither_the_capture_nor_the_tui(tmp_path: Path) -> None:
    """`netoproc report` reads the ledger as any user; it must not load what captures."""
    code = (
        "import sys\n"
        "from netoproc.cli import main\n"
        f"main(['report', '--ledger', {str(tmp_path / 'none.db')!r}])\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'numpy')\n"
        "          or m.startswith(('netoproc.capture', 'netoproc.session', 'netoproc.engine',\n"
        "                           'netoproc.platform', 'netoproc.tui', 'netoproc.ebpf'))]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "none.db" in result.stderr
    assert result.stdout.strip() == ""
