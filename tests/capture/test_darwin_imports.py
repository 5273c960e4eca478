"""macOS code stays behind the selectors: importing anything loads no macOS library,
and the darwin and linux backends never import each other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[2] / "src" / "netoproc"
MODULES = sorted(
    ".".join(("netoproc", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
    for p in SRC.rglob("*.py")
    if p.name != "__main__.py"  # runs the program
)

# Import every module with ctypes' library loaders watched; report what was loaded.
PROBE = """
import ctypes, ctypes.util, importlib, json, sys
loaded = []
original = ctypes.CDLL.__init__
def watched(self, name, *args, **kwargs):
    loaded.append(str(name))
    original(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = watched
ctypes.util.find_library = lambda name: loaded.append("find:" + name)
for module in sys.argv[1:]:
    importlib.import_module(module)
print(json.dumps({"loaded": loaded, "modules": sorted(sys.modules)}))
"""


def _import(*modules: str) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, check=True
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_every_module_imports_on_linux_without_loading_a_library() -> None:
    assert "netoproc.capture.darwin" in MODULES and "netoproc.platform.darwin" in MODULES
    assert _import(*MODULES)["loaded"] == []


def test_the_backends_do_not_import_each_other() -> None:
    darwin = _import("netoproc.capture.darwin", "netoproc.platform.darwin")["modules"]
    assert not [m for m in darwin if m.startswith("netoproc.") and m.endswith("linux")]
    linux = _import("netoproc.capture.linux", "netoproc.platform.linux")["modules"]
    assert not [m for m in linux if m.startswith("netoproc.") and "darwin" in m]
