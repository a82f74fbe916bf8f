"""``callbridge tail``: print channels' events from Redis, live or from a position."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bridge.cli import common


def register(commands: common.Commands) -> None:
    tail = common.add_command(
        commands, "tail", "print channels' events from Redis, live or from a position")
    tail.add_argument("channels", nargs="+", metavar="CHANNEL", help="e.g. calls:acme:1001")
    where = tail.add_mutually_exclusive_group()
    where.add_argument("--from", dest="offset", metavar="OFFSET",
                       help="start after this offset of the current epoch (0: every event kept)")
    where.add_argument("--since", metavar="DURATION",
                       help="start with the events of the last 30s, 10m, 2h, 1d")
    tail.add_argument("--format", default="json", choices=["json", "table"],
                      help="json: one envelope per line; table: a readable row per event")
    tail.add_argument("--group", metavar="NAME",
                      help="read as one worker of this consumer group, acknowledging each event")
    tail.add_argument("--config", metavar="FILE.toml",
                      help="read [broker] url and prefix from here")
    tail.add_argument("--redis", metavar="URL", help="redis:// or redis-cluster:// URL "
                      "(instead of the configuration's [broker] url)")
    tail.add_argument("--prefix", help="key prefix (instead of the configuration's)")
    tail.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from bridge.consumer.tail import parse_since, starts, tail
    from bridge.events.channels import is_valid_channel

    bad = [c for c in args.channels if not is_valid_channel(c)]
    if bad:
        print(f"callbridge tail: invalid channel(s): {', '.join(bad)}", file=sys.stderr)
        return common.EXIT_CONFIG
    url, prefix = args.redis, args.prefix
    if url is None or prefix is None:
        config = common.load(args.config)
        url = url or config.broker.url
        prefix = config.broker.prefix if prefix is None else prefix
    if not url.startswith(("redis://", "rediss://", "redis-cluster://")):
        print("callbridge tail: needs a Redis broker (--redis URL, or [broker] url)",
              file=sys.stderr)
        return common.EXIT_CONFIG
    if args.group is not None and (args.offset or args.since):
        print("callbridge tail: --group reads from the group's position, not --from/--since",
              file=sys.stderr)
        return common.EXIT_CONFIG
    try:
        since = parse_since(args.since) if args.since else None
        start = await starts(url, prefix, args.channels, offset=args.offset, since=since)
    except ValueError as exc:
        print(f"callbridge tail: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    stop = asyncio.Event()
    common.stop_on_signals([], stop)
    result: int = await tail(url, args.channels, prefix=prefix, start=start, fmt=args.format,
                             group=args.group, out=sys.stdout, stop=stop)
    return result
