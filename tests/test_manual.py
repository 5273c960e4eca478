"""netoproc(1) says what --help says: the same options, values and exit codes.

The manual is a hand-written roff file (share/man/man1/netoproc.1); these
checks read its source and the real parsers, so an option added to either
without the other fails here. groff checks that it renders without warnings.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netoproc import __version__, cli
from netoproc.ledger import report
from netoproc.tui.help import KEYS

SHARE = Path(__file__).parents[1] / "share"
MANUAL = SHARE / "man" / "man1" / "netoproc.1"


def section(name: str) -> str:
    """The roff source of one `.SH` section."""
    text = MANUAL.read_text()
    start = text.index(f"\n.SH {name}\n")
    end = text.find("\n.SH ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def plain(roff: str) -> str:
    """Roff escapes as the reader sees them: \\- as -, arrows, dashes; fonts dropped."""
    for escape, char in (("\\-", "-"), ("\\(ua", "↑"), ("\\(da", "↓"), ("\\(en", "\u2013")):
        roff = roff.replace(escape, char)
    return re.sub(r"\\f[BIRP]", "", roff)


def documented(roff: str) -> dict[str, list[str]]:
    """Each option a `.TP` entry introduces -> the values listed with it (a|b|c)."""
    found: dict[str, list[str]] = {}
    for head in re.findall(r"^\.TP\n(.*)$", plain(roff), re.M):
        words = head.replace('"', " ").split()[1:]  # after the macro
        options = [w.rstrip(",") for w in words if w.startswith("-")]
        listed = "|" in words  # `.BR \-\-format " " tsv | json`: rendered tsv|json
        values = [w for w in words if listed and w != "|" and not w.startswith("-")]
        for option in options:
            found[option] = values
    return found


def parsed(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    return {
        option: [str(c) for c in action.choices] if action.choices else []
        for action in parser._actions
        for option in action.option_strings
    }


def test_every_option_of_help_is_in_the_manual_and_no_other() -> None:
    assert documented(section("OPTIONS")) == parsed(cli.build_parser("netoproc"))


def test_every_option_of_the_report_is_in_the_manual_and_no_other() -> None:
    assert documented(section("REPORT")) == parsed(report.build_parser("netoproc"))


def test_the_options_are_the_ones_help_prints() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "netoproc", "--help"], capture_output=True, text=True, check=True
    ).stdout
    printed = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", helped.split("\n\n", 1)[1]))
    assert set(documented(section("OPTIONS"))) <= printed


def test_exit_codes_are_the_programs() -> None:
    codes = re.findall(r"^\.TP\n\.B (\d)$", section("EXIT STATUS"), re.M)
    program = [cli.EXIT_OK, cli.EXIT_NOT_ROOT, cli.EXIT_UNAVAILABLE, cli.EXIT_USAGE, cli.EXIT_FATAL]
    assert [int(code) for code in codes] == program


def test_every_key_of_the_monitor_is_in_the_manual() -> None:
    keys = plain(section("KEYS"))
    for key, _action in KEYS:
        for name in key.replace("(Shift-s)", "").split(" / "):
            assert re.search(rf"(^|[\s\"]){re.escape(name.strip())}([\s\",]|$)", keys, re.M), name


def test_the_manual_names_this_version() -> None:
    assert f'"netoproc {__version__}"' in MANUAL.read_text().splitlines()[2]


def test_it_renders_without_warnings() -> None:
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(MANUAL)], capture_output=True, text=True
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_netop_is_the_same_page() -> None:
    assert (MANUAL.parent / "netop.1").read_text() == ".so man1/netoproc.1\n"


@pytest.mark.parametrize(
    "path",
    ["man/man1/netoproc.1", "man/man1/netop.1", "bash-completion/completions/netoproc",
     "bash-completion/completions/netop", "zsh/site-functions/_netoproc",
     "fish/vendor_completions.d/netoproc.fish"],
)  # fmt: skip
def test_installed_with_the_package(path: str) -> None:
    installed = Path(sys.prefix) / "share" / path
    assert installed.read_bytes() == (SHARE / path).read_bytes(), "reinstall: pip install -e ."
