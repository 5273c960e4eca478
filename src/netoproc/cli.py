"""Command line: options, validation, exit codes; builds a session and runs it.

Exit codes: 0 ok, 1 not root, 2 capture device or file unavailable,
3 invalid arguments, 4 unexpected error (one line; a traceback only with
NETOP_LOG=debug or RUST_LOG=debug).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from netoproc import __version__

if TYPE_CHECKING:
    from netoproc.ledger.recorder import Recorder
    from netoproc.session import LiveSession, Settings
    from netoproc.snapshot import Snapshot

EXIT_OK = 0
EXIT_NOT_ROOT = 1
EXIT_UNAVAILABLE = 2
EXIT_USAGE = 3
EXIT_FATAL = 4
SESSION_STOP_SECONDS = 5.0

DESCRIPTION = """\
Per-process, per-connection network traffic monitor with a DNS observatory.

Without --duration, opens the full-screen monitor. With --duration SECONDS,
collects per-process traffic for that long and prints one table (tsv, json or
pretty) for scripts. --read FILE replays a pcap or pcapng capture instead of
the live network (no root needed).

Bytes are IP-layer bytes: IP header plus payload, from the IP length fields
(TSO/GSO super-packets and jumbograms at their real length), never link-layer
headers. RX and TX are from the local process's point of view."""

