"""Time-based monitoring: a metric after a landing; breaches, inconclusive samples, blindness."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from conftest import Project, ProjectFactory
from patchgate import config, monitor, provenance, watch
from test_watch import land

# --- reading a value -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value", "why"),
    [
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, None, "no data"),
        (
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]},
            },
            None,
            "NaN",
        ),
        (
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {"i": "a"}, "value": [1, "0.9"]},
                        {"metric": {"i": "b"}, "value": [1, "0.4"]},
                    ],
                },
            },
            0.4,
            "",
        ),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}}, 2.0, ""),
        ({"status": "error", "error": "parse error"}, None, "query failed"),
    ],
)
def test_prometheus_answers(data: Any, value: float | None, why: str) -> None:
    got = monitor._prometheus_value(data)
    assert got.value == value and why in got.why


@pytest.mark.parametrize(
    ("data", "value", "why"),
    [
        ({"health": {"ratio": 0.7}}, 0.7, ""),
        ({"health": {"ratios": [0.1, 0.2]}}, None, "no health.ratio"),
        ({"health": {"ratio": "high"}}, None, "not a number"),
        ({"health": {"ratio": float("nan")}}, None, "not a number"),
        ({"health": {"ratio": True}}, None, "not a number"),
    ],
)
def test_json_answers(data: Any, value: float | None, why: str) -> None:
    got = monitor._json_value(data, "health.ratio")
    assert got.value == value and why in got.why


def test_enabled_monitoring_without_a_url_is_refused_in_one_line() -> None:
    cfg = config.Config("/x", {"monitoring": {"enabled": True, "query": "up"}})
    with pytest.raises(Exception, match=r"monitoring\.url"):
        monitor.monitor_settings(cfg)


# --- a JSON endpoint whose answers the test scripts ----------------------------------------


class Metric:
    """A JSON metrics endpoint on 127.0.0.1; ``answers`` are served in order (last repeats)."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        metric = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer = metric.answers.pop(0) if len(metric.answers) > 1 else metric.answers[0]
                if answer == "hang":
                    time.sleep(1.0)
                    answer = 1.0
                status, body = (500, b"{}") if answer == "500" else (200, b"")
                if not body:
                    body = json.dumps({"health": {"ratio": answer}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def metric() -> Iterator[Metric]:
    served = Metric()
    yield served
    served.server.shutdown()


@pytest.fixture
def monitored(make_project: ProjectFactory, metric: Metric) -> Project:
    return make_project(
        monitoring={
            "enabled": True,
            "kind": "json",
            "url": metric.url,
            "key_path": "health.ratio",
            "stability_threshold": 0.5,
            "failure_limit": 3,
            "inconclusive_limit": 3,
            "interval": 0,
            "timeout": 0.3,
        }
    )


def poll(project: Project) -> dict[str, Any]:
    return watch.run(str(project.path), True, str(project.path / "w.log"))["summary"]


def events(project: Project, kind: str) -> list[dict[str, Any]]:
    return [e for e in provenance.read_events(str(project.path)) if e["event"] == kind]


def test_only_consecutive_breaches_propose_and_inconclusive_is_never_a_breach(
    monitored: Project, metric: Metric
) -> None:
    sha, _ = land(monitored)
    metric.answers = [0.4, None, "500", float("nan"), 0.9, 0.3, 0.2, 0.1]
    proposed = []
    for _ in range(8):
        proposed.append(poll(monitored)["PROPOSED"])
    # 0.4 breach; null/500/NaN inconclusive; 0.9 resets; 0.3, 0.2, 0.1: three in a row
    assert proposed == ["0"] * 7 + ["1"]
    [event] = events(monitored, "rollback_proposed")
    assert event["source"] == "metrics" and event["sha"] == sha
    assert "3 samples below 0.5 (0.3, 0.2, 0.1)" in event["failure_context"]
    # three inconclusive in a row reached inconclusive_limit: blind, once, and no breach
    assert [e["outcome"] for e in events(monitored, "monitor")] == ["blind", "breach"]


def test_too_many_inconclusive_samples_escalate_once_as_blind(
    monitored: Project, metric: Metric, capsys: pytest.CaptureFixture[str]
) -> None:
    land(monitored)
    metric.answers = ["hang"]  # every sample times out
    for _ in range(4):
        poll(monitored)
    assert [e["outcome"] for e in events(monitored, "monitor")] == ["blind"]
    assert not events(monitored, "rollback_proposed")
    out = capsys.readouterr().out
    assert "MONITORING BLIND" in out and "ReadTimeout" in out


def test_the_window_ends_with_a_pass(monitored: Project, metric: Metric) -> None:
    sha, _ = land(monitored)
    metric.answers = [0.9]
    poll(monitored)
    cfg = monitored.config()
    cfg["monitoring"]["window_hours"] = 1e-9  # over by the time of any later poll: no sleep
    monitored.configure(**cfg)
    summary = watch.run(str(monitored.path), False, str(monitored.path / "w.log"))["summary"]
    assert summary["WAITING"] == "0"
    [event] = events(monitored, "monitor")
    assert event["outcome"] == "pass" and event["sha"] == sha


# --- a real exporter, scraped by a real Prometheus ----------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (apt-get install prometheus)")
    registry = prometheus_client.CollectorRegistry()
    gauge = prometheus_client.Gauge(
        "calc_success_ratio", "share of good requests", registry=registry
    )
    gauge.set(0.2)
    exporter, _ = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: calc\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter.server_port}']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                got = httpx.get(f"{url}/api/v1/query", params={"query": "calc_success_ratio"})
                if got.status_code == 200 and got.json()["data"]["result"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("prometheus did not scrape the exporter within 30 s")
        yield url, gauge
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        exporter.shutdown()


def test_a_real_prometheus_query_reads_the_exporter(prometheus: tuple[str, Any]) -> None:
    url, _ = prometheus
    cfg = config.Config(
        "/x",
        {
            "monitoring": {
                "enabled": True,
                "url": url,
                "query": "calc_success_ratio",
                "stability_threshold": 0.5,
            }
        },
    )
    settings = monitor.monitor_settings(cfg)
    assert monitor.sample(settings).value == pytest.approx(0.2)
    empty = monitor.sample(
        monitor.monitor_settings(
            config.Config("/x", {"monitoring": {**cfg["monitoring"], "query": "no_such_metric"}})
        )
    )
    assert empty.value is None and empty.why == "no data"
    nan = monitor.sample(
        monitor.monitor_settings(
            config.Config("/x", {"monitoring": {**cfg["monitoring"], "query": "0/0"}})
        )
    )
    assert nan.value is None and nan.why == "NaN"


def test_prometheus_breaches_propose_through_doit_watch(
    prometheus: tuple[str, Any], make_project: ProjectFactory
) -> None:
    url, _ = prometheus
    project = make_project(
        monitoring={
            "enabled": True,
            "url": url,
            "query": "calc_success_ratio",
            "stability_threshold": 0.5,
            "failure_limit": 2,
            "interval": 0,
        }
    )
    sha, _ = land(project)
    res = project.run("watch", "once=1")
    assert res.code == 0 and res.summary["PROPOSED"] == "0", res.out
    res = project.run("watch", "once=1")
    assert res.summary["PROPOSED"] == "1", res.out
    assert "breach 2 of 2: 0.2 < 0.5" in res.out
    [event] = events(project, "rollback_proposed")
    assert event["source"] == "metrics" and event["sha"] == sha
    assert Path(project.path / "patches" / ".state" / "watch" / f"{sha}.metrics.json").exists()
