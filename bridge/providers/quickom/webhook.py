"""The webhook receiver's building blocks: a bounded body reader and a ``request_id`` window.

The handler itself lives on the provider (:mod:`bridge.providers.quickom.provider`); these parts
hold no provider state and are tested on their own.
"""

from __future__ import annotations

from starlette.requests import Request

from bridge.api.endpoints import ApiError


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read incrementally; ApiError 413 as soon as it passes ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything; a chunked
    or lying sender is stopped at the first chunk that crosses the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)



