"""The files in ops/ query only metrics the service exports, and chart every one of its own."""

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.metrics import Metrics

OPS = Path(__file__).resolve().parent.parent / "ops"
METRIC_NAME = re.compile(r"\b(?:ws|process|python)_[a-z_]+\b")
# The names of a family's samples, by the family's type.
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


def exported() -> dict[str, set[str]]:
    """Each metric family the service exports, with the sample names queries can use."""
    metrics = Metrics(lambda: 0, lambda: 0)
    return {
        family.name: {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
        for family in metrics.registry.collect()
    }


def dashboard_queries() -> list[str]:
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text("utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_queries() -> list[str]:
    rules = (OPS / "prometheus-alerts.yml").read_text("utf-8")
    return re.findall(r"^\s+expr: (.+)$", rules, re.MULTILINE)


@pytest.mark.parametrize("queries", [dashboard_queries, alert_queries])
def test_every_metric_queried_is_exported(queries: Callable[[], list[str]]) -> None:
    known = set[str]().union(*exported().values())
    named = {name for query in queries() for name in METRIC_NAME.findall(query)}
    assert named, "no metric found in the queries"
    assert named <= known, f"not exported: {sorted(named - known)}"


def test_the_dashboard_charts_every_metric_of_the_service() -> None:
    charted = " ".join(dashboard_queries())
    own = {family: names for family, names in exported().items() if family.startswith("ws_")}
    missing = [family for family, names in own.items() if not any(n in charted for n in names)]
    assert not missing


def test_every_alert_has_a_query_a_severity_and_a_summary() -> None:
    rules = (OPS / "prometheus-alerts.yml").read_text("utf-8")
    alerts = re.findall(r"^\s+- alert: (\w+)$", rules, re.MULTILINE)
    assert len(alerts) == len(alert_queries()) == rules.count("severity:")
    assert len(alerts) == rules.count("summary:") == len(set(alerts))
