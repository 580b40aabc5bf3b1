"""The Grafana dashboard queries only metrics the daemon exports, and filters by its variables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from streamd.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "configs" / "grafana" / "streamd.json"
PROMETHEUS_YML = ROOT / "configs" / "prometheus.yml"

# Grafana's built-in interval variables are not PromQL; give the parser a duration instead.
_GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def _panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))
    return out


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            match = _LABEL_VALUES.match(var["definition"])
            assert match, f"variable {var['name']}: expected label_values(selector, label), got {var['definition']}"
            found.append((f"variable {var['name']!r}", match["selector"]))
    return found


def _parse(expr: str):
    return promql_parser.parse(_GRAFANA_DURATIONS.sub("5m", expr))


def _selectors(expr: str) -> list:
    selectors = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)

    promql_parser.walk(_parse(expr), visit)
    return selectors


def _selector_name(selector) -> str:
    if selector.name:
        return selector.name
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__":
            return matcher.value
    raise AssertionError(f"selector {selector} names no metric")


def _exported() -> tuple[set[str], dict[str, tuple[str, ...]]]:
    """Every series name a ``Metrics(process=True)`` registry can expose, and each family's labels."""
    metrics = Metrics(process=True)
    names: set[str] = set()
    labels: dict[str, tuple[str, ...]] = {}
    for family in metrics.registry.collect():  # process_* families (they have samples already)
        names.update(sample.name for sample in family.samples)
    for metric in vars(metrics).values():
        if isinstance(metric, Counter):
            base = metric._name
            series = [f"{base}_total", f"{base}_created"]
        elif isinstance(metric, Histogram):
            base = metric._name
            series = [f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"]
        elif isinstance(metric, Gauge):
            series = [metric._name]
        else:
            continue
        names.update(series)
        for name in series:
            labels[name] = tuple(metric._labelnames)
    return names, labels


def test_dashboard_is_valid_json_with_datasource_and_camera_variables():
    # given
    dashboard = _dashboard()

    # when
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}

    # then
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["camera"]["type"] == "query"
    assert "camera" in variables["camera"]["definition"]
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", f"panel {panel['title']!r} hard-codes its datasource"
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"


def test_every_query_parses_as_promql():
    # given
    exprs = _exprs(_dashboard())

    # when
    failures = []
    for where, expr in exprs:
        try:
            _parse(expr)
        except Exception as exc:  # the parser raises ValueError with the position
            failures.append(f"{where}: {exc}")

    # then
    assert len(exprs) > 30
    assert failures == []


def test_every_metric_in_the_dashboard_is_exported_by_the_daemon():
    # given
    exported, _ = _exported()

    # when
    unknown = sorted(
        f"{where}: {_selector_name(sel)}"
        for where, expr in _exprs(_dashboard())
        for sel in _selectors(expr)
        if _selector_name(sel) not in exported
    )

    # then
    assert unknown == []


def test_queries_of_per_camera_metrics_filter_by_the_camera_variable():
    # given
    _, labels = _exported()

    # when
    unfiltered = []
    for where, expr in _exprs(_dashboard()):
        if where.startswith("variable"):
            continue
        for sel in _selectors(expr):
            name = _selector_name(sel)
            matchers = {(m.name, m.value) for m in sel.matchers.matchers}
            if "camera" in labels.get(name, ()) and ("camera", "$camera") not in matchers:
                unfiltered.append(f"{where}: {name}")

    # then
    assert unfiltered == []


@pytest.mark.parametrize(
    "metric",
    [
        "streamd_stream_up",
        "streamd_frames_decoded_total",
        "streamd_frames_sampled_total",
        "streamd_frames_dropped_total",
        "streamd_stage_duration_seconds_bucket",
        "streamd_frame_to_decision_seconds_bucket",
        "streamd_decisions_total",
        "streamd_mqtt_connected",
        "streamd_spool_events",
        "streamd_index_vectors",
        "streamd_index_generation",
        "streamd_index_reloads_total",
        "streamd_track_splits_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ],
)
def test_dashboard_shows_what_operators_watch(metric):
    # given
    used = {_selector_name(sel) for _, expr in _exprs(_dashboard()) for sel in _selectors(expr)}

    # then
    assert metric in used


def test_latency_panels_use_p95_of_histograms():
    # given
    exprs = [expr for _, expr in _exprs(_dashboard())]

    # then
    for histogram in ("streamd_stage_duration_seconds_bucket", "streamd_frame_to_decision_seconds_bucket"):
        assert any(f"histogram_quantile(0.95" in e and histogram in e and "by (le" in e for e in exprs), histogram


def test_prometheus_example_scrapes_the_default_metrics_endpoint():
    # given
    from streamd.server.config import HttpSettings

    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))

    # when
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "streamd")

    # then
    defaults = HttpSettings()
    assert job["metrics_path"] == "/metrics"
    assert f"{defaults.host}:{defaults.port}" in job["static_configs"][0]["targets"]
