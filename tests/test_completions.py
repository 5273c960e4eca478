"""Shell completions complete what the parsers accept, in bash, zsh and fish.

bash and fish are asked for completions for real; zsh's file is checked by
zsh itself for syntax, and all three name exactly the parsers' options.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from netoproc import cli
from netoproc.ledger import report

SHARE = Path(__file__).parents[1] / "share"
BASH = SHARE / "bash-completion" / "completions" / "netoproc"
ZSH = SHARE / "zsh" / "site-functions" / "_netoproc"
FISH = SHARE / "fish" / "vendor_completions.d" / "netoproc.fish"

OPTIONS = sorted(o for a in cli.build_parser("netoproc")._actions for o in a.option_strings)
REPORT_OPTIONS = sorted(
    o for a in report.build_parser("netoproc")._actions for o in a.option_strings
)


def bash_complete(*words: str, file: Path = BASH) -> list[str]:
    """COMPREPLY for the command line `words`, the last being the word under the cursor."""
    script = (
        f"source {shlex.quote(str(file))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"$(complete -p {shlex.quote(words[0])} | sed -E 's/.*-F ([^ ]+).*/\\1/')\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert done.stderr == ""
    return sorted(done.stdout.split())


def fish_complete(line: str) -> list[str]:
    script = f"source {shlex.quote(str(FISH))}; complete -C {shlex.quote(line)}"
    done = subprocess.run(["fish", "-c", script], capture_output=True, text=True, check=True)
    return sorted(row.split("\t")[0] for row in done.stdout.splitlines())


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("netoproc", "--view", ""), sorted(cli.VIEWS)),
        (("netoproc", "--format", "j"), ["json", "jsonl"]),
        (("netoproc", "--sort", ""), sorted(cli.SORTS)),
        (("netoproc", "--v"), ["--verbose", "--version", "--view"]),
        (("netoproc", "--ledger-"), ["--ledger-limit", "--ledger-only"]),
        (("netoproc", "r"), ["report"]),
        (("netoproc", "report", "--f"), ["--format"]),
        (("netoproc", "report", "--format", ""), ["json", "pretty", "tsv"]),
        (("netoproc", "report", "--by", "process,i"), ["process,interface"]),
        (("netoproc", "--duration", ""), []),  # a number: nothing to offer
    ],
)
def test_bash_completes_options_and_their_values(
    words: tuple[str, ...], expected: list[str]
) -> None:
    assert bash_complete(*words) == expected


def test_bash_offers_every_option_and_only_those() -> None:
    assert bash_complete("netoproc", "-") == OPTIONS
    assert bash_complete("netoproc", "report", "-") == REPORT_OPTIONS


def test_bash_completes_interfaces_and_files(tmp_path: Path) -> None:
    assert "lo" in bash_complete("netoproc", "--interface", "l")
    (tmp_path / "trace.pcapng").write_bytes(b"")
    assert bash_complete("netoproc", "--read", str(tmp_path / "tr")) == [
        str(tmp_path / "trace.pcapng")
    ]


def test_bash_completes_netop_too() -> None:
    netop = BASH.parent / "netop"
    assert bash_complete("netop", "--view", "d", file=netop) == ["dns"]


def test_zsh_file_parses_and_names_every_option() -> None:
    subprocess.run(["zsh", "-n", str(ZSH)], check=True)
    text = ZSH.read_text()
    main, _, rest = text.partition("  _arguments -S \\\n    '--monitor")
    named = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)(?=[\[=}',])", "'--monitor" + rest))
    assert named == set(OPTIONS)
    named_in_report = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)(?=[\[=}',])", main))
    assert named_in_report == set(REPORT_OPTIONS)


def test_fish_completes_options_and_their_values() -> None:
    subprocess.run(["fish", "--no-execute", str(FISH)], check=True)
    assert fish_complete("netoproc --view ") == sorted(cli.VIEWS)
    assert fish_complete("netop --sort p") == ["pid"]
    long_options = [o for o in OPTIONS if o.startswith("--")]
    assert fish_complete("netoproc --") == long_options
    assert fish_complete("netoproc report --") == [o for o in REPORT_OPTIONS if o != "-h"]
    assert fish_complete("netoproc report --format ") == ["json", "pretty", "tsv"]
    assert fish_complete("netoproc ") == ["report"]
