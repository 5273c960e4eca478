"""The exporter's HTTP side: /metrics only, both exposition formats, scrapes in parallel."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netoproc.exporter import Exporter, ListenError
from netoproc.output.metrics import Metrics
from netoproc.snapshot import Traffic
from tests.fixtures import monitor_snapshot


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    metrics = Metrics()
    metrics.update(monitor_snapshot())
    served = Exporter("127.0.0.1", 0, metrics)
    served.start()
    try:
        yield served
    finally:
        served.close()


def get(port: int, path: str, method: str = "GET", accept: str = "") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Accept": accept} if accept else {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def test_metrics_in_the_prometheus_text_format(exporter: Exporter) -> None:
    status, kind, body = get(exporter.port, "/metrics")
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    families = {f.name for f in text_string_to_metric_families(body)}
    assert {"netoproc_process_bytes", "netoproc_dns_latency_seconds"} <= families
    assert get(exporter.port, "/metrics?name[]=x")[0] == 200


def test_openmetrics_when_asked(exporter: Exporter) -> None:
    status, kind, body = get(exporter.port, "/metrics", accept="application/openmetrics-text")
    assert status == 200 and kind.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


@pytest.mark.parametrize("path", ["/", "/metric", "/metrics/", "/metrics/x", "/favicon.ico"])
def test_any_other_path_is_404(exporter: Exporter, path: str) -> None:
    status, _, body = get(exporter.port, path)
    assert status == 404 and "netoproc_" not in body


def test_head_answers_without_a_body(exporter: Exporter) -> None:
    status, _, body = get(exporter.port, "/metrics", method="HEAD")
    assert (status, body) == (200, "")


def test_twenty_concurrent_scrapes_while_ticks_go_on(exporter: Exporter) -> None:
    metrics = Metrics()
    served = Exporter("127.0.0.1", 0, metrics)
    served.start()
    stop = threading.Event()
    base = monitor_snapshot()

    def ticks() -> None:
        t = 0
        while not stop.is_set() and t < 10_000:
            t += 1
            grown = tuple(replace(p, total=p.total + Traffic(t, t, t, t)) for p in base.processes)
            metrics.update(replace(base, time=base.time + t, processes=grown))

    results: list[tuple[int, float]] = []
    backwards: list[tuple[float, float]] = []

    def scrape() -> None:
        last = 0.0
        for _ in range(5):
            status, _, body = get(served.port, "/metrics")
            total = sum(
                s.value
                for f in text_string_to_metric_families(body)
                if f.name == "netoproc_process_bytes"
                for s in f.samples
            )
            results.append((status, total))
            if total < last:
                backwards.append((last, total))
            last = total

    ticker = threading.Thread(target=ticks)
    ticker.start()
    scrapers = [threading.Thread(target=scrape) for _ in range(20)]
    try:
        for thread in scrapers:
            thread.start()
        for thread in scrapers:
            thread.join(timeout=60)
    finally:
        stop.set()
        ticker.join(timeout=60)
        served.close()
    assert len(results) == 100 and {status for status, _ in results} == {200}
    assert metrics.ticks > 1 and backwards == []


def test_a_silent_client_does_not_block_scrapes(exporter: Exporter) -> None:
    with socket.create_connection(("127.0.0.1", exporter.port)):
        assert get(exporter.port, "/metrics")[0] == 200


def test_an_address_in_use_is_named() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}: .*in use"):
            Exporter("127.0.0.1", port, Metrics())


def test_ipv6_loopback() -> None:
    served = Exporter("::1", 0, Metrics())
    served.start()
    try:
        conn = http.client.HTTPConnection("::1", served.port, timeout=10)
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 200
        conn.close()
        assert served.address.startswith("[::1]:")
    finally:
        served.close()
