"""What operators install: the systemd unit and the Grafana dashboard.

The unit must pass `systemd-analyze verify` without a single complaint and
keep netoproc to the five capabilities it uses; every metric and label the
dashboard queries must be one the exporter serves. (The e2e exporter test
also has a real Prometheus parse and run every dashboard query.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netoproc.output.metrics import Metrics
from tests.fixtures import monitor_snapshot

CONTRIB = Path(__file__).parents[1] / "contrib"
UNIT = CONTRIB / "netoproc-exporter.service"
DASHBOARD = CONTRIB / "grafana-dashboard.json"
CAPABILITIES = {"CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}


def unit_keys() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, line
        assert key not in current, f"{key} twice"
        current[key] = value
    return sections


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify also checks that ExecStart's program exists: point it at this checkout's
    netoproc = shutil.which("netoproc", path=str(Path(sys.executable).parent))
    assert netoproc is not None
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/netoproc", netoproc))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_analyze_verify_would_complain_about_a_misspelt_key(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert "Unknown key" in result.stderr


def test_the_unit_keeps_netoproc_to_its_capabilities_and_hardening() -> None:
    service = unit_keys()["Service"]
    assert set(service["CapabilityBoundingSet"].split()) == CAPABILITIES
    assert set(service["AmbientCapabilities"].split()) == CAPABILITIES
    hardening = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    }  # fmt: skip
    assert {k: service.get(k) for k in hardening} == hardening
    assert "User" not in service  # netoproc checks for root; the bounding set is the limit
    assert "ProtectProc" not in service  # it must see every process
    assert service["ExecStart"].split()[1:] == ["--listen", "127.0.0.1:9786"]
    families = set(service["RestrictAddressFamilies"].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"}


def served() -> dict[str, set[str]]:
    """Every sample name the exporter serves, with its labels."""
    metrics = Metrics()
    metrics.update(monitor_snapshot())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    queries += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return queries


def test_every_metric_the_dashboard_queries_is_served() -> None:
    names = served()
    queries = dashboard_queries()
    assert len(queries) >= 10
    used = set()
    for query in queries:
        for metric in re.findall(r"\bnetoproc_[a-z_]+", query):
            assert metric in names, (metric, query)
            used.add(metric)
            # labels it groups or selects by exist on that metric (instance is Prometheus')
            for group in re.findall(r"by \(([^)]*)\)", query):
                labels = {label.strip() for label in group.split(",")}
                assert labels - {"instance", "le"} <= names[metric], (labels, query)
            for label in re.findall(r"(\w+)=~?\"", query):
                assert label in names[metric] | {"instance"}, (label, query)
    # the dashboard shows every kind of metric the exporter has
    for family in ("process_bytes", "interface_bytes", "traffic_bytes", "dns_queries",
                   "dns_latency_seconds", "tcp_rtt_seconds", "capture_drops", "unattributed",
                   "attribution_source"):  # fmt: skip
        assert any(family in metric for metric in used), family
