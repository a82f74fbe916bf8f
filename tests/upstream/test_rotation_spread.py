"""Streams sharing a token move to its successor one by one, not in the same instant."""

from __future__ import annotations

import random

import httpx

from bridge.upstream.stream import StreamSettings, UpstreamStream
from bridge.upstream.tokens import Token, TokenManager


def stream(http: httpx.AsyncClient, tokens: TokenManager, seed: int,
           overlap: float = 5.0) -> UpstreamStream:
    settings = StreamSettings(tenant="acme", account_id=f"acct-{seed}",
                              ws_url="ws://127.0.0.1:9/", dialect="kazoo-json", bindings=(),
                              rotation_overlap=overlap)
    return UpstreamStream(settings, tokens, http, on_call=lambda *a: None,
                          on_notice=lambda *a: None, rng=random.Random(seed))


async def test_rotation_offsets_spread_over_half_the_spare_life() -> None:
    async with httpx.AsyncClient() as http:
        tokens = TokenManager(oapi_url="http://127.0.0.1:9", app_id="app",
                              app_secret="spread-secret-0123456789", http=http)
        # Refresh point 20 s before expiry, 5 s of overlap: 15 s to spare, offsets in [0, 7.5].
        token = Token("v", fetched_at=0.0, expires_at=60.0, refresh_at=40.0, rule="seconds")
        offsets = [stream(http, tokens, seed)._rotation_offset(token) for seed in range(500)]
        assert all(0.0 <= o <= 7.5 for o in offsets)
        assert max(offsets) - min(offsets) > 6.0
        per_second = [0] * 8
        for o in offsets:
            per_second[int(o)] += 1
        assert max(per_second) < 120  # 500 streams over 7.5 s: about 67 a second, not 500
        # No time to spare (refresh point moved close to expiry after a failed rotation).
        late = Token("v", fetched_at=0.0, expires_at=60.0, refresh_at=57.0, rule="seconds")
        assert stream(http, tokens, 1)._rotation_offset(late) == 0.0
