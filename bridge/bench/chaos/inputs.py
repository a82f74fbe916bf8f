"""The bad HTTP requests of a chaos run (:func:`bridge.bench.chaos.probes.bad_input` sends them).

Malformed, oversized and out-of-range bodies to the provider webhooks (signed correctly, so
they reach the field checks), the HTTP API and the admin API: every one must get a 4xx.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from bridge.bench.chaos.probes import Bad

#: Values a provider field must refuse with a 4xx, whatever the field.
ODD_VALUES: list[Any] = [1e40, 10**40, -1e308, "\u0661\u0662\u0663", True, "", "a\x00b",
                         "x" * 10_000, [1, 2], {"nested": {"deep": [None]}}]


def _raw_json(value: Any) -> bytes:
    # orjson refuses integers past 64 bits: written by hand, as a sender would.
    return str(value).encode() if isinstance(value, int) and not isinstance(value, bool) \
        and abs(value) >= 2**63 else orjson.dumps(value)


def _quickom_signature(body: dict[str, Any], secret: str) -> str:
    def text(value: Any) -> str:
        return "" if value is None else str(value)

    data = "".join(text(body.get(k)) for k in ("call_id", "start_time", "end_time"))
    data += text((body.get("customer_info") or {}).get("customer_id"))
    data += text((body.get("callee_info") or {}).get("member_id"))
    return hmac.new(secret.encode(), data.encode(), hashlib.sha256).hexdigest()


def bad_requests(tenant: str, *, quickom_secret: str, kompaas_secret: str, api_token: str,
                 admin_token: str) -> list[Bad]:
    out: list[Bad] = []
    kompaas = f"/webhooks/kompaas/{tenant}"
    secret = (("X-Callbridge-Secret", kompaas_secret), ("Content-Type", "application/json"))
    for value in ODD_VALUES:
        for field in ("q931_status", "verification_call_uuid", "final_status"):
            template = {"verification_call_uuid": "fa278be48dc2_1", "q931_status": 16,
                        field: None}
            raw = orjson.dumps(template).replace(b"null", _raw_json(value))
            out.append(Bad("POST", kompaas, raw, secret))
    out += [Bad("POST", kompaas, b"{not json", secret), Bad("POST", kompaas, b"[]", secret),
            Bad("POST", kompaas, b'{"q931_status": 16}'),
            Bad("POST", kompaas, b"x" * 2_000_000, secret)]
    quickom = f"/webhooks/quickom/{tenant}"
    for value in ODD_VALUES:
        for field in ("call_id", "start_time", "end_time"):
            body: dict[str, Any] = {"call_id": "c-1", "start_time": 1700000000,
                                    "end_time": 1700000042, "customer_info":
                                    {"customer_id": "cu-1"}, "callee_info": {"member_id": "m-1"},
                                    field: value if not isinstance(value, int)
                                    or isinstance(value, bool) or abs(value) < 2**63 else None}
            raw = orjson.dumps(body)
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
                raw = raw.replace(f'"{field}":null'.encode(),
                                  f'"{field}":{value}'.encode())
                body[field] = value
            try:
                signature = _quickom_signature(body, quickom_secret)
            except (TypeError, ValueError):
                signature = "0" * 64
            out.append(Bad("POST", quickom, raw, (("Signature", signature),
                                                  ("Content-Type", "application/json"))))
    out += [Bad("POST", quickom, b"{}", (("Signature", "bad"),)),
            Bad("POST", quickom, b"\xff" * 1000)]
    api = (("Authorization", f"Bearer {api_token}"),)
    for path in (f"/api/v1/quickom/{tenant}/calls/%00", f"/api/v1/quickom/{tenant}/calls/"
                 + "x" * 5000, f"/api/v1/quickom/{tenant}/calls/c-1/recordings/\u0661",
                 f"/api/v1/antbuddy/{tenant}/calls", "/api/v1/nothing"):
        out += [Bad("GET", path, headers=api), Bad("POST", path, b"\x00" * 100, api)]
    out.append(Bad("GET", f"/api/v1/quickom/{tenant}/calls/c-1",
                   headers=(("Authorization", "Bearer not.a.token"),)))
    admin = (("Authorization", f"Bearer {admin_token}"),)
    out += [Bad("POST", "/admin/tokens/" + "j" * 201 + "/revoke", b"", admin),
            Bad("POST", "/admin/tokens/jti-x/revoke", b'{"expires_at": 1e400}', admin),
            Bad("POST", "/admin/tokens/jti-x/revoke", b'{"expires_at": "soon"}', admin),
            Bad("POST", "/admin/clients/nope/disconnect", b"", admin),
            Bad("POST", "/admin/streams/%00/reconnect", b"", admin),
            Bad("GET", "/admin/streams", headers=(("Authorization", "Bearer x"),))]
    return out
