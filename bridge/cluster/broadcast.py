"""The message format shared by the instance-wide pub/sub channels (lease notices, admin
requests about clients): one JSON object with a ``kind`` and the sender's random ``from``."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson


def decode_object(data: bytes | str, kinds: Collection[str]) -> dict[str, Any] | None:
    """The JSON object in ``data`` if its ``kind`` is one of ``kinds`` and its ``from`` a
    string; else None (another instance's junk is ignored, never an error)."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("kind") not in kinds \
            or not isinstance(message.get("from"), str):
        return None
    return message