EPILOG = """\
exit codes: 0 ok, 1 not root, 2 capture device or file unavailable,
3 invalid arguments, 4 unexpected error"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _in_range(
    kind: Callable[[str], float], low: float, high: float, unit: str
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # also rejects nan
            raise argparse.ArgumentTypeError(f"{text} is out of range ({low:g} to {high:g}{unit})")
        return value

    return parse


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--duration",
        type=_in_range(float, 1.0, 3600.0, " seconds"),
        metavar="SECONDS",
        help="snapshot mode: collect for this long, print, exit (1.0 to 3600.0)",
    )
    parser.add_argument("--monitor", action="store_true", help="full-screen monitor (the default)")
    parser.add_argument(
        "--format",
        choices=("tsv", "json", "pretty"),
        default="tsv",
        help="snapshot output format (default: tsv)",
    )
    parser.add_argument(
        "--filter",
        metavar="PATTERN",
        help="only processes, remote addresses or domains containing PATTERN (any case)",
    )
    parser.add_argument(
        "--interface", metavar="IFACE", help="capture on this interface only (default: all)"
    )
    parser.add_argument(
        "--sort",
        choices=("traffic", "pid", "name", "connections"),
        default="traffic",
        help="initial sort column of the monitor (default: traffic)",
    )
    parser.add_argument(
        "--no-color", action="store_true", help="no colours (also when NO_COLOR is set)"
    )
    parser.add_argument(
        "--no-dns", action="store_true", help="do not capture DNS payloads or show the DNS view"
    )
    parser.add_argument(
        "--bpf-buffer",
        type=_in_range(int, 4096, 16777216, " bytes"),
        default=2097152,
        metavar="BYTES",
        help="kernel capture buffer size (default: 2097152; 4096 to 16777216)",
    )
    parser.add_argument(
        "--interval",
        type=_in_range(float, 0.1, 10.0, " seconds"),
        default=1.0,
        metavar="SECONDS",
        help="refresh interval (default: 1.0; 0.1 to 10)",
    )
    parser.add_argument(
        "--read",
        metavar="FILE",
        help="replay a pcap/pcapng file instead of capturing; packet times drive the clock",
    )
    parser.add_argument(
        "--ledger",
        metavar="FILE",
        help="also record per-minute usage into this SQLite file (created 0600); "
        "read it with `report`",
    )
    parser.add_argument(
        "--ledger-only",
        action="store_true",
        help="record the ledger and show nothing, until SIGTERM/Ctrl-C (or --duration)",
    )
    parser.add_argument(
        "--ledger-limit",
        type=_in_range(float, 1.0, 1048576.0, " MiB"),
        default=256.0,
        metavar="MIB",
        help="size bound of the ledger: oldest records go first (default: 256; 1 to 1048576)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="report capture start, drops and decode errors on stderr",
    )
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return parser


def _program_name(argv0: str) -> str:
    name = os.path.basename(argv0)
    return name if name in ("netop", "netoproc") else "netoproc"


def _say(stream: TextIO, text: str) -> None:
    try:
        stream.write(text + "\n")
        stream.flush()
    except (BrokenPipeError, ValueError):
        pass


def _debug() -> bool:
    return any(
        os.environ.get(var, "").lower() in ("debug", "trace") for var in ("NETOP_LOG", "RUST_LOG")
    )


def main(argv: Sequence[str] | None = None) -> int:
    prog = _program_name(sys.argv[0])
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if _debug() else logging.WARNING,
        format=f"{prog}: %(message)s",
    )
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments[:1] == ["report"]:  # a subcommand, recognised only as the first argument
            return _report(prog, arguments[1:])
        return _run(prog, build_parser(prog).parse_args(arguments))
    except UsageError as exc:
        _say(sys.stderr, f"error: {exc}\nTry '{prog} --help' for more information.")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _debug():
            raise
        _say(sys.stderr, f"error: unexpected {type(exc).__name__}: {exc}")
        return EXIT_FATAL


def _report(prog: str, argv: list[str]) -> int:
    """`netoproc report ...`: reads the ledger; no root, no capture, no TUI."""
    from netoproc.clock import SystemClock
    from netoproc.ledger.report import ReportUsage, run
    from netoproc.ledger.store import LedgerError

    try:
        run(prog, argv, SystemClock().now(), sys.stdout)
        sys.stdout.flush()
    except ReportUsage as exc:
        _say(sys.stderr, f"error: {exc}\nTry '{prog} report --help' for more information.")
        return EXIT_USAGE
    except LedgerError as exc:
        _say(sys.stderr, f"error: {exc}")
        return EXIT_UNAVAILABLE
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def _ledger_minute() -> float:
    """Seconds in a ledger minute: 60. NETOP_LEDGER_MINUTE changes it for tests only."""
    text = os.environ.get("NETOP_LEDGER_MINUTE", "")
    try:
        value = float(text) if text else 60.0
    except ValueError:
        return 60.0
    return value if 0.5 <= value <= 3600 else 60.0


def _open_recorder(prog: str, args: argparse.Namespace, later: list[str] | None) -> Recorder | None:
    """The ledger's recorder, if --ledger; its problems go to stderr (or, in the
    monitor, to `later`, printed when the terminal is back)."""
    if args.ledger is None:
        return None
    from netoproc.ledger.recorder import Recorder
    from netoproc.ledger.store import Limits

    def say(line: str) -> None:
        if later is not None:
            later.append(f"{prog}: {line}")
        else:
            _say(sys.stderr, f"{prog}: {line}")

    limits = Limits(limit_bytes=int(args.ledger_limit * (1 << 20)))
    return Recorder(args.ledger, say, minute=_ledger_minute(), limits=limits)


class _SessionSource:
    """A live session on its own thread, as the monitor's snapshot source."""

    def __init__(self, session: LiveSession, recorder: Recorder | None = None) -> None:
        self.session = session
        self.recorder = recorder
        self._thread: threading.Thread | None = None

    def start(self, deliver: Callable[[Snapshot], None], fail: Callable[[str], None]) -> None:
        recorder = self.recorder

        def tick(snapshot: Snapshot) -> None:
            if recorder is not None:
                recorder.offer(snapshot)
            deliver(snapshot)

        def run() -> None:
            try:
                self.session.run(None, on_tick=tick)
            except Exception as exc:  # the monitor exits and says why
                fail(f"capture stopped: {type(exc).__name__}: {exc}")

        self._thread = threading.Thread(target=run, name="netoproc-session", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.session.stop()
        if self._thread is not None:
            self._thread.join(timeout=SESSION_STOP_SECONDS)
        self.session.close()


def _monitor(prog: str, args: argparse.Namespace, settings: Settings) -> int:
    """The full-screen monitor on the live network, or on a replayed file (`--read`)."""
    from netoproc.capture import CaptureUnavailable
    from netoproc.capture.pcapfile import CaptureFileError
    from netoproc.clock import SystemClock
    from netoproc.session import LiveSession, replay

    # imported only here: Textual costs a quarter of a second that snapshot mode never pays
    from netoproc.tui.app import MonitorOptions, run_monitor
    from netoproc.tui.source import SnapshotSource, StaticSource

    options = MonitorOptions(
        sort=args.sort,
        filter=args.filter,
        no_color=args.no_color or "NO_COLOR" in os.environ,
        interval=args.interval,
        interface=args.interface,
        debug=_debug(),
    )
    source: SnapshotSource
    recorder = None
    later: list[str] = []  # the ledger's lines, printed once the terminal is back
    if args.read is None:
        recorder = _open_recorder(prog, args, later)
        if recorder is not None:
            options = dataclasses.replace(options, notice=recorder.notice)
    if args.read is not None:
        try:
            snapshot, problem = replay(args.read, duration=None, settings=settings)
        except CaptureFileError as exc:
            _say(sys.stderr, f"error: {exc}")
            return EXIT_UNAVAILABLE
        if problem:
            _say(sys.stderr, f"warning: {args.read}: {problem}; showing what came before")
        source = StaticSource(snapshot)
    else:
        try:
            source = _SessionSource(LiveSession(settings, SystemClock()), recorder)
        except CaptureUnavailable as exc:
            if recorder is not None:
                recorder.close()
            _say(sys.stderr, f"error: {exc}")
            return EXIT_UNAVAILABLE
        try:
            return run_monitor(source, options)
        finally:
            if recorder is not None:
                recorder.close()
            for line in later:  # the terminal is back: what the ledger had to say
                _say(sys.stderr, line)
    return run_monitor(source, options)


def _run(prog: str, args: argparse.Namespace) -> int:
    # imported here so `--help` and argument errors stay instant
    from netoproc.capture import CaptureUnavailable
    from netoproc.capture.pcapfile import CaptureFileError
    from netoproc.clock import SystemClock
    from netoproc.output.formats import FORMATS
    from netoproc.session import LiveSession, Settings, replay

    if args.monitor and args.duration is not None:
        raise UsageError("--monitor and --duration exclude each other")
    if args.ledger_only and args.ledger is None:
        raise UsageError("--ledger-only needs --ledger FILE")
    if args.ledger_only and args.monitor:
        raise UsageError("--ledger-only and --monitor exclude each other")
    if args.ledger is not None and args.read is not None:
        raise UsageError("--ledger records the live network, not --read")
    settings = Settings(
        interface=args.interface,
        buffer_bytes=args.bpf_buffer,
        dns=not args.no_dns,
        interval=args.interval,
        kernel_owners=os.environ.get("NETOP_EBPF", "").lower() not in ("off", "0", "no"),
    )
    monitor = args.monitor or (args.duration is None and args.read is None and not args.ledger_only)

    if args.read is None and os.geteuid() != 0:
        _say(sys.stderr, f"error: {prog} requires root privileges. Run with: sudo {prog}")
        return EXIT_NOT_ROOT
    if monitor:
        return _monitor(prog, args, settings)

    write = FORMATS[args.format]
    if args.read is not None:
        try:
            snapshot, problem = replay(args.read, duration=args.duration, settings=settings)
        except CaptureFileError as exc:
            _say(sys.stderr, f"error: {exc}")
            return EXIT_UNAVAILABLE
        if problem:
            _say(sys.stderr, f"warning: {args.read}: {problem}; showing what came before")
    else:
        recorder = _open_recorder(prog, args, None)
        try:
            session = LiveSession(settings, SystemClock())
        except CaptureUnavailable as exc:
            if recorder is not None:
                recorder.close()
            _say(sys.stderr, f"error: {exc}")
            return EXIT_UNAVAILABLE

        def stop(_signum: int, _frame: object) -> None:
            session.stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

        def ready() -> None:
            if args.verbose:
                where = args.interface or "all interfaces"
                until = "until stopped" if args.duration is None else f"for {args.duration:g} s"
                _say(sys.stderr, f"{prog}: capturing on {where} {until}")
                if args.ledger is not None:
                    _say(sys.stderr, f"{prog}: recording the ledger in {args.ledger}")
                if session.platform is not None:
                    from netoproc.snapshot import owner_source_text

                    source, why, _ = session.platform.owner_source()
                    _say(sys.stderr, f"{prog}: {owner_source_text(source, why)}")

        try:
            snapshot = session.run(
                args.duration,
                on_ready=ready,
                on_tick=recorder.offer if recorder is not None else None,
            )
            if recorder is not None:
                recorder.offer(snapshot)  # the last tick, after the capture drained
        finally:
            session.close()
            if recorder is not None:
                recorder.close()
    if args.verbose:
        h = snapshot.health
        _say(
            sys.stderr,
            f"{prog}: {h.packets} packets, {h.bytes} bytes; kernel drops {h.kernel_drops}, "
            f"queue drops {h.queue_drops}; malformed {h.malformed}, not IP {h.not_ip}, "
            f"without ports {h.portless}; unattributed {h.unattributed_bytes} bytes; "
            f"failed OS queries {h.platform_errors}"
            + (f"; owner events lost {h.owner_events_lost}" if h.owners == "eBPF" else ""),
        )
    if args.ledger_only:
        return EXIT_OK
    try:
        write(snapshot.filtered(args.filter), sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`| head`): nothing more to say, and no traceback at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK
