"""`--listen`: serve the metrics (output/metrics.py) over HTTP for Prometheus.

The only place netoproc opens a listening socket. A small threaded HTTP
server answers `GET /metrics` (Prometheus text format, or OpenMetrics when
the scraper asks for it) and 404 for every other path; each request reads
the metrics under a lock held only while the families are copied, so scrapes
never wait for a tick and a tick never waits for a slow scraper.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from netoproc.output.metrics import Metrics

log = logging.getLogger("netoproc")
REQUEST_TIMEOUT = 10.0  # a client that sends nothing is dropped after this long


class ListenError(Exception):
    """The address cannot be bound; the message names it and why."""


def listen_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Exporter:
    """Serves `metrics` on host:port from a thread of its own, until `close()`."""

    def __init__(self, host: str, port: int, metrics: Metrics) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(metrics)
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT
            server_version = "netoproc"
            sys_version = ""

            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                encode, content_type = choose_encoder(self.headers.get("Accept", ""))
                data = encode(registry)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("scrape from %s: " + format, self.client_address[0], *args)

        where = listen_text(host, port)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise ListenError(f"cannot listen on {where}: {exc}") from None
        family = infos[0][0]
        server_class = type("Server", (_Server,), {"address_family": family})
        try:
            self.server: ThreadingHTTPServer = server_class((host, port), Handler)
        except OSError as exc:
            raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        self.address = where
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="netoproc-exporter", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5.0)
        self.server.server_close()
