"""Kazoo 4.x Blackhole over a plain websocket with JSON frames: the client codec.

Client frames carry an ``action`` (``subscribe``, ``unsubscribe``, ``ping``) and a request id the
codec generates; the server answers each with ``{"action":"reply","request_id":R,"status":..}``
and pushes ``{"action":"event","name":..,"data":{..}}`` with lower_snake_case keys.

Replies are matched to the request they answer: a successful subscribe -> :class:`Subscribed`;
replies to pings and successful unsubscribes yield nothing; an error reply -> :class:`AuthFailed`
when its text is about authentication or the token, else :class:`UpstreamError`, in both cases
redacted and without the token sent in that request. An ``action: pong`` frame is ignored too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from bridge.upstream.dialects import _common
from bridge.upstream.dialects.base import (
    AuthFailed,
    CallSignal,
    ClientCodec,
    Signal,
    Subscribed,
    UpstreamError,
)

_MAX_PENDING = 256  # requests awaiting a reply; pings may go unanswered when disabled upstream


@dataclass
class KazooJsonCodec(ClientCodec):
    name: ClassVar[str] = "kazoo-json"
    ready_on_open: ClassVar[bool] = True
    acks_subscribe: ClassVar[bool] = True

    keepalive_interval: float | None = 30.0
    dead_after: float = 90.0
    #: Prefix of the generated request ids (``<prefix><n>``, n counting from 1).
    request_prefix: str = "cb-"
    _next_id: int = field(default=0, init=False, repr=False)
    #: request id -> (action, token sent with it or "")
    _pending: dict[str, tuple[str, str]] = field(default_factory=dict, init=False, repr=False)
    _tokens: dict[str, None] = field(default_factory=dict, init=False, repr=False)

    def websocket_url(self, base_url: str) -> str:
        return _common.url_for(base_url, "/", websocket=True)

    def receive(self, frame: str) -> list[Signal]:
        try:
            body = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [_common.malformed("invalid JSON", frame, self._tokens)]
        if not isinstance(body, dict):
            return [_common.malformed("frame is not a JSON object", frame, self._tokens)]
        action = body.get("action")
        if action == "event":
            return [self._event(body, frame)]
        if action == "reply":
            return self._reply(body, frame)
        if action == "pong":
            self._pending.pop(_request_id(body.get("request_id")) or "", None)
            return []
        text = action if isinstance(action, str) else repr(action)
        label = _common.excerpt(text, self._tokens)[:40]
        return [_common.malformed(f"unknown action {label!r}", frame, self._tokens)]

    def subscribe(self, account_id: str, token: str, binding: str) -> str:
        return self._request("subscribe", token, {"account_id": account_id, "binding": binding})

    def unsubscribe(self, account_id: str, token: str, binding: str) -> str:
        return self._request("unsubscribe", token, {"account_id": account_id, "binding": binding})

    def keepalive(self) -> None:
        self._request("ping", "", None)

    def _request(self, action: str, token: str, data: dict[str, str] | None) -> str:
        self._next_id += 1
        request_id = f"{self.request_prefix}{self._next_id}"
        frame: dict[str, Any] = {"action": action, "request_id": request_id}
        if token:
            _common.remember_token(self._tokens, token)
            frame["auth_token"] = token
        if data is not None:
            frame["data"] = data
        self._pending[request_id] = (action, token)
        while len(self._pending) > _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._out.append(_common.dumps(frame))
        return request_id

    def _reply(self, body: dict[str, Any], frame: str) -> list[Signal]:
        request_id = _request_id(body.get("request_id"))
        action, token = self._pending.pop(request_id or "", ("", ""))
        status = body.get("status")
        data = body.get("data")
        if status == "success":
            if action in ("ping", "unsubscribe"):
                return []
            subscribed = data.get("subscribed") if isinstance(data, dict) else None
            if action != "subscribe" and subscribed is None:
                return []  # an answer to nothing we asked for: not a subscription
            bindings = tuple(b for b in subscribed or () if isinstance(b, str))
            return [Subscribed(request_id, bindings)]
        if status == "error":
            if action == "ping":
                return []  # pings disabled upstream; websocket-level pings keep the link alive
            texts = _error_texts(data)
            joined = "; ".join(texts) or "error reply without a message"
            secrets = [token, *self._tokens] if token else list(self._tokens)
            message = _common.message_text(joined, secrets)
            if any(_common.mentions_auth(t) for t in texts):
                return [AuthFailed(message, request_id)]
            return [UpstreamError(message, request_id)]
        return [_common.malformed("reply without a success or error status", frame, self._tokens)]

    def _event(self, body: dict[str, Any], frame: str) -> Signal:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            # routing_key: call.<account>.<EVENT>.<call id>
            routing = body.get("routing_key")
            parts = routing.split(".", 3) if isinstance(routing, str) else []
            name = parts[2] if len(parts) >= 3 and parts[0] == "call" else None
        if not name:
            return _common.malformed("event without a name", frame, self._tokens)
        data = body.get("data", {})
        if not isinstance(data, dict):
            return _common.malformed("event data is not an object", frame, self._tokens)
        return CallSignal(name, data)


def _request_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value)


def _error_texts(data: Any) -> list[str]:
    """The error strings of a reply's ``data``: ``errors`` list, ``message``, or the data itself."""
    if isinstance(data, dict):
        errors = data.get("errors", data.get("message", data.get("error")))
        if errors is None:
            return [_common.dumps(data)] if data else []
        data = errors
    if isinstance(data, str):
        return [data]
    if isinstance(data, list):
        return [e if isinstance(e, str) else _common.dumps(e) for e in data]
    return [] if data is None else [_common.dumps(data)]
