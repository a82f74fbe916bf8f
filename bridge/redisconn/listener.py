"""One Redis pub/sub channel kept subscribed by a background task, for control messages.

Revocations and lease notices are both a trickle of small messages that every instance must
hear while it can: the listener subscribes, hands each message's payload to a callback on the
event loop, and after a lost connection subscribes again with backoff. Messages sent while it
was away are missed: their users keep state that survives that (see their modules), and may
pass ``on_listening`` to catch up from that state after each subscribe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from bridge.common.backoff import RESUBSCRIBE_MAX, backoff
from bridge.common.redact import redact

log = logging.getLogger(__name__)


class ChannelListener:
    """Keeps ``channel`` subscribed; ``on_message(payload)`` runs for each message.

    ``on_listening()``, when given, runs after every subscribe Redis has confirmed (the first
    one and each one after a lost connection): anything published from then on is heard, so
    state read after it misses nothing. Both callbacks run on the reader task and must not
    block; one that has work to do schedules its own task.
    """

    def __init__(self, client: aioredis.Redis, channel: str, on_message: Callable[[bytes], None],
                 *, what: str, timeout: float,
                 on_listening: Callable[[], None] | None = None) -> None:
        self._client = client
        self.channel = channel
        self._on_message = on_message
        self._on_listening = on_listening
        self._what = what
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        #: Set while subscribed.
        self.listening = asyncio.Event()

    async def start(self) -> None:
        """Start the reader; return once it listens (or after the timeout, still retrying)."""
        if self._task is None:
            self._task = asyncio.create_task(self._reader(), name=f"{self._what} reader")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self.listening.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _reader(self) -> None:
        delays = backoff(initial=0.2, maximum=RESUBSCRIBE_MAX)
        while True:
            pubsub = self._client.pubsub()
            try:
                async with asyncio.timeout(self._timeout):
                    await pubsub.subscribe(self.channel)
                    await self._confirmed(pubsub)
                self.listening.set()
                delays = backoff(initial=0.2, maximum=RESUBSCRIBE_MAX)
                self._listening()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self._on_message(data if isinstance(data, bytes) else str(data).encode())
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("%s: Redis lost: %s", self._what, redact(str(exc) or repr(exc)))
            finally:
                self.listening.clear()
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(self._timeout):
                        await pubsub.aclose()
            await asyncio.sleep(next(delays))

    @staticmethod
    async def _confirmed(pubsub: PubSub) -> None:
        """Wait for Redis's reply to SUBSCRIBE: sending it is not enough, Redis may serve
        another connection's commands (a PUBLISH, a read) before it reads this one's."""
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message and message.get("type") == "subscribe":
                return

    def _listening(self) -> None:
        if self._on_listening is None:
            return
        try:
            self._on_listening()
        except Exception as exc:
            # A failing callback must not stop the reader: messages are still delivered.
            log.error("%s: on_listening failed: %s", self._what, redact(repr(exc)))
