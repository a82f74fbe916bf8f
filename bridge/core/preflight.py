"""Before serving: reach what a configuration depends on, one bounded probe each.

Each probe answers one :class:`Probe`: ``ok``, ``failed`` (with what to check next) or
``skipped`` (nothing can be checked, and why). Probes use the same client code the running
service uses (the AntBuddy token manager, each provider's API client), make the cheapest
authenticated request that changes nothing, and never let a password, secret or token into
their text: every detail goes through :func:`~bridge.common.redact.redact`.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge.common.redact import redact
from bridge.config.model import AntBuddyAccount, BrokerConfig, Config
from bridge.config.providers import EPacificAccount, KompaasAccount, QuickomAccount
from bridge.providers.epacific.client import EPacificClient
from bridge.providers.epacific.protocol import EPacificError
from bridge.providers.quickom.client import QuickomClient, QuickomError
from bridge.redisconn import reasons
from bridge.redisconn.url import parse_cluster_url
from bridge.upstream.tokens import TokenAuthError, TokenManager, TokenUnavailable

#: Seconds each probe may take, by default.
TIMEOUT = 5.0
_HTTP_STATUS = re.compile(r"HTTP (\d{3})")
_ERRNO = re.compile(r"^Error (-?\d+) connecting")
_NAME_ERRORS = (socket.EAI_NONAME, socket.EAI_AGAIN, getattr(socket, "EAI_NODATA", -5))


@dataclass(frozen=True)
class Probe:
    #: What was probed: ``broker`` or a block's label such as ``antbuddy[acme]``.
    name: str
    status: str  # "ok" | "failed" | "skipped"
    #: One line for the user; on failure it ends with what to check.
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _ok(name: str, detail: str) -> Probe:
    return Probe(name, "ok", redact(detail))


def _failed(name: str, detail: str) -> Probe:
    return Probe(name, "failed", redact(detail))


def labels(config: Config) -> list[tuple[str, str, Any]]:
    """``(section, label, block)`` of every provider block: ``antbuddy[acme]``, or with its
    account when a tenant has several AntBuddy accounts (``antbuddy[acme/4b8c...]``)."""
    out: list[tuple[str, str, Any]] = []
    for section in ("antbuddy", "quickom", "epacific", "kompaas"):
        blocks = getattr(config, section)
        counts = Counter(b.tenant for b in blocks)
        for block in blocks:
            name = block.tenant
            if counts[name] > 1:
                name += f"/{block.account_id}"
            out.append((section, f"{section}[{name}]", block))
    return out


async def probe_all(config: Config, *, timeout: float = TIMEOUT) -> list[Probe]:
    """Every probe of ``config``, side by side, in a stable order: the broker, then each block."""
    async with httpx.AsyncClient(timeout=timeout, trust_env=False,
                                 headers={"user-agent": "callbridge check"}) as http:
        jobs = [_bounded("broker", probe_broker(config.broker, timeout), timeout,
                         "check [broker] url")]
        for section, label, block in labels(config):
            url_key = "oapi_url" if section == "antbuddy" else "api_url"
            probe = _PROBES[section]
            jobs.append(_bounded(label, probe(label, block, http, timeout), timeout,
                                 f"check {label}.{url_key}"))
        return list(await asyncio.gather(*jobs))


async def _bounded(name: str, probe: Awaitable[Probe], timeout: float, hint: str) -> Probe:
    try:
        async with asyncio.timeout(timeout + 1.0):  # each probe bounds its own requests too
            return await probe
    except TimeoutError:
        return _failed(name, f"no answer within {timeout:g}s: {hint}")
    except Exception as exc:  # a probe reports; it never ends the check with a traceback
        return _failed(name, f"probe failed ({type(exc).__name__}: {exc}): {hint}"[:300])


async def probe_broker(broker: BrokerConfig, timeout: float = TIMEOUT) -> Probe:
    """``memory://`` needs nothing; Redis answers PING and tells its version."""
    url = broker.url
    if url.startswith("memory:"):
        return _ok("broker", "memory://: embedded, nothing to reach")
    if url.startswith("redis-cluster://"):
        nodes, username, password = parse_cluster_url(url)
        results = await asyncio.gather(*(_ping(h, p, aioredis.Redis(
            host=h, port=p, username=username, password=password, socket_timeout=timeout,
            socket_connect_timeout=timeout), timeout) for h, p in nodes))
        answering = [r for r in results if not r.failed]
        if not answering:
            return results[0]
        down = [f"{h}:{p}" for (h, p), r in zip(nodes, results) if r.failed]
        detail = f"{len(answering)} of {len(results)} cluster nodes answer; {answering[0].detail}"
        return _ok("broker", detail + (f" (unreachable: {', '.join(down)})" if down else ""))
    parts = urlsplit(url)
    try:
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    except ValueError:
        return _failed("broker", "the port in [broker] url is not a number: check [broker] url")
    client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return await _ping(host, port, client, timeout)


