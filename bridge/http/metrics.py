"""``GET /metrics``: Prometheus metrics, read from the running service when scraped.

Events reach clients at tens of thousands of frames a second, so nothing on that path touches a
metrics library: the hub, the pipeline, the brokers, the streams and the token managers keep
plain numbers, and :class:`ServiceCollector` turns them into metric families only when
Prometheus asks. Each app has its own :class:`~prometheus_client.CollectorRegistry` (several
apps may live in one process, as in the tests), holding this collector and the standard
process, platform and garbage-collector collectors.

Labels hold only bounded, configured values (stream, app and provider names, event types,
states, outcomes), never a secret, a call id, a channel or a client. Every metric is documented
in docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from bridge import __version__
from bridge.common.redact import redact
from bridge.core.service import Service
from bridge.downstream.resume import OUTCOMES as RESUME_OUTCOMES
from bridge.upstream.stream import State

PREFIX = "callbridge_"
#: Every state a stream can be counted in: the stream's own, or ``standby`` (lease not held).
STREAM_STATES = (*(s.value for s in State), "standby")
#: Every state of a token manager (:class:`bridge.upstream.tokens.TokenManager`).
TOKEN_STATES = ("idle", "ok", "refreshing", "auth_failed", "unavailable")
#: Broker states in which events are published and this instance's subscription is live.
_BROKER_UP = ("ok", "connected")


def _label(value: str) -> str:
    """A configured name as a label value; masked should it ever contain a secret."""
    return redact(value)


class ServiceCollector(Collector):
    """Reads a :class:`~bridge.core.service.Service` at scrape time. See the module docstring."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterable[Metric]:
        svc = self.service
        yield from self._info()
        yield from self._streams(svc)
        yield from self._tokens(svc)
        yield from self._providers(svc)
        yield from self._events(svc)
        yield from self._broker(svc)
        yield from self._clients(svc)
        yield from self._jwks(svc)

    # -- each group ----------------------------------------------------------------------------

    def _info(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(PREFIX + "build_info", "callbridge's version; always 1.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def _streams(self, svc: Service) -> Iterator[Metric]:
        streams = GaugeMetricFamily(
            PREFIX + "upstream_streams",
            "Upstream streams by provider and state (standby: another instance holds the "
            "lease, or nobody does).", labels=["provider", "state"])
        up = GaugeMetricFamily(
            PREFIX + "upstream_stream_up",
            "1 while the stream is subscribed on this instance, else 0.", labels=["stream"])
        held = GaugeMetricFamily(
            PREFIX + "upstream_lease_held",
            "1 while this instance holds the stream's lease, else 0.", labels=["stream"])
        reconnects = CounterMetricFamily(
            PREFIX + "upstream_reconnects_total",
            "Upstream connections lost and re-established.", labels=["stream"])
        rotations = CounterMetricFamily(
            PREFIX + "upstream_rotations_total",
            "Moves to a new connection with a new token before the old one expired.",
            labels=["stream"])
        counts = dict.fromkeys(STREAM_STATES, 0)
        for stream, runner in zip(list(svc.streams), list(svc.runners)):
            name = _label(stream.name)
            state = stream.status.state.value if runner.held else "standby"
            counts[state] = counts.get(state, 0) + 1
            up.add_metric([name], 1 if state == State.SUBSCRIBED.value else 0)
            held.add_metric([name], 1 if runner.held else 0)
            reconnects.add_metric([name], stream.status.reconnects)
            rotations.add_metric([name], stream.status.rotations)
        for state, n in counts.items():
            streams.add_metric(["antbuddy", state], n)
        yield from (streams, up, held, reconnects, rotations)

    def _tokens(self, svc: Service) -> Iterator[Metric]:
        refreshes = CounterMetricFamily(
            PREFIX + "upstream_token_refreshes_total",
            "Auth tokens fetched from the oapi.", labels=["app"])
        failures = CounterMetricFamily(
            PREFIX + "upstream_token_failures_total",
            "Token requests that ended without a token (refused or unavailable).",
            labels=["app"])
        states = GaugeMetricFamily(
            PREFIX + "upstream_token_state",
            "Token managers of an app in each state.", labels=["app", "state"])
        # Streams sharing credentials share one manager; managers of one app (several SIP
        # users) are added up under the app's name.
        managers = {id(s.tokens): s.tokens for s in list(svc.streams)}.values()
        apps: dict[str, dict[str, Any]] = {}
        for manager in managers:
            app = apps.setdefault(_label(manager.name), {
                "fetched": 0, "failed": 0, "states": dict.fromkeys(TOKEN_STATES, 0)})
            app["fetched"] += manager.fetched
            app["failed"] += manager.failed
            app["states"][manager.state] = app["states"].get(manager.state, 0) + 1
        for name, app in sorted(apps.items()):
            refreshes.add_metric([name], app["fetched"])
            failures.add_metric([name], app["failed"])
            for state, n in app["states"].items():
                states.add_metric([name, state], n)
        yield from (refreshes, failures, states)

    def _providers(self, svc: Service) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            PREFIX + "provider_up",
            "1 while a provider integration (webhooks, pollers) reports no error, else 0.",
            labels=["provider"])
        for provider in list(svc.providers):
            snapshot = provider.snapshot()
            up.add_metric([_label(str(snapshot.get("name") or provider.name))],
                          1 if snapshot.get("ok") else 0)
        yield up

    def _events(self, svc: Service) -> Iterator[Metric]:
        pipeline = svc.pipeline
        received = CounterMetricFamily(
            PREFIX + "events_received_total",
            "Normalized events handed to the pipeline, duplicates included.",
            labels=["provider", "type"])
        for (provider, kind), n in sorted(pipeline.received.items()):
            received.add_metric([provider, kind], n)
        published = CounterMetricFamily(
            PREFIX + "events_published_total",
            "Events the broker took (each event once: duplicates are not published).",
            labels=["provider", "type"])
        for (provider, kind), n in sorted(pipeline.published.items()):
            published.add_metric([provider, kind], n)
        counts = pipeline.counts
        duplicates = CounterMetricFamily(
            PREFIX + "events_duplicate_total",
            "Events dropped as duplicates (seen before here, or published by another "
            "instance).", value=counts["duplicates"])
        dropped = CounterMetricFamily(
            PREFIX + "events_dropped_total",
            "Events dropped because the publish queue was full.", value=counts["overflow"])
        errors = CounterMetricFamily(
            PREFIX + "publish_errors_total",
            "Publishes that failed and were retried.", value=counts["publish_errors"])
        queued = GaugeMetricFamily(
            PREFIX + "publish_queue_events", "Events waiting to be published.",
            value=pipeline.pending)
        latency = pipeline.latency
        histogram = HistogramMetricFamily(
            PREFIX + "publish_latency_seconds",
            "Seconds from an event's receipt to the broker's acknowledgement of its publish.",
            buckets=latency.cumulative(), sum_value=latency.total)
        yield from (received, published, duplicates, dropped, errors, queued, histogram)

    def _broker(self, svc: Service) -> Iterator[Metric]:
        health = svc.broker.health()
        state = str(health.get("state", "ok"))

        def counter(name: str, doc: str, key: str) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=int(health.get(key) or 0))

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        yield gauge("broker_up", "1 while the broker takes publishes and this instance's "
                    "subscription is live (not buffering), else 0.",
                    1 if state in _BROKER_UP else 0)
        yield gauge("broker_buffered_events",
                    "Events held while the broker is unreachable, not yet published.",
                    int(health.get("buffered") or 0))
        yield gauge("broker_buffer_limit_events", "The outage buffer's size "
                    "([broker] buffer_events).", int(health.get("buffer_limit") or 0))
        yield counter("broker_buffer_enqueued_events_total",
                      "Events that went into the outage buffer.", "buffered_total")
        yield counter("broker_flushed_events_total",
                      "Buffered events published once the broker answered again.", "flushed")
        yield counter("broker_overflow_events_total", "Events beyond the outage buffer: "
                      "delivered to this instance's clients only, never published.", "overflow")
        yield counter("broker_errors_total",
                      "Broker commands that failed (Redis unreachable, timeouts, errors).",
                      "errors")
        yield counter("broker_reconnects_total",
                      "Times the broker's subscription connection was re-established.",
                      "reconnects")
        yield counter("broker_probe_failures_total",
                      "Liveness probes of the subscription that did not come back in time.",
                      "probe_failures")
        yield counter("broker_catch_ups_total",
                      "Channels read from history after their subscription was lost.",
                      "catch_ups")
        yield counter("broker_caught_up_events_total",
                      "Events sent to clients from history after a lost subscription.",
                      "caught_up_events")
        yield counter("broker_gaps_total",
                      "Channels whose lost events history could not give back (clients got "
                      "a gap).", "gaps")

    def _clients(self, svc: Service) -> Iterator[Metric]:
        stats = svc.hub.stats()
        yield GaugeMetricFamily(PREFIX + "clients", "Websocket clients connected to /ws.",
                                value=stats["clients"])
        yield GaugeMetricFamily(PREFIX + "subscribed_channels",
                                "Channels at least one client of this instance subscribes.",
                                value=stats["channels"])
        yield GaugeMetricFamily(PREFIX + "subscriptions",
                                "Client-channel subscriptions (a client on 3 channels: 3).",
                                value=stats["subscriptions"])
        yield CounterMetricFamily(PREFIX + "client_frames_total",
                                  "Event frames queued to websocket clients.",
                                  value=stats["frames_out"])
        yield CounterMetricFamily(PREFIX + "slow_client_closes_total",
                                  "Clients closed with 4008 for falling behind.",
                                  value=stats["slow_consumers"])
        resumes = CounterMetricFamily(
            PREFIX + "resumes_total", "Channel resumes by outcome (ok: replayed; trimmed, "
            "epoch_changed, too_old: a gap; unavailable: the broker failed; closed: the "
            "client left).", labels=["outcome"])
        counted = svc.hub.resumes
        for outcome in (*RESUME_OUTCOMES, *sorted(set(counted) - set(RESUME_OUTCOMES))):
            resumes.add_metric([outcome], counted.get(outcome, 0))
        yield resumes


    def _jwks(self, svc: Service) -> Iterator[Metric]:
        """The identity provider's JWKS: the families without samples when there is none."""
        keys = GaugeMetricFamily(PREFIX + "jwks_keys",
                                 "Keys held from the JWKS (those of its last good fetch).")
        failures = CounterMetricFamily(PREFIX + "jwks_refresh_failures",
                                       "Fetches of the JWKS that failed (its keys were kept).")
        up = GaugeMetricFamily(PREFIX + "jwks_up",
                               "1 while the latest fetch of the JWKS succeeded, else 0.")
        age = GaugeMetricFamily(PREFIX + "jwks_last_success_age_seconds",
                                "Seconds since the last good fetch of the JWKS (no sample "
                                "before the first).")
        jwks = svc.jwks
        if jwks is not None:
            keys.add_metric([], len(jwks.keys))
            failures.add_metric([], jwks.failures)
            up.add_metric([], 0 if jwks.failing or not jwks.fetched else 1)
            if jwks.last_success is not None:
                age.add_metric([], max(0.0, time.time() - jwks.last_success))
        yield from (keys, failures, up, age)


def registry_for(service: Service) -> CollectorRegistry:
    """A registry of its own for one app: the service's metrics and the process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_endpoint(registry: CollectorRegistry) -> Any:
    """The Starlette endpoint serving ``registry`` in the format the scraper asks for
    (Prometheus text, or OpenMetrics when its ``Accept`` prefers that)."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=None,
                        headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    return metrics
