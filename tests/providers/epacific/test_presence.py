"""The ext_reg poller against the fake: changes of the online set become presence events."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bridge.cluster.cursors import MemoryCursors
from bridge.events.event import EventType
from bridge.providers.epacific.poller import guarded
from bridge.providers.epacific.protocol import EPacificError
from tests.providers.epacific.fixtures import Rig, memory_cursors, rig

__all__ = ["memory_cursors", "rig"]

T0 = datetime(2026, 6, 1, 3, 0, tzinfo=timezone.utc)


def changes(rig: Rig, since: int = 0) -> list[tuple[str, bool]]:
    return [(e.extension or "", e.detail["online"]) for e in rig.events[since:]
            if e.detail is not None]


async def test_first_poll_reports_online_then_only_changes(
        rig: Rig, memory_cursors: MemoryCursors) -> None:
    rig.fake.online = {"100", "101"}
    provider = rig.provider(memory_cursors, clock=lambda: T0)
    await provider.presence.poll()
    assert changes(rig) == [("100", True), ("101", True)]
    assert all(e.type == EventType.PRESENCE and e.tenant == "acme" and e.detail["initial"]
               for e in rig.events)
    await provider.presence.poll()
    assert len(rig.events) == 2  # nothing changed, nothing said
    rig.fake.online = {"101", "105"}
    provider.presence.clock = lambda: T0 + timedelta(seconds=15)
    await provider.presence.poll()
    assert changes(rig, 2) == [("105", True), ("100", False)]
    assert rig.events[-1].occurred_at == "2026-06-01T03:00:15.000Z"
    assert provider.snapshot()["presence"]["online"] == 2


async def test_restart_reports_only_what_changed_meanwhile(
        rig: Rig, memory_cursors: MemoryCursors) -> None:
    rig.fake.online = {"100", "101"}
    await rig.provider(memory_cursors, clock=lambda: T0).presence.poll()
    rig.fake.online = {"101", "102"}
    restarted = rig.provider(memory_cursors, clock=lambda: T0 + timedelta(minutes=1))
    await restarted.presence.poll()
    assert changes(rig, 2) == [("102", True), ("100", False)]
    assert not any(e.detail["initial"] for e in rig.events[2:])
    again = rig.provider(memory_cursors, clock=lambda: T0 + timedelta(minutes=2))
    await again.presence.poll()
    assert len(rig.events) == 4  # unchanged across a restart: silent


async def test_presence_ids_are_deterministic_per_change(rig: Rig) -> None:
    rig.fake.online = {"100"}
    first = rig.provider(MemoryCursors(), clock=lambda: T0)
    second = rig.provider(MemoryCursors(), clock=lambda: T0)
    await first.presence.poll()
    await second.presence.poll()
    assert rig.events[0].id == rig.events[1].id  # two instances, one change: one id


@pytest.mark.parametrize("status,body", [(401, b'{"status":"error","message":"bad key"}'),
                                         (200, b'{"status":"success","data":{"x":1}}'),
                                         (504, b"")])
async def test_presence_errors(rig: Rig, memory_cursors: MemoryCursors, status: int,
                               body: bytes) -> None:
    provider = rig.provider(memory_cursors)
    rig.fake.fail_next(status, body)
    with pytest.raises(EPacificError):
        await provider.presence.poll()
    rig.fake.fail_next(status, body)
    await guarded("ext_reg poll", provider.presence.status, provider.presence.poll)
    snap = provider.snapshot()
    assert snap["ok"] is False and "ePacific" in snap["presence"]["last_error"]
    assert rig.events == [] and await memory_cursors.get(provider.presence.cursor_name) is None
