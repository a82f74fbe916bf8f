"""The upstream wire dialects, by name: ``socketio-0.9``, ``kazoo-json``, ``engineio-4``."""

from __future__ import annotations

from bridge.upstream.dialects.base import ClientCodec
from bridge.upstream.dialects.eio4 import EngineIO4Codec
from bridge.upstream.dialects.kazoo_json import KazooJsonCodec
from bridge.upstream.dialects.sio09 import SocketIO09Codec

CODECS: dict[str, type[ClientCodec]] = {
    codec.name: codec for codec in (SocketIO09Codec, KazooJsonCodec, EngineIO4Codec)
}


def codec_for(name: str) -> ClientCodec:
    """A new codec of the dialect ``name`` (one per connection)."""
    try:
        return CODECS[name]()
    except KeyError:
        known = ", ".join(sorted(CODECS))
        raise ValueError(f"unknown upstream dialect {name!r} (known: {known})") from None
