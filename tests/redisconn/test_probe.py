"""The liveness probe's clock, without I/O."""

from __future__ import annotations

import pytest

from bridge.redisconn.probe import Probe


def test_probe_clock_sends_waits_and_fails_without_io() -> None:
    probe = Probe(interval=5.0, timeout=2.0)
    probe.reset(100.0)
    action, payload = probe.step(100.0)
    assert action == "send"
    probe.sent(100.1)
    assert probe.step(101.0) == ("wait", pytest.approx(1.1))
    probe.received(b"not the payload")
    probe.received(payload)
    assert probe.last_ok is not None and probe.failures == 0
    assert probe.step(101.0) == ("wait", pytest.approx(4.0))  # next one 5 s after the first
    action, second = probe.step(105.0)
    assert action == "send" and second != payload
    probe.sent(105.0)
    probe.received(payload)  # a late answer to the old probe does not count
    assert probe.step(107.0) == ("fail", 0.0)
    assert probe.failures == 1
    assert Probe(interval=None, timeout=2.0).step(0.0)[0] == "wait"


def test_probe_is_patient_with_a_busy_subscription() -> None:
    probe = Probe(interval=5.0, timeout=2.0)
    probe.reset(0.0)
    action, payload = probe.step(0.0)
    assert action == "send"
    probe.sent(0.0)
    # events keep arriving while the echo is queued behind them: never a failure
    for now in (1.5, 3.0, 4.5, 6.0):
        probe.activity(now)
        assert probe.step(now + 1.0)[0] == "wait"
    # then silence: the timeout counts from the last message
    assert probe.step(8.1)[0] == "fail"
    assert probe.failures == 1
