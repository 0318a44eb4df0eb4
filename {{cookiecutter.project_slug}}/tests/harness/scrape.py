"""An app's metrics read the way Prometheus reads them, and the closes it counted."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package_name }}.metrics import CONTENT_TYPE, Metrics

from .live import LiveApp

Sample = tuple[str, frozenset[tuple[str, str]]]
"""A sample's name and labels, as a dictionary key."""


async def scrape(live: LiveApp) -> dict[Sample, float]:
    """GET /metrics and parse it with prometheus_client's own parser."""
    async with httpx.AsyncClient(base_url=live.http_url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(name: str, **labels: str) -> Sample:
    return name, frozenset(labels.items())


def closes(metrics: Metrics) -> dict[int, float]:
    """The app's closes by code, every code it counted."""
    return {
        int(sample.labels["code"]): sample.value
        for family in metrics.closes.collect()
        for sample in family.samples
        if sample.name == "ws_closes_total"
    }
