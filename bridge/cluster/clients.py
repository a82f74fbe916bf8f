"""Admin requests about clients across instances: the pub/sub channel ``<prefix>clients``.

A websocket client is held by one instance, and a load balancer (or the kernel, between the
workers of ``serve --workers N`` on one port) decides which instance takes an admin request.
So an instance asks the others:

- ``ask`` / ``closed``: "whoever holds this session, close it"; the holder closes it and
  answers with its id;
- ``list`` / ``listed``: "list your clients" (of one channel, at most ``limit``); every other
  instance answers with its list.

Each ask carries a random reference that its answers repeat. Every instance listens on the
channel; the one asking waits a bounded time for the answers. Redis counts the receivers of an
ask, so the asker knows how many answers to expect, and with nobody else listening it knows at
once. Messages are JSON objects with ``kind``, ``ref``, ``by`` (the instance id) and ``from``
(random per process, so an instance ignores its own messages). Every answer reaches every
instance, so a list answer is capped (:data:`MAX_LISTED` clients).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError

from bridge.cluster.broadcast import decode_object
from bridge.common.redact import redact
from bridge.redisconn.clients import pubsub_client
from bridge.redisconn.keeper import Keeper

log = logging.getLogger("bridge.cluster.clients")

ASK = "ask"
CLOSED = "closed"
LIST = "list"
LISTED = "listed"
KINDS = (ASK, CLOSED, LIST, LISTED)
#: Longer session ids than this are not callbridge's; ignored.
MAX_SESSION = 64
#: The most clients one instance puts in a list answer (every instance receives it).
MAX_LISTED = 1000
#: Answers being published at once; asks beyond that are left unanswered (and logged).
MAX_ANSWERS = 64


class Unavailable(Exception):
    """The other instances cannot be asked now (Redis failed, or this instance does not hear
    the channel and so could not hear an answer)."""


@dataclass(frozen=True)
class Message:
    kind: str
    ref: str
    by: str
    sender: str
    #: ``ask``/``closed``: the session.
    session: str = ""
    #: ``list``: only the clients of this channel (None: all), at most ``limit``.
    channel: str | None = None
    limit: int = 0
    #: ``listed``: the answering instance's list.
    listing: dict[str, Any] = field(default_factory=dict)


def encode(message: Message) -> bytes:
    body: dict[str, Any] = {"kind": message.kind, "ref": message.ref, "by": message.by,
                            "from": message.sender}
    if message.kind in (ASK, CLOSED):
        body["session"] = message.session
    elif message.kind == LIST:
        body.update(channel=message.channel, limit=message.limit)
    else:
        body["listing"] = message.listing
    return orjson.dumps(body)


def decode(data: bytes | str) -> Message | None:
    """The message in ``data``, or None when it is not one (ignored, never an error)."""
    body = decode_object(data, KINDS)
    if body is None:
        return None
    kind, ref, by = body["kind"], body.get("ref"), body.get("by")
    if not (isinstance(ref, str) and isinstance(by, str)):
        return None
    if kind in (ASK, CLOSED):
        session = body.get("session")
        if not isinstance(session, str) or not 0 < len(session) <= MAX_SESSION:
            return None
        return Message(kind, ref, by, body["from"], session=session)
    if kind == LIST:
        channel, limit = body.get("channel"), body.get("limit")
        if not (channel is None or isinstance(channel, str)) \
                or not isinstance(limit, int) or isinstance(limit, bool) \
                or not 1 <= limit <= MAX_LISTED:
            return None
        return Message(kind, ref, by, body["from"], channel=channel, limit=limit)
    listing = body.get("listing")
    if not (isinstance(listing, dict) and isinstance(listing.get("instance_id"), str)
            and isinstance(listing.get("total"), int) and not isinstance(listing["total"], bool)
            and isinstance(listing.get("clients"), list)):
        return None
    return Message(kind, ref, by, body["from"], listing=listing)


#: Closes the session of that id if this instance holds it; whether it did.
Closer = Callable[[str], bool]
#: This instance's clients (of a channel, or all), at most so many, as the admin API lists
#: them: ``{"instance_id", "total", "clients"}``.
Lister = Callable[[str | None, int], dict[str, Any]]


class _Gathering:
    """The answers to one ask, and a future done once ``expected`` arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.answers: list[Message] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, answer: Message) -> None:
        if not self.done.done():
            self.answers.append(answer)
            if len(self.answers) >= self.expected:
                self.done.set_result(None)


