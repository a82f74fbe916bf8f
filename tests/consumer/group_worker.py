"""A worker process of a consumer group, for tests that kill one: ``python -m
tests.consumer.group_worker <url> <prefix> <group> <consumer> <ack_first> <channel>...``.

Prints one JSON line per step, flushed at once: ``{"ready": true}`` once its groups exist,
``{"got": offset, "deliveries": n, "id": event id}`` for each delivery, ``{"acked": offset}``
after each ack. Acks the first ``ack_first`` deliveries (all when negative), then holds every
later one unacked. Claims after 1 s."""

from __future__ import annotations

import asyncio
import sys

import orjson

from bridge.consumer.groups import GroupConsumer


def say(**fields: object) -> None:
    sys.stdout.write(orjson.dumps(fields).decode() + "\n")
    sys.stdout.flush()


async def main(url: str, prefix: str, group: str, consumer: str, ack_first: int,
               channels: list[str]) -> None:
    async with GroupConsumer(url, channels, group=group, consumer=consumer, prefix=prefix,
                             claim_after=1.0, batch=4, block=0.2) as workers:
        say(ready=True)
        acked = 0
        async for delivery in workers:
            say(got=delivery.offset, deliveries=delivery.deliveries,
                id=delivery.envelope.event["id"])
            if ack_first < 0 or acked < ack_first:
                await workers.ack(delivery)
                acked += 1
                say(acked=delivery.offset)


if __name__ == "__main__":
    url, prefix, group, consumer, ack_first, *channels = sys.argv[1:]
    asyncio.run(main(url, prefix, group, consumer, int(ack_first), channels))