async def _ping(host: str, port: int, client: aioredis.Redis, timeout: float) -> Probe:
    where = f"Redis at {host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            await client.ping()
            info = await client.info("server")
    except (TimeoutError, asyncio.TimeoutError):
        return _failed("broker", reasons.unreachable(f"{host}:{port}",
                                                     f"no answer within {timeout:g}s"))
    except (RedisError, OSError) as exc:
        return _failed("broker", reasons.unreachable(f"{host}:{port}", reasons.why(exc)))
    finally:
        await client.aclose()
    return _ok("broker", f"{where}: PING answered, Redis {info.get('redis_version', '?')}")


async def probe_antbuddy(label: str, block: AntBuddyAccount, http: httpx.AsyncClient,
                         timeout: float = TIMEOUT) -> Probe:
    """Fetch one oapi token with the block's credentials, exactly as its stream would."""
    sip = block.sip_password.get_secret_value() if block.sip_password is not None else None
    tokens = TokenManager(oapi_url=block.oapi_url, app_id=block.app_id,
                          app_secret=block.app_secret.get_secret_value(), http=http,
                          sip_user=block.sip_user, sip_password=sip,
                          request_timeout=timeout, unavailable_after=0.0)
    host = urlsplit(block.oapi_url).netloc.rpartition("@")[2]
    try:
        token = await tokens.refresh()
    except TokenAuthError as exc:
        keys = "app_id and app_secret"
        if block.sip_user is not None:
            keys = "app_id, app_secret, sip_user and sip_password"
        return _failed(label, f"credentials refused by {host} ({_status(str(exc))}): "
                              f"check {label}.{keys}")
    except TokenUnavailable as exc:
        reason = str(exc).removeprefix("auth_token unavailable: ")
        return _failed(label, f"no token from {host} ({reason}): check {label}.oapi_url")
    lifetime = token.expires_at - token.fetched_at
    return _ok(label, f"token fetched from {host} for app {block.app_id} (valid "
                      f"{lifetime:.0f}s); the call-signal websocket is not opened here")


def _status(text: str) -> str:
    match = _HTTP_STATUS.search(text)
    return f"HTTP {match.group(1)}" if match else "refused"


async def probe_quickom(label: str, block: QuickomAccount, http: httpx.AsyncClient,
                        timeout: float = TIMEOUT) -> Probe:
    """List one missed call (``call/new``, read only): the request backfill polls make."""
    client = QuickomClient(http, block.api_url, block.api_key.get_secret_value())
    try:
        await client.new_calls(1)
    except QuickomError as exc:
        key = "api_key" if exc.code == "upstream_unauthorized" else "api_url"
        return _failed(label, f"{exc.message}: check {label}.{key}")
    return _ok(label, f"api_key accepted by {_host(block.api_url)}; the signing_secret is "
                      "checked on each webhook, not here")


async def probe_epacific(label: str, block: EPacificAccount, http: httpx.AsyncClient,
                         timeout: float = TIMEOUT) -> Probe:
    """Ask for the online extensions (``ext_reg/json``, read only): the presence poll."""
    client = EPacificClient(http, block.api_url, block.api_key.get_secret_value(),
                            block.api_secret.get_secret_value())
    try:
        await client.online()
    except EPacificError as exc:
        keys = "api_key and api_secret" if exc.kind == "auth" else "api_url"
        return _failed(label, f"{exc}: check {label}.{keys}")
    return _ok(label, f"api_key and api_secret accepted by {_host(block.api_url)}")


async def probe_kompaas(label: str, block: KompaasAccount, http: httpx.AsyncClient,
                        timeout: float = TIMEOUT) -> Probe:
    """Kompaas's one authenticated call places a paid verification call: only reachability
    of ``api_url`` is tried."""
    host = _host(block.api_url)
    try:
        response = await http.get(block.api_url + "/", timeout=timeout)
    except httpx.HTTPError as exc:
        return _failed(label, f"{host} unreachable ({type(exc).__name__}): "
                              f"check {label}.api_url")
    return Probe(label, "skipped", f"{host} reachable (HTTP {response.status_code}); no "
                 "credential check available: the only call taking api_token places a paid "
                 "verification call")


def _host(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


_PROBES: dict[str, Callable[[str, Any, httpx.AsyncClient, float], Awaitable[Probe]]] = {
    "antbuddy": probe_antbuddy, "quickom": probe_quickom, "epacific": probe_epacific,
    "kompaas": probe_kompaas,
}
