"""deploy/grafana/callbridge.json and docs/metrics.md against what /metrics really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import httpx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from tests.http.scrape import Scrape, scrape
from tests.scenarios.conftest import ACCOUNT, bridge_config, eventually, wait_ready

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "callbridge.json"
DOCS = ROOT / "docs" / "metrics.md"

#: Metric names in PromQL: ours and the standard collectors' (nothing else is scraped).
METRIC = re.compile(r"\b(?:callbridge|process|python)_[a-z0-9_]+\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
#: Labels Prometheus adds at scrape time or a histogram carries by construction.
IMPLICIT_LABELS = {"instance", "job", "le"}


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(where, expr, legend)`` for every query of the dashboard, variables included."""
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            yield f"variable {variable['name']}", query["query"], ""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"], target.get("legendFormat", "")


async def scrape_with_traffic(  # type: ignore[no-untyped-def]
        start_simulator, start_bridge) -> Scrape:
    """A bridge with one stream that has seen one event, so labelled metrics have samples."""
    simulator, sim = await start_simulator()
    service, bridge = await start_bridge(bridge_config(sim, dialect="kazoo-json"))
    await wait_ready(bridge)
    simulator.emit(ACCOUNT, "CHANNEL_CREATE", {
        "Call-ID": "dash-1", "Msg-ID": "1", "Event-Name": "CHANNEL_CREATE",
        "Call-Direction": "inbound", "Presence-ID": "1001@sim.callbridge.local"})
    await eventually(lambda: service.pipeline.counts["published"] == 1, 10, "the event published")
    return await scrape(bridge.url)


async def test_dashboard_names_only_exposed_metrics_and_their_labels(
        start_simulator, start_bridge) -> None:
    exposed = await scrape_with_traffic(start_simulator, start_bridge)
    names = exposed.exposable()
    labels: dict[str, set[str]] = {}
    for (sample, items) in exposed.samples:
        labels.setdefault(sample, set()).update(k for k, _ in items)

    dashboard = json.loads(DASHBOARD.read_text())
    assert any(v["type"] == "datasource" and v["query"] == "prometheus"
               for v in dashboard["templating"]["list"]), "no Prometheus datasource variable"
    seen: set[str] = set()
    for where, expr, legend in queries(dashboard):
        used = set(METRIC.findall(expr))
        assert used, f"{where}: {expr!r} names no metric"
        unknown = used - names
        assert not unknown, f"{where}: {sorted(unknown)} are not exposed by /metrics"
        seen |= used
        # Labels grouped by or shown in the legend exist on a metric of the query (checked
        # where the scrape had samples of it).
        wanted = {label.strip() for group in GROUPING.findall(expr)
                  for label in group.split(",") if label.strip()}
        wanted |= set(LEGEND.findall(legend))
        known = [labels[m] for m in used if m in labels]
        if known:
            missing = wanted - IMPLICIT_LABELS - set().union(*known)
            assert not missing, f"{where}: labels {sorted(missing)} not on {sorted(used)}"
    # What the issue asks the dashboard to show.
    for required in ("callbridge_upstream_stream_up", "callbridge_upstream_token_refreshes_total",
                     "callbridge_upstream_token_failures_total",
                     "callbridge_events_received_total", "callbridge_events_published_total",
                     "callbridge_publish_latency_seconds_bucket", "callbridge_clients",
                     "callbridge_subscriptions", "callbridge_slow_client_closes_total",
                     "callbridge_resumes_total", "callbridge_broker_errors_total",
                     "callbridge_broker_buffered_events"):
        assert required in seen, f"the dashboard does not show {required}"


async def test_every_exposed_metric_is_documented(start_simulator, start_bridge) -> None:
    exposed = await scrape_with_traffic(start_simulator, start_bridge)
    text = DOCS.read_text()
    ours = {name for name in exposed.types if name.startswith("callbridge_")}
    assert len(ours) > 20
    for family, kind in exposed.types.items():
        if not family.startswith("callbridge_"):
            continue
        shown = family + "_total" if kind == "counter" else family
        assert f"| `{shown}` |" in text, f"{shown} is not documented in docs/metrics.md"
    documented = set(re.findall(r"^\| `(callbridge_[a-z0-9_]+)` \|", text, re.MULTILINE))
    stale = {d for d in documented
             if d not in exposed.types and d.removesuffix("_total") not in exposed.types}
    assert not stale, f"documented but not exposed: {sorted(stale)}"


async def test_openmetrics_is_served_when_asked_for_and_parses(
        start_simulator, start_bridge) -> None:
    """Prometheus asks for OpenMetrics first; no two families may clash in it."""
    plain = await scrape_with_traffic(start_simulator, start_bridge)
    base = plain.base_url
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        response = await http.get(f"{base}/metrics", headers={
            "accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f.type for f in openmetrics_families(response.text)}
    assert families["callbridge_events_received"] == "counter"
    assert families["callbridge_publish_latency_seconds"] == "histogram"
    assert families["callbridge_broker_buffered_events"] == "gauge"
