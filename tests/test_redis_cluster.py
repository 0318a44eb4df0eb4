"""The generated suite on a Redis Cluster: three masters, no replicas, started on loopback ports
by the test, with TEST_REDIS_URL naming one node."""

from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pytest
import redis

from tests.generated_runs import check_run, run_suite

CHAOS_TEST = "test_resuming_subscribers_see_every_offset_once_in_order_despite_disconnects"
pytestmark = pytest.mark.xdist_group("generated-suite")


def stream_writes(url: str) -> int:
    """How many XADDs the server at `url` has run."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0))
    finally:
        client.close()


def test_the_generated_suite_passes_on_a_redis_cluster_and_leaves_no_node_a_key(
    bake: Callable[..., Path], redis_cluster: list[str], tmp_path: Path
):
    junit, report_path = tmp_path / "junit.xml", tmp_path / "report.json"
    result = run_suite(
        bake(),
        *("-n", "2", f"--junitxml={junit}"),
        report=report_path,
        TEST_REDIS_URL=redis_cluster[0],
    )
    report = check_run(result, report_path, redis_urls=redis_cluster)
    assert report["origin"]["redis"] == "from TEST_REDIS_URL"
    workers = report["workers"]
    assert sorted(workers) == ["gw0", "gw1"]
    assert {worker["prefix"] for worker in workers.values()} == {
        f"test:{report['run_id']}:{name}:" for name in workers
    }
    cases = {case.get("name"): list(case) for case in ElementTree.parse(junit).iter("testcase")}
    # No child element: neither skipped nor failed.
    assert cases[CHAOS_TEST] == [], "the chaos delivery test must run, and pass, on the cluster"
    # The streams' partitions spread over the masters: each one carried some of the fan-out.
    assert all(stream_writes(url) > 0 for url in redis_cluster)