class ClusterClients:
    """Asks the other instances about clients, and answers their asks; one owned reader task
    and the answers it publishes."""

    def __init__(self, url: str, *, prefix: str, instance_id: str, timeout: float = 2.0,
                 wait: float = 1.0) -> None:
        self.channel = f"{prefix}clients"
        self._instance_id = instance_id
        self._sender = secrets.token_hex(8)
        self._timeout = timeout
        #: How long an ask waits for its answers.
        self.wait = wait
        self._client = pubsub_client(url, timeout=timeout)
        self._closer: Closer | None = None
        self._lister: Lister | None = None
        self._gathering: dict[str, _Gathering] = {}
        self._answers: set[asyncio.Task[None]] = set()
        self._keeper = Keeper(self._client, name="clients", timeout=timeout,
                              channels=[self.channel.encode()], on_message=self._dispatch,
                              logger=log)

    def serve(self, closer: Closer, lister: Lister) -> None:
        """Answer the other instances' asks with this instance's clients (both are called on
        the event loop and must not block)."""
        self._closer, self._lister = closer, lister

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

    async def disconnect(self, session: str) -> str | None:
        """Have another instance close ``session``: the id of the instance that did, or None
        when none answered within :attr:`wait` (none holds it). Raises :class:`Unavailable`."""
        answers, _ = await self._ask(ASK, session=session, first_only=True)
        return answers[0].by if answers else None

    async def listings(self, channel: str | None, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The other instances' client lists (each at most ``limit``, capped at
        :data:`MAX_LISTED`), and how many instances were asked: those that did not answer
        within :attr:`wait` are missing from the lists. Raises :class:`Unavailable`."""
        limit = min(max(limit, 1), MAX_LISTED)
        answers, asked = await self._ask(LIST, channel=channel, limit=limit)
        return [a.listing for a in answers], asked

    async def _ask(self, kind: str, *, first_only: bool = False,
                   **fields: Any) -> tuple[list[Message], int]:
        """Publish an ask; its answers within :attr:`wait` (the first only, or one from each
        other instance), and how many other instances heard it."""
        if not self._keeper.connected.is_set():
            raise Unavailable("not listening to the other instances' answers")
        ref = secrets.token_hex(8)
        gathering = self._gathering[ref] = _Gathering(expected=1 << 30)
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    receivers = await self._client.publish(self.channel, encode(Message(
                        kind, ref, self._instance_id, self._sender, **fields)))
            except (RedisError, OSError, TimeoutError) as exc:
                raise Unavailable(redact(str(exc) or type(exc).__name__)) from None
            asked = int(receivers) - 1  # this instance hears its own ask
            gathering.expected = 1 if first_only else asked
            if asked > 0 and len(gathering.answers) < gathering.expected:
                try:
                    async with asyncio.timeout(self.wait):
                        await gathering.done
                except TimeoutError:
                    pass
            return gathering.answers[:gathering.expected], asked
        finally:
            self._gathering.pop(ref, None)

    def _dispatch(self, _channel: bytes, data: bytes) -> None:
        message = decode(data)
        if message is None or message.sender == self._sender:
            return
        if message.kind in (CLOSED, LISTED):
            gathering = self._gathering.get(message.ref)
            if gathering is not None:
                gathering.add(message)
            return
        if message.kind == ASK:
            if self._closer is None or not self._closer(message.session):
                return
            answer = Message(CLOSED, message.ref, self._instance_id, self._sender,
                             session=message.session)
        else:
            if self._lister is None:
                return
            answer = Message(LISTED, message.ref, self._instance_id, self._sender,
                             listing=self._lister(message.channel, message.limit))
        if len(self._answers) >= MAX_ANSWERS:
            log.warning("%s from %s left unanswered: too many answers pending", message.kind,
                        message.by)
            return
        task = asyncio.get_running_loop().create_task(self._answer(answer, message.by))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, answer: Message, to: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.publish(self.channel, encode(answer))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("answer %s to %s not sent: %s", answer.kind, to,
                        redact(str(exc) or type(exc).__name__))


class LocalClients:
    """One process (``memory://``): no other instance holds a client."""

    wait = 0.0

    def serve(self, closer: Closer, lister: Lister) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def disconnect(self, session: str) -> str | None:
        return None

    async def listings(self, channel: str | None, limit: int) -> tuple[list[dict[str, Any]], int]:
        return [], 0
