"""A real Prometheus server (Debian's ``prometheus`` package) scrapes the running HTTP server.

It uses the example scrape config (configs/prometheus.yml) pointed at the test server, checks
the scraped values, then evaluates every query of the Grafana dashboard on that Prometheus, so
the real PromQL engine accepts them. Skipped when the ``prometheus`` binary is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import PROJECT_ROOT, free_port
from streamd.metrics import Metrics
from streamd.server.app import create_app
from streamd.server.config import HttpSettings
from streamd.server.runner import HttpServer

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)")

_GRAFANA_VARIABLES = {
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
    "$camera": ".*", "$instance": ".*", "$job": ".*",
}


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    m = Metrics(process=True)
    m.frames_decoded.labels("door").inc(125)
    m.frames_sampled.labels("door").inc(25)
    m.stream_up.labels("door").set(1)
    m.decisions.labels("door", "known").inc(3)
    m.stage_seconds.labels("door", "detect").observe(0.02)
    m.index_vectors.set(42)
    return m


@pytest.fixture(scope="module")
def scraped(metrics, tmp_path_factory) -> Iterator[str]:
    """Base URL of a Prometheus that has scraped the test server at least once."""
    tmp = tmp_path_factory.mktemp("prometheus")
    with HttpServer(create_app(HttpSettings(), metrics)) as server:
        config = yaml.safe_load((PROJECT_ROOT / "configs" / "prometheus.yml").read_text())
        job = config["scrape_configs"][0]
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{server.port}"]
        job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("w"),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for_scrape(base, process, tmp / "prometheus.log")
            yield base
        finally:
            process.terminate()
            process.wait(10)


def _wait_for_scrape(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}: {log.read_text()[-1000:]}")
        try:
            result = _query(base, 'up{job="streamd"}')
            if result and result[0]["value"][1] == "1":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"prometheus did not scrape the server within 30 s: {log.read_text()[-1000:]}")


def _query(base: str, promql: str) -> list[dict]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{promql}: {body.get('error')}"
    return body["data"]["result"]


def test_prometheus_scrapes_names_and_values(scraped):
    # when
    decoded = _query(scraped, 'streamd_frames_decoded_total{job="streamd"}')
    up = _query(scraped, "streamd_stream_up")
    vectors = _query(scraped, "streamd_index_vectors")
    memory = _query(scraped, 'process_resident_memory_bytes{job="streamd"}')

    # then
    assert [(r["metric"]["camera"], r["value"][1]) for r in decoded] == [("door", "125")]
    assert [(r["metric"]["camera"], r["value"][1]) for r in up] == [("door", "1")]
    assert [r["value"][1] for r in vectors] == ["42"]
    assert float(memory[0]["value"][1]) > 0


def test_prometheus_evaluates_every_dashboard_query(scraped):
    # given
    dashboard = json.loads((PROJECT_ROOT / "configs" / "grafana" / "streamd.json").read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    pattern = re.compile("|".join(re.escape(v) for v in sorted(_GRAFANA_VARIABLES, key=len, reverse=True)))

    # when
    errors = []
    for expr in exprs:
        promql = pattern.sub(lambda m: _GRAFANA_VARIABLES[m.group(0)], expr)
        response = httpx.get(f"{scraped}/api/v1/query", params={"query": promql}, timeout=10).json()
        if response["status"] != "success":
            errors.append(f"{expr}: {response.get('error')}")

    # then
    assert len(exprs) > 30
    assert errors == []
