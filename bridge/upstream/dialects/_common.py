"""Helpers the client codecs share: URLs, JSON, redaction of echoed text, event mapping."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson

from bridge.common.redact import MASK, redact, register
from bridge.upstream.dialects.base import (
    AuthFailed,
    CallSignal,
    Malformed,
    Signal,
    UpstreamError,
)

EXCERPT_LENGTH = 80
# Redact a window well past the excerpt: a token cut by the window's edge never reaches the excerpt.
_REDACT_WINDOW = 2048
_MESSAGE_LENGTH = 300
_AUTH_WORDS = re.compile(r"(?i)authenticat|token|unauthori[sz]ed|auth[ _-]?fail")

_SCHEMES = {"ws": ("http", "ws"), "wss": ("https", "wss"), "http": ("http", "ws"),
            "https": ("https", "wss")}


def url_for(base_url: str, path: str, *, websocket: bool, query: str = "") -> str:
    """``path`` appended to ``base_url``'s path, with an http(s) or ws(s) scheme as asked.

    ``base_url`` may be ws, wss, http or https; host and port are kept, its query is dropped.
    """
    parts = urlsplit(base_url)
    schemes = _SCHEMES.get(parts.scheme.lower())
    if schemes is None or not parts.netloc:
        raise ValueError(f"unsupported upstream URL {parts.scheme!r}: want ws, wss, http or https")
    scheme = schemes[1] if websocket else schemes[0]
    url = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"
    return f"{url}?{query}" if query else url


#: Tokens a codec remembers, to scrub from whatever the server echoes back.
MAX_TOKENS = 16


def remember_token(tokens: dict[str, None], token: str) -> None:
    """Register ``token`` for redaction and keep it among a codec's newest few."""
    register(token)
    tokens[token] = None
    while len(tokens) > MAX_TOKENS:
        del tokens[next(iter(tokens))]


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets (tokens this codec sent) nor any registered secret."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return redact(text)


def excerpt(text: str, secrets: Iterable[str] = ()) -> str:
    return scrub(text[:_REDACT_WINDOW], secrets)[:EXCERPT_LENGTH]


def malformed(reason: str, frame: str, secrets: Iterable[str] = ()) -> Malformed:
    return Malformed(reason, excerpt(frame, secrets))


def message_text(value: Any, secrets: Iterable[str] = ()) -> str:
    """A redacted, bounded message from an error payload: its ``message`` field, else its JSON."""
    if isinstance(value, dict):
        value = value.get("message", value.get("error", value))
    text = value if isinstance(value, str) else dumps(value)
    return scrub(text[:_REDACT_WINDOW], secrets)[:_MESSAGE_LENGTH]


def mentions_auth(text: str) -> bool:
    """True when an error text is about the auth token (checked before redaction)."""
    return _AUTH_WORDS.search(text) is not None


def event_signal(name: Any, args: Any, frame: str, secrets: Iterable[str]) -> Signal:
    """The signal of a Socket.IO event (0.9 or v4): call event, ``auth_failure`` or ``error``.

    ``args`` is one object, or a list whose first item is that object (an empty list and a
    missing value mean an empty payload). ``auth_failure`` carries the token in ``cause``: only
    its ``message`` is kept, redacted.
    """
    if not isinstance(name, str) or not name:
        return malformed("event without a name", frame, secrets)
    if isinstance(args, list):
        args = args[0] if args else {}
    if args is None:
        args = {}
    if name == "auth_failure":
        text = args.get("message") if isinstance(args, dict) else args
        return AuthFailed(message_text(text if text is not None else name, secrets))
    if name == "error":
        return UpstreamError(message_text(args, secrets))
    if not isinstance(args, dict):
        label = excerpt(name, secrets)[:40]
        return malformed(f"event {label!r} payload is not an object", frame, secrets)
    return CallSignal(name, args)


class SocketIOEvents:
    """``subscribe``/``unsubscribe`` sent as Socket.IO events: shared by both Socket.IO dialects.

    A codec using it provides :meth:`_event_frame`, its own framing of one event.
    """

    _tokens: dict[str, None]
    _out: list[str]

    def _event_frame(self, name: str, args: dict[str, str]) -> str:
        raise NotImplementedError

    def subscribe(self, account_id: str, token: str, binding: str) -> None:
        self._send_event("subscribe", account_id, token, binding)

    def unsubscribe(self, account_id: str, token: str, binding: str) -> None:
        self._send_event("unsubscribe", account_id, token, binding)

    def _send_event(self, name: str, account_id: str, token: str, binding: str) -> None:
        remember_token(self._tokens, token)
        args = {"account_id": account_id, "auth_token": token, "binding": binding}
        self._out.append(self._event_frame(name, args))
