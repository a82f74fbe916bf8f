"""OpenAPI operations of the Kompaas endpoints."""

from __future__ import annotations

from typing import Any

_ERROR = {"description": "error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}

OUTCOMES = ["answered", "busy", "not_answered", "rejected", "billing_problem", "unreachable",
            "unknown", "timed_out"]

START: dict[str, Any] = {
    "operationId": "kompaasStartVerification",
    "description": (
        "Places a Kompaas verification (flash) call to `phone_number`. The outcome arrives later "
        "as a `verification.completed` event on channel `verifications:<tenant>`, matched by "
        "`verification_call_uuid`; with no outcome within the configured timeout the event has "
        "outcome `timed_out`."),
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["phone_number"], "additionalProperties": False,
        "properties": {"phone_number": {
            "type": "string", "pattern": "^[1-9][0-9]{7,14}$",
            "description": "E.164 without '+': country code then number, 8 to 15 digits",
            "examples": ["421222202999"]}}}}}},
    "responses": {
        "201": {"description": "the call is being placed", "content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "verification_call_uuid": {"type": "string"},
                "phone_number": {"type": "string"},
                "login_did": {"type": ["string", "null"],
                              "description": "the number the call comes from"},
                "code": {"type": ["string", "null"]},
                "account_id": {"type": ["string", "null"]},
                "channel": {"type": "string"},
                "timeout_seconds": {"type": "number"}},
                "required": ["verification_call_uuid", "phone_number", "channel"]}}}},
        "400": {**_ERROR, "description": "invalid phone number or body (the message says why)"},
        "402": {**_ERROR, "description": "Kompaas refused: insufficient credit"},
        "404": {**_ERROR, "description": "no Kompaas account for this tenant"},
        "502": {**_ERROR, "description": "Kompaas rejected callbridge's token, failed or "
                                         "answered nonsense"},
        "503": {**_ERROR, "description": "too many verifications pending, rate limited, or "
                                         "the verification store (Redis) unreachable"},
        "504": {**_ERROR, "description": "Kompaas did not answer in time"},
    },
}

WEBHOOK: dict[str, Any] = {
    "operationId": "kompaasWebhook",
    "description": (
        "Receives the Kompaas \"Flash call\" webhook. Kompaas signs nothing, so the request must "
        "carry the configured `webhook_secret` in header `X-Callbridge-Secret` or in query "
        "parameter `secret`. The body is the customer's JSON template; the verification id, "
        "Q.931 cause and final status are read at the configured dotted paths."),
    "parameters": [
        {"name": "X-Callbridge-Secret", "in": "header", "required": False,
         "schema": {"type": "string"}, "description": "the shared webhook secret"},
        {"name": "secret", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "the shared webhook secret, when headers cannot be configured"},
    ],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": "the configured body template",
        "examples": [{"verification_call_uuid": "fa278be48dc2_117793", "q931_status": 16,
                      "final_status": "ANSWER"}]}}}},
    "responses": {
        "200": {"description": "accepted", "content": {"application/json": {"schema": {
            "type": "object", "properties": {
                "result": {"type": "string", "enum": ["emitted", "late", "duplicate",
                                                      "unknown"]},
                "outcome": {"type": "string", "enum": OUTCOMES}}}}}},
        "400": {**_ERROR, "description": "the body is not a JSON object"},
        "401": {**_ERROR, "description": "missing or wrong secret"},
        "404": {**_ERROR, "description": "no Kompaas account for this tenant"},
        "413": {**_ERROR, "description": "body too large"},
        "422": {**_ERROR, "description": "a field is missing or malformed at its configured path"},
        "503": {**_ERROR, "description": "the verification store (Redis) is unreachable: "
                                         "deliver the webhook again later"},
    },
}
