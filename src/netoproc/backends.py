"""What this machine offers netoproc, found cheaply and without privileges: `--version`.

The capture and the owner backends are probed the way the session would pick
them (capture/__init__.py and platform/__init__.py, the only places that ask
which OS this is), without opening a device or loading a kernel program: what
is said is what can be known without root, and what needs root is said so.
"""

from __future__ import annotations

from netoproc.capture import describe_live
from netoproc.platform import describe_owners


def version_text(prog: str, version: str, ebpf: bool) -> str:
    """`netoproc 0.1.0`, then a line each for the capture, the owners and what is lacking."""
    capture, capture_lacks = describe_live(ebpf)
    owners, owner_lacks = describe_owners(ebpf)
    lines = [f"{prog} {version}", f"capture: {capture}", f"owners: {owners}"]
    if not ebpf:
        lines.append("eBPF: turned off (NETOP_EBPF=off)")
    lacking = list(dict.fromkeys(capture_lacks + owner_lacks))
    if lacking:
        lines.append(
            f"needs root (sudo {prog}) to capture: this process lacks {', '.join(lacking)}; "
            "--read and report need no privileges"
        )
    return "\n".join(lines)
