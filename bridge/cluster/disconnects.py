"""Client disconnects across instances: the pub/sub channel ``<prefix>client-disconnects``.

A websocket client is held by one instance, and a load balancer (or the kernel, between the
workers of ``serve --workers N`` on one port) decides which instance takes an admin request.
So an instance asked to disconnect a session it does not hold asks the others:

- ``ask``: "whoever holds this session, close it"; sent with a random reference;
- ``closed``: the holder closed it; sent back with the same reference and the holder's id.

Every instance listens on the channel; the one asking waits a bounded time for ``closed``.
Redis counts the receivers of the ``ask``, so with nobody else listening the answer is known at
once. Messages are JSON: ``{"kind", "session", "ref", "by", "from"}``; ``from`` is random per
process, so an instance ignores its own messages. :func:`encode` and :func:`decode` hold the
format; the classes hold the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from redis.exceptions import RedisError

from bridge.cluster.broadcast import decode_object
from bridge.common.redact import redact
from bridge.redisconn.clients import pubsub_client
from bridge.redisconn.keeper import Keeper

log = logging.getLogger("bridge.cluster.disconnects")

ASK = "ask"
CLOSED = "closed"
KINDS = (ASK, CLOSED)
#: Longer session ids than this are not callbridge's; ignored.
MAX_SESSION = 64
#: Answers being published at once; more asks than that are left unanswered (and logged).
MAX_ANSWERS = 64


class Unavailable(Exception):
    """The other instances cannot be asked now (Redis failed, or this instance does not hear
    the channel and so could not hear an answer)."""


@dataclass(frozen=True)
class Message:
    kind: str
    session: str
    ref: str
    by: str
    sender: str


def encode(kind: str, session: str, ref: str, by: str, sender: str) -> bytes:
    return orjson.dumps({"kind": kind, "session": session, "ref": ref, "by": by,
                         "from": sender})


def decode(data: bytes | str) -> Message | None:
    """The message in ``data``, or None when it is not one (ignored, never an error)."""
    message = decode_object(data, KINDS)
    if message is None:
        return None
    session, ref, by = message.get("session"), message.get("ref"), message.get("by")
    if not (isinstance(session, str) and isinstance(ref, str) and isinstance(by, str)
            and 0 < len(session) <= MAX_SESSION):
        return None
    return Message(message["kind"], session, ref, by, message["from"])


#: Closes the session of that id if this instance holds it; whether it did.
Holder = Callable[[str], bool]


class ClusterDisconnects:
    """Asks the other instances to close a client, and answers their asks; one owned reader
    task and the answers it publishes."""

    def __init__(self, url: str, *, prefix: str, instance_id: str, timeout: float = 2.0,
                 wait: float = 1.0) -> None:
        self.channel = f"{prefix}client-disconnects"
        self._instance_id = instance_id
        self._sender = secrets.token_hex(8)
        self._timeout = timeout
        #: How long an ask waits for the holder's answer.
        self.wait = wait
        self._client = pubsub_client(url, timeout=timeout)
        self._holder: Holder | None = None
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._answers: set[asyncio.Task[None]] = set()
        self._keeper = Keeper(self._client, name="client disconnects", timeout=timeout,
                              channels=[self.channel.encode()], on_message=self._dispatch,
                              logger=log)

    def on_ask(self, holder: Holder) -> None:
        """Answer the other instances' asks with ``holder`` (called on the event loop; it
        must not block)."""
        self._holder = holder

    async def start(self) -> None:
        """Start listening; return once it listens (or after the timeout, still retrying)."""
        self._keeper.run()
        await self._keeper.wait_connected(self._timeout)

    async def close(self) -> None:
        for task in list(self._answers):
            task.cancel()
        await asyncio.gather(*self._answers, return_exceptions=True)
        await self._keeper.close()
        await self._client.aclose()

    async def ask(self, session: str) -> str | None:
        """Have another instance close ``session``: the id of the instance that did, or None
        when none answered within :attr:`wait` (none holds it). Raises :class:`Unavailable`."""
        if not self._keeper.connected.is_set():
            raise Unavailable("not listening to the other instances' answers")
        ref = secrets.token_hex(8)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[ref] = answer
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    receivers = await self._client.publish(
                        self.channel, encode(ASK, session, ref, self._instance_id, self._sender))
            except (RedisError, OSError, TimeoutError) as exc:
                raise Unavailable(redact(str(exc) or type(exc).__name__)) from None
            if int(receivers) <= 1:  # only this instance listens
                return None
            try:
                async with asyncio.timeout(self.wait):
                    return await answer
            except TimeoutError:
                return None
        finally:
            self._pending.pop(ref, None)

    def _dispatch(self, _channel: bytes, data: bytes) -> None:
        message = decode(data)
        if message is None or message.sender == self._sender:
            return
        if message.kind == CLOSED:
            answer = self._pending.get(message.ref)
            if answer is not None and not answer.done():
                answer.set_result(message.by)
            return
        if self._holder is None or not self._holder(message.session):
            return
        if len(self._answers) >= MAX_ANSWERS:
            log.warning("closed client %s for another instance; too many answers pending to "
                        "tell it", message.session)
            return
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, ask: Message) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.publish(self.channel, encode(
                    CLOSED, ask.session, ask.ref, self._instance_id, self._sender))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("closed client %s for %s but could not tell it: %s", ask.session,
                        ask.by, redact(str(exc) or type(exc).__name__))


class LocalDisconnects:
    """One process (``memory://``): no other instance holds a client."""

    wait = 0.0

    def on_ask(self, holder: Holder) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ask(self, session: str) -> str | None:
        return None
