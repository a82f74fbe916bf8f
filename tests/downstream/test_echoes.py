"""bridge.downstream.echoes: a published copy is matched to its provisional delivery once, per
channel."""

from __future__ import annotations

from bridge.downstream.echoes import Echoes
from bridge.events.event import envelope


def frame(channel: str, event_id: str) -> bytes:
    return envelope(channel, "e1", "5-0", b'{"id":"' + event_id.encode() + b'","n":1}')


def test_a_published_copy_finds_its_provisional_delivery_once() -> None:
    echoes = Echoes()
    echoes.sent("calls:a", "ev-1", joins=7)
    assert echoes.since("calls:b", frame("calls:b", "ev-1")) is None  # another channel
    assert echoes.since("calls:a", frame("calls:a", "ev-2")) is None
    assert echoes.since("calls:a", frame("calls:a", "ev-1")) == 7
    assert echoes.since("calls:a", frame("calls:a", "ev-1")) is None and not echoes


def test_the_oldest_are_forgotten_past_the_limit() -> None:
    echoes = Echoes(limit=2)
    for n in range(3):
        echoes.sent("calls:a", f"ev-{n}", joins=n)
    assert len(echoes) == 2
    assert echoes.since("calls:a", frame("calls:a", "ev-0")) is None
    assert echoes.since("calls:a", frame("calls:a", "ev-2")) == 2
