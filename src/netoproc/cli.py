"""Command line: options, validation, exit codes; builds a session and runs it.

Exit codes: 0 ok, 1 not root, 2 capture device, file or --listen address
unavailable, 3 invalid arguments, 4 unexpected error (one line; a traceback only with
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
    from netoproc.exporter import Exporter
    from netoproc.ledger.recorder import Recorder
    from netoproc.output.metrics import Metrics
    from netoproc.output.stream import StreamWriter
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
pretty) for scripts; --view picks the table (process, connection, group:
traffic per container or systemd unit, interface or dns). --format jsonl
streams one JSON object per row and interval instead, until stopped or for
--duration. --listen serves Prometheus metrics on /metrics
(the only mode that opens a listening socket). --read FILE replays a pcap or
pcapng capture instead of the live network (no root needed).

Bytes are IP-layer bytes: IP header plus payload, from the IP length fields
(TSO/GSO super-packets and jumbograms at their real length), never link-layer
headers. RX and TX are from the local process's point of view."""

EPILOG = """\
examples:
  sudo %(prog)s                                  the monitor, all interfaces
  sudo %(prog)s --duration 5 --format pretty     one table after 5 seconds
  sudo %(prog)s --duration 5 --view connection   one row per connection
  sudo %(prog)s --format jsonl --interval 2      a JSON line per row, every 2 s
  sudo %(prog)s --listen 9786                    Prometheus metrics on /metrics
  sudo %(prog)s --ledger-only --ledger /var/lib/netoproc/usage.db
  %(prog)s --read capture.pcapng --format json   replay a file (no root)
  %(prog)s report --ledger usage.db --since 7d   what the ledger recorded

exit codes: 0 ok, 1 not root, 2 capture device, file or --listen address
unavailable, 3 invalid arguments, 4 unexpected error

The manual: man netoproc. The ledger's report: %(prog)s report --help."""


class UsageError(Exception):
    """Arguments that cannot work: one line, and where help is (exit code 3)."""

    def __init__(self, message: str, command: str = "") -> None:
        super().__init__(message)
        self.command = command  # the subcommand whose --help to suggest


class Unavailable(Exception):
    """A capture device, file, address or ledger that cannot be had (exit code 2);
    the message names it and why."""


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
            raise argparse.ArgumentTypeError(
                f"{text} is out of range ({_number(low)} to {_number(high)}{unit})"
            )
        return value

    return parse


