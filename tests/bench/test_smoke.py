"""Smoke runs of every benchmark scenario: tiny sizes, well-formed results, no thresholds."""

from __future__ import annotations

import argparse

import orjson
import pytest

from bridge.bench import runner

pytest.importorskip("socketio")


def bench(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    argv = (*argv, "--smoke", "--runs", "1", "--workers", "1")
    return runner.run(parser.parse_args(argv), ["bench", *argv])


def check_shape(data: dict, scenario: str, targets: list[str]) -> None:
    assert data["scenario"] == scenario
    assert data["command"].startswith(f"callbridge bench {scenario}")
    assert data["machine"]["cpus"] >= 1 and data["machine"]["python"]
    assert sorted(data["targets"]) == sorted(targets)
    for t in data["targets"].values():
        assert len(t["runs"]) == 1
        assert set(data["headline"]) <= set(t["median"])
    orjson.loads(orjson.dumps(data))  # JSON-ready


def test_firehose_measures_all_three_targets():
    data = bench("firehose", "--clients", "5", "--events", "10", "--server-workers", "1")
    check_shape(data, "firehose", ["callbridge", "ceiling", "peer"])
    for name, t in data["targets"].items():
        run = t["runs"][0]
        assert run["clients"] == 5, (name, run["errors"])
        assert run["delivered"] > 0 and run["delivered_per_s"] > 0, name
        assert run["latency_max_ms"] > 0, name  # the injection time came through
        assert run["clients_cpu_s"] >= 0, name  # the client workers' CPU (0 below a tick)
        # CPU per frame is the server's CPU over the frames delivered (0 when the run was
        # too short for the kernel's CPU clock to tick).
        assert run["server_cpu_us_per_frame"] == pytest.approx(
            run["server_cpu_s"] * 1e6 / run["delivered"])
    assert {"callbridge_over_ceiling", "callbridge_over_peer"} <= set(data["ratios"])


def test_a_profile_belongs_to_its_scenario():
    with pytest.raises(SystemExit, match="callcenter"):
        bench("firehose", "--profile", "large")
    with pytest.raises(SystemExit, match="large"):
        bench("callcenter", "--profile", "long")


def test_callcenter_delivers_to_softphones_and_supervisors():
    data = bench("callcenter", "--clients", "4", "--rate", "20", "--duration", "0.5")
    check_shape(data, "callcenter", ["callbridge"])
    run = data["targets"]["callbridge"]["runs"][0]
    assert run["clients"] == 4 + 2, run["errors"]
    assert run["expected"] == run["injected"] * 3
    assert run["delivered"] > 0 and run["latency_p99_ms"] > 0


def test_the_large_callcenter_runs_end_to_end_at_smoke_size():
    data = bench("callcenter", "--profile", "large", "--clients", "30", "--duration", "0.5")
    check_shape(data, "callcenter", ["callbridge"])
    assert data["params"]["profile"] == "large"
    run = data["targets"]["callbridge"]["runs"][0]
    assert run["clients"] == 30 + 2, run["errors"]
    assert run["expected"] == run["injected"] * 3 and run["delivered"] > 0
    # Memory per connection is read before any traffic, from the server's own RSS.
    assert run["rss_after"] > run["rss_before"] > 0
    assert run["bytes_per_conn"] == (run["rss_after"] - run["rss_before"]) / 32
    assert run["server_cpu_us_per_frame"] >= 0 and run["clients_cpu_s"] >= 0


def test_idle_reports_memory_and_cpu():
    data = bench("idle", "--clients", "10", "--duration", "0.3", "--targets", "callbridge,ceiling")
    check_shape(data, "idle", ["callbridge", "ceiling"])
    for t in data["targets"].values():
        run = t["runs"][0]
        assert run["clients"] == 10 and run["rss_after"] > 0
        assert run["cpu_at_rest_pct"] >= 0


def test_upstream_counts_token_refreshes():
    data = bench("upstream", "--streams", "2", "--token-lifetime", "3", "--duration", "3",
                 "--apps", "1")
    check_shape(data, "upstream", ["callbridge"])
    assert data["params"]["apps"] == 1
    run = data["targets"]["callbridge"]["runs"][0]
    assert run["streams"] == 2
    assert run["refreshes"] > 0 and run["refresh_peak_per_s"] > 0
    assert run["failed_resubscribes"] >= 0


def test_state_measures_snapshots_and_publishing_with_and_without_state():
    data = bench("state", "--calls", "20", "--events", "1000")
    check_shape(data, "state", ["callbridge"])
    run = data["targets"]["callbridge"]["runs"][0]
    assert run["active_calls"] == 20 and run["extensions"] == 40
    assert run["publish_on_per_s"] > 0 and run["publish_off_per_s"] > 0
    assert run["snapshot_p99_ms"] >= run["snapshot_p50_ms"] > 0
    assert run["ws_state_p99_ms"] >= run["ws_state_p50_ms"] > 0
    assert run["state_bytes"] > 20 * 100  # every call is in the message


def test_consumers_measures_one_consumer_and_a_worker_pool():
    data = bench("consumers", "--events", "200", "--pool", "2")
    check_shape(data, "consumers", ["callbridge"])
    run = data["targets"]["callbridge"]["runs"][0]
    assert run["events"] == 200 and run["pool_workers"] == 2
    assert run["one_consumer_per_s"] > 0 and run["pool_per_s"] > 0