def _number(value: float) -> str:
    """1, 0.1, 16777216: as a person writes it, never in exponent form."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _ranged(
    group: argparse._ArgumentGroup,
    option: str,
    kind: Callable[[str], float],
    low: float,
    high: float,
    unit: str,
    metavar: str,
    default: float | None,
    help: str,
) -> None:
    """An option taking a number from `low` to `high`; its help says the range and default."""
    limits = f"{_number(low)} to {_number(high)}"
    if default is not None:
        limits = f"default: {_number(default)}; {limits}"
    group.add_argument(
        option, type=_in_range(kind, low, high, unit), default=default, metavar=metavar,
        help=f"{help} ({limits})",
    )  # fmt: skip


VIEWS = ("process", "connection", "group", "interface", "dns")
FORMATS = ("tsv", "json", "pretty", "jsonl")
SORTS = ("traffic", "pid", "name", "connections", "group")
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 9786


def parse_listen(text: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPV6]:PORT` -> (host, port); raises ValueError."""
    host, port_text = DEFAULT_LISTEN_HOST, text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"not [ADDRESS]:PORT: {text!r}")
        host, port_text = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port_text}")
    if not host:
        raise ValueError(f"no address before the port: {text!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"not a port (1 to 65535): {port_text!r}")
    return host, int(port_text)


def _listen_address(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    mode = parser.add_argument_group("mode (the monitor unless --duration, --read or a stream)")
    mode.add_argument("--monitor", action="store_true", help="full-screen monitor (the default)")
    _ranged(
        mode, "--duration", float, 1.0, 3600.0, " seconds", "SECONDS", None,
        "snapshot mode: collect for this long, print, exit; with --format jsonl or --listen: "
        "run this long instead of until stopped",
    )  # fmt: skip
    mode.add_argument(
        "--read",
        metavar="FILE",
        help="replay a pcap/pcapng file instead of capturing; packet times drive the clock",
    )
    output = parser.add_argument_group("what is shown, and how")
    output.add_argument(
        "--format",
        choices=FORMATS,
        default="tsv",
        help="snapshot output format (default: tsv); jsonl: a stream of one JSON object "
        "per row and interval, with the interval's deltas and the totals",
    )
    output.add_argument(
        "--view",
        choices=VIEWS,
        metavar="{" + ",".join(VIEWS) + "}",
        help="what the snapshot or stream lists (default: process)",
    )
    output.add_argument(
        "--filter",
        metavar="PATTERN",
        help="only processes (by name, container or unit), remote addresses or domains "
        "containing PATTERN (any case)",
    )
    output.add_argument(
        "--sort",
        choices=SORTS,
        default="traffic",
        help="initial sort column of the monitor (default: traffic); group: processes of "
        "one container or systemd unit together",
    )
    output.add_argument(
        "--no-color", action="store_true", help="no colours (also when NO_COLOR is set)"
    )
    output.add_argument(
        "--listen",
        nargs="?",
        const=f"{DEFAULT_LISTEN_HOST}:{DEFAULT_LISTEN_PORT}",
        type=_listen_address,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (HOST defaults to "
        f"{DEFAULT_LISTEN_HOST}; without a value {DEFAULT_LISTEN_HOST}:{DEFAULT_LISTEN_PORT}); "
        "runs until stopped or for --duration",
    )
    capture = parser.add_argument_group("capture")
    capture.add_argument(
        "--interface", metavar="IFACE", help="capture on this interface only (default: all)"
    )
    _ranged(capture, "--interval", float, 0.1, 10.0, " seconds", "SECONDS", 1.0, "refresh interval")
    capture.add_argument(
        "--no-dns", action="store_true", help="do not capture DNS payloads or show the DNS view"
    )
    _ranged(
        capture, "--bpf-buffer", int, 4096, 16777216, " bytes", "BYTES", 2097152,
        "kernel capture buffer size",
    )  # fmt: skip
    ledger = parser.add_argument_group("usage ledger (history on disk; read it with `report`)")
    ledger.add_argument(
        "--ledger",
        metavar="FILE",
        help="also record per-minute usage into this SQLite file (created 0600)",
    )
    ledger.add_argument(
        "--ledger-only",
        action="store_true",
        help="record the ledger and show nothing, until SIGTERM/Ctrl-C (or --duration)",
    )
    _ranged(
        ledger, "--ledger-limit", float, 1.0, 1048576.0, " MiB", "MIB", 256.0,
        "size bound of the ledger: oldest records go first",
    )  # fmt: skip
    general = parser.add_argument_group("general")
    general.add_argument(
        "--verbose",
        action="store_true",
        help="report capture start, drops and decode errors on stderr",
    )
    general.add_argument(
        "--version",
        action=_Version,
        help="the version, and the capture and owner backends this machine offers",
    )
    general.add_argument("-h", "--help", action="help", help="this help, and exit")
    return parser


class _Version(argparse.Action):
    """--version: probed only when asked, so other runs never pay for it."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        from netoproc.backends import version_text

        _say(sys.stdout, version_text(parser.prog, __version__, _ebpf_wanted()))
        parser.exit()


def _ebpf_wanted() -> bool:
    """NETOP_EBPF=off (or 0, no) keeps the kernel programs out: the fallback paths."""
    return os.environ.get("NETOP_EBPF", "").lower() not in ("off", "0", "no")


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
        command = f"{prog} {exc.command}".strip()
        _say(sys.stderr, f"error: {exc}\nTry '{command} --help' for more information.")
        return EXIT_USAGE
    except Unavailable as exc:
        _say(sys.stderr, f"error: {exc}")
        return EXIT_UNAVAILABLE
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
        raise UsageError(str(exc), "report") from None
    except LedgerError as exc:
        raise Unavailable(str(exc)) from None
    except BrokenPipeError:
        _quiet_stdout()
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
    from netoproc.clock import SystemClock
    from netoproc.session import LiveSession

    # imported only here: Textual costs a quarter of a second that snapshot mode never pays
    from netoproc.tui.app import MonitorOptions, run_monitor
    from netoproc.tui.source import StaticSource

    options = MonitorOptions(
        sort=args.sort,
        filter=args.filter,
        no_color=args.no_color or "NO_COLOR" in os.environ,
        interval=args.interval,
        interface=args.interface,
        debug=_debug(),
    )
    if args.read is not None:
        return run_monitor(StaticSource(_replay(args, settings)), options)
    later: list[str] = []  # the ledger's lines, printed once the terminal is back
    recorder = _open_recorder(prog, args, later)
    if recorder is not None:
        options = dataclasses.replace(options, notice=recorder.notice)
    try:
        try:
            source = _SessionSource(LiveSession(settings, SystemClock()), recorder)
        except CaptureUnavailable as exc:
            raise Unavailable(str(exc)) from None
        return run_monitor(source, options)
    finally:
        if recorder is not None:
            recorder.close()
        for line in later:  # the terminal is back: what the ledger had to say
            _say(sys.stderr, line)


def _replay(
    args: argparse.Namespace,
    settings: Settings,
    duration: float | None = None,
    on_tick: Callable[[Snapshot], None] | None = None,
) -> Snapshot:
    """The replayed file's last snapshot; a file cut short is a warning, not an error."""
    from netoproc.capture.pcapfile import CaptureFileError
    from netoproc.session import replay

    try:
        snapshot, problem = replay(args.read, duration=duration, settings=settings, on_tick=on_tick)
    except CaptureFileError as exc:
        raise Unavailable(str(exc)) from None
    if problem:
        _say(sys.stderr, f"warning: {args.read}: {problem}; showing what came before")
    return snapshot


def _check_modes(args: argparse.Namespace) -> None:
    """Options that cannot go together: a one-line error, exit code 3."""
    if args.monitor and args.duration is not None:
        raise UsageError("--monitor and --duration exclude each other")
    if args.monitor and args.format == "jsonl":
        raise UsageError("--monitor and --format jsonl exclude each other")
    if args.monitor and args.listen is not None:
        raise UsageError("--monitor and --listen exclude each other")
    if args.read is not None and args.listen is not None:
        raise UsageError("--listen serves live metrics; it cannot replay --read")
    if args.view == "dns" and args.no_dns:
        raise UsageError("--view dns needs DNS capture: drop --no-dns")
    if args.ledger_only and args.ledger is None:
        raise UsageError("--ledger-only needs --ledger FILE")
    if args.ledger_only and args.monitor:
        raise UsageError("--ledger-only and --monitor exclude each other")
    if args.ledger is not None and args.read is not None:
        raise UsageError("--ledger records the live network, not --read")


def _run(prog: str, args: argparse.Namespace) -> int:
    # imported here so `--help` and argument errors stay instant
    from netoproc.session import Settings

    _check_modes(args)
    ebpf = _ebpf_wanted()
    settings = Settings(
        interface=args.interface,
        buffer_bytes=args.bpf_buffer,
        dns=not args.no_dns,
        interval=args.interval,
        kernel_owners=ebpf,
        kernel_counts=ebpf,
    )
    headless = args.format == "jsonl" or args.listen is not None or args.ledger_only
    monitor = args.monitor or (args.duration is None and args.read is None and not headless)
    if args.view is not None and monitor:
        raise UsageError("--view chooses the snapshot's or the stream's table, not the monitor's")

    if args.read is None and os.geteuid() != 0:
        _say(sys.stderr, f"error: {prog} requires root privileges. Run with: sudo {prog}")
        return EXIT_NOT_ROOT
    if monitor:
        return _monitor(prog, args, settings)
    return _headless(prog, args, settings)


class _Outputs:
    """What each tick feeds: the JSON-lines stream, the exporter's metrics, the ledger."""

    def __init__(self, args: argparse.Namespace) -> None:
        # each imported only when used: a plain snapshot pays for neither
        self.stream: StreamWriter | None = None
        self.metrics: Metrics | None = None
        if args.format == "jsonl":
            from netoproc.output.stream import StreamWriter

            self.stream = StreamWriter(args.view or "process", sys.stdout, args.filter)
        if args.listen is not None:
            from netoproc.output.metrics import Metrics

            self.metrics = Metrics(args.filter)
        self.recorder: Recorder | None = None  # --ledger
        self.closed = False  # stdout's reader went away (`| head`)
        self.on_closed: Callable[[], None] = lambda: None

    def tick(self, snapshot: Snapshot) -> None:
        if self.recorder is not None:
            self.recorder.offer(snapshot)
        if self.metrics is not None:
            self.metrics.update(snapshot)
        if self.stream is not None and not self.closed:
            try:
                self.stream.write(snapshot)
            except BrokenPipeError:
                self.closed = True
                _quiet_stdout()
                self.on_closed()


def _quiet_stdout() -> None:
    """The reader went away (`| head`): nothing more to say, and no traceback at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _headless(prog: str, args: argparse.Namespace, settings: Settings) -> int:
    """Snapshot mode, the stream and the exporter: everything but the monitor."""
    from netoproc.capture import CaptureUnavailable
    from netoproc.clock import SystemClock
    from netoproc.output.views import writer
    from netoproc.session import LiveSession

    outputs = _Outputs(args)
    if args.read is not None:
        snapshot = _replay(args, settings, args.duration, outputs.tick)
        outputs.tick(snapshot)
    else:
        exporter = None
        if args.listen is not None:
            from netoproc.exporter import Exporter, ListenError

            assert outputs.metrics is not None
            try:
                host, port = args.listen
                exporter = Exporter(host, port, outputs.metrics)
            except ListenError as exc:
                raise Unavailable(str(exc)) from None
        outputs.recorder = _open_recorder(prog, args, None)
        try:
            try:
                session = LiveSession(settings, SystemClock())
            except CaptureUnavailable as exc:
                raise Unavailable(str(exc)) from None
            snapshot = _live(prog, args, session, outputs, exporter)
        finally:
            if exporter is not None:
                exporter.close()
            if outputs.recorder is not None:
                outputs.recorder.close()
    if args.verbose:
        h = snapshot.health
        _say(
            sys.stderr,
            f"{prog}: {h.packets} packets, {h.bytes} bytes; kernel drops {h.kernel_drops}, "
            f"queue drops {h.queue_drops}; malformed {h.malformed}, not IP {h.not_ip}, "
            f"without ports {h.portless}; unattributed {h.unattributed_bytes} bytes; "
            f"failed OS queries {h.platform_errors}"
            + (f"; owner events lost {h.owner_events_lost}" if h.owners == "eBPF" else "")
            + (f"; counter map overflow {h.counter_overflow}" if h.counting == "kernel" else ""),
        )
        from netoproc.output.text import flood_line

        for flood in h.floods:
            _say(sys.stderr, f"{prog}: {flood_line(flood)}")
        for what, times in h.limits:
            _say(sys.stderr, f"{prog}: bound reached: {what}: {times}")
    table = (
        args.format != "jsonl"
        and not args.ledger_only
        and (args.duration is not None or args.read is not None)
    )
    if table:
        try:
            writer(args.view or "process", args.format)(snapshot.filtered(args.filter), sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_stdout()
    return EXIT_OK


def _live(
    prog: str,
    args: argparse.Namespace,
    session: LiveSession,
    outputs: _Outputs,
    exporter: Exporter | None,
) -> Snapshot:
    """Capture until --duration passes or a signal; the last snapshot goes to the outputs too."""

    def stop(_signum: int, _frame: object) -> None:
        session.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    outputs.on_closed = session.stop

    def ready() -> None:
        if exporter is not None:
            exporter.start()
        if args.verbose:
            where = args.interface or "all interfaces"
            until = f"for {args.duration:g} s" if args.duration is not None else "until stopped"
            _say(sys.stderr, f"{prog}: capturing on {where} {until}")
            if args.ledger is not None:
                _say(sys.stderr, f"{prog}: recording the ledger in {args.ledger}")
            if exporter is not None:
                _say(sys.stderr, f"{prog}: serving metrics on http://{exporter.address}/metrics")
            from netoproc.snapshot import counting_text, owner_source_text

            if session.platform is not None:
                source, why, _ = session.platform.owner_source()
                _say(sys.stderr, f"{prog}: {owner_source_text(source, why)}")
            counting, why, _ = session.capture.counting()
            _say(sys.stderr, f"{prog}: {counting_text(counting, why)}")

    try:
        snapshot = session.run(args.duration, on_tick=outputs.tick, on_ready=ready)
    finally:
        session.close()
    outputs.tick(snapshot)  # the last interval: what moved since the previous tick
    return snapshot
