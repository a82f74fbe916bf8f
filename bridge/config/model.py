"""Configuration: a TOML file, overridden by ``CALLBRIDGE__*`` environment variables.

This module is the schema; :func:`bridge.config.load.load_config` reads a file and the
environment into it. Secrets are ``SecretStr`` and the broker URL's password is masked, so a
``Config`` can be printed or logged safely; :meth:`Config.model_dump_safe` gives a display dict
with secrets masked.
See docs/configuration.md for every key.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from bridge.common.redact import register
from bridge.config.providers import (
    ACCOUNT_SECTIONS,
    TENANT,
    EPacificAccount,
    KompaasAccount,
    QuickomAccount,
    Section,
    min_secret,
)
from bridge.events.channels import is_valid_channel, is_valid_pattern
from bridge.redisconn.url import parse_cluster_url

MASK = "**********"
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/]*@")

#: Every Kazoo call event the bridge normalizes; the bindings of an account by default.
DEFAULT_BINDINGS: tuple[str, ...] = tuple(
    f"call.{name}.*"
    for name in "CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_HOLD CHANNEL_UNHOLD "
    "CHANNEL_DESTROY PARK_PARKED PARK_RETRIEVED PARK_ABANDONED".split()
)


_min_secret = min_secret
_Section = Section


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_message_bytes: int = Field(65536, ge=256)
    auth_timeout: float = Field(5.0, gt=0)
    ping_interval: float = Field(20.0, gt=0)
    #: Seconds a /ws client may send nothing before it is closed with 4009; 0: never.
    idle_timeout: float = Field(0.0, ge=0)
    client_queue_bytes: int = Field(1_048_576, ge=1024)
    max_channels: int = Field(100, ge=1)
    max_connections_per_ip: int = Field(1000, ge=1)
    #: Origins allowed to open /ws (exact "scheme://host[:port]"); empty: any origin.
    allowed_origins: list[str] = Field(default_factory=list)
    send_timeout: float = Field(30.0, gt=0)
    #: Seconds from SIGTERM to exit: leases released, clients closed, events published.
    shutdown_timeout: float = Field(10.0, gt=0)
    #: Serve the live softphone board at ``/`` (and callbridge.js, which is always served).
    board: bool = False
    #: Addresses or networks of reverse proxies whose X-Forwarded-For names the client;
    #: empty: trust none (the socket's peer is the client).
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Processes serving the one port (``SO_REUSEPORT``, Linux), each a full instance on the
    #: shared Redis; 1: this process serves alone.
    workers: int = Field(1, ge=1, le=64)
    #: Worker ``i`` also serves ``/metrics`` on ``metrics_port_base + i``; 0: only on ``port``.
    metrics_port_base: int = Field(0, ge=0, le=65535)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            try:
                if "/" in value:
                    out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
                else:
                    out.append(str(ipaddress.ip_address(value.strip())))
            except ValueError:
                raise ValueError(f"must list IP addresses or networks, got {value[:100]!r}; "
                                 "e.g. 10.0.0.5 or 10.0.0.0/8") from None
        return out

    @model_validator(mode="after")
    def _metrics_ports(self) -> ServerConfig:
        base, last = self.metrics_port_base, self.metrics_port_base + self.workers - 1
        if base and last > 65535:
            raise ValueError(f"metrics_port_base {base} with {self.workers} workers needs "
                             f"ports up to {last}, past 65535; choose a lower base")
        if base and base <= self.port <= last:
            raise ValueError(f"metrics_port_base {base} with {self.workers} worker(s) takes "
                             f"ports {base}-{last}, which holds port {self.port}; choose a "
                             "base outside it")
        return self


class BrokerConfig(_Section):
    url: str = "memory://"
    prefix: str = Field("callbridge:", max_length=100)
    history_length: int = Field(1000, ge=0)
    #: Seconds of history a resuming client may ask for; 0: no age limit.
    history_max_age: float = Field(86400.0, ge=0)
    #: Seconds an event id is remembered to drop duplicates across instances.
    dedup_window: float = Field(600.0, gt=0)
    #: Seconds between liveness probes of the broker's subscription connection.
    probe_interval: float = Field(5.0, gt=0)
    #: Events kept while the broker is unreachable; beyond it they are counted and dropped.
    buffer_events: int = Field(10_000, ge=1)
    #: Redis connections this instance opens for commands (publish, history, epochs) at most;
    #: a command that finds all of them busy waits for one, up to the connect timeout.
    pool_size: int = Field(64, ge=2, le=10_000)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        scheme = url.partition("://")[0]
        if scheme == "redis-cluster":
            _, _, password = parse_cluster_url(url)
            register(password)
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("memory", "redis", "rediss"):
            raise ValueError(
                f"must have the scheme memory://, redis://, rediss:// or redis-cluster://, "
                f"got {safe_url(url)[:100]!r}")
        if parts.scheme != "memory" and not parts.hostname:
            raise ValueError(f"must name a host, got {safe_url(url)[:100]!r}; e.g. "
                             "redis://127.0.0.1:6379/0")
        register(parts.password)
        return url

    @property
    def safe_url(self) -> str:
        """The URL with its password (if any) masked."""
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", self.url)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, (self.safe_url if key == "url" else value)


#: The ``aud`` of API tokens (:mod:`bridge.auth.tokens`; ``api_audience`` by default).
API_AUDIENCE = "callbridge-api"
#: What an API token may be granted (:data:`bridge.auth.tokens.SCOPES`).
API_SCOPES = ("calls:read", "calls:dial", "verifications:write", "admin")
#: The public-key algorithms a token of the customer's identity provider may use; HS256 is
#: callbridge's own (``jwt_secret``).
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256", "EdDSA")
_LOOPBACK_NAMES = ("localhost",)


def key_algorithm(key: object) -> str:
    """The one algorithm ``key`` verifies with: RS256 for RSA (2048 bits or more), ES256 for
    EC P-256, EdDSA for Ed25519; ValueError (a message safe to show) for any other key."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"is an RSA key of {key.key_size} bits; at least 2048 are required")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"is an EC key on {key.curve.name}; ES256 takes P-256 (secp256r1)")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError("is not an RSA, EC P-256 or Ed25519 public key")


def public_key_text(value: str) -> str:
    """The PEM text of a ``public_keys`` item: the item itself, or the file it names."""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        with open(value, encoding="utf-8") as file:
            return file.read(1 << 16)
    except OSError as exc:
        raise ValueError(f"{value[:100]!r} is neither PEM text nor a readable file "
                         f"({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{value[:100]!r} is not a PEM text file") from None


def load_public_key(pem: str) -> tuple[str, PublicKeyTypes]:
    """The algorithm and the public key of ``pem``; ValueError (safe to show) if it is not one
    callbridge verifies with (see :func:`key_algorithm`)."""
    try:
        key = serialization.load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    return key_algorithm(key), key


class RoleConfig(_Section):
    """What one role of the ``roles_claim`` grants: channel patterns (``/ws``), scopes and
    tenant patterns (the HTTP API)."""

    channels: list[str] = Field(default_factory=list)
    scopes: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)

    @field_validator("channels", "tenants")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        bad = [p for p in patterns if not is_valid_pattern(p)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a channel pattern; e.g. \"calls:acme:*\"")
        return patterns

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - set(API_SCOPES))
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a scope; one of {', '.join(API_SCOPES)}")
        return scopes


class AuthConfig(_Section):
    #: Key of callbridge's own HS256 tokens; optional (empty) with ``public_keys`` or
    #: ``jwks_url``: only the identity provider's tokens are accepted then.
    jwt_secret: SecretStr
    leeway: float = Field(5.0, ge=0)
    #: Seconds a connection may outlive its token's expiry before it is closed (renew in time).
    expiry_grace: float = Field(10.0, ge=0)
    #: Seconds a token revoked through the admin API stays refused when its expiry is unknown.
    revocation_ttl: float = Field(86400.0, gt=0)
    #: The identity provider's public keys: PEM text (e.g. "${IDP_PUBLIC_KEY}") or a PEM file
    #: path each; a key verifies with the one algorithm of its type.
    public_keys: list[str] = Field(default_factory=list)
    #: Where the identity provider publishes its keys (https://, or http:// on loopback).
    jwks_url: str = ""
    #: Seconds between two fetches of ``jwks_url``.
    jwks_refresh: float = Field(300.0, gt=0)
    #: Seconds at least between two fetches for a token whose ``kid`` is unknown.
    jwks_min_refresh: float = Field(30.0, ge=0)
    #: Seconds one fetch of ``jwks_url`` may take (and an unknown ``kid`` may wait for it).
    jwks_timeout: float = Field(5.0, gt=0)
    #: The ``iss`` the identity provider's tokens must carry; empty: not checked.
    issuer: str = ""
    #: The ``aud`` of the identity provider's ``/ws`` tokens; empty: they carry none.
    audience: str = ""
    #: The ``aud`` of the identity provider's API tokens.
    api_audience: str = Field(API_AUDIENCE, min_length=1)
    channels_claim: str = Field("channels", min_length=1)
    scopes_claim: str = Field("scopes", min_length=1)
    tenants_claim: str = Field("tenants", min_length=1)
    #: The claim listing the token's roles, each granting what ``[auth.roles]`` says; empty: off.
    roles_claim: str = ""
    roles: dict[str, RoleConfig] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _optional_secret(cls, data: Any) -> Any:
        """Without the identity provider's keys, a missing jwt_secret stays "missing"."""
        if isinstance(data, dict) and "jwt_secret" not in data \
                and (data.get("public_keys") or data.get("jwks_url")):
            return {**data, "jwt_secret": ""}
        return data

    @field_validator("jwt_secret")
    @classmethod
    def _length(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            min_secret(value, 32)
        return value

    @field_validator("public_keys")
    @classmethod
    def _public_keys(cls, items: list[str]) -> list[str]:
        for i, item in enumerate(items):
            try:
                load_public_key(public_key_text(item))
            except ValueError as exc:
                raise ValueError(f"item {i + 1} {exc}") from None
        return items

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, url: str) -> str:
        if not url:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"must be an https:// URL with a host, got {safe_url(url)[:100]!r}")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError(f"must be https:// (http:// only on a loopback host such as "
                             f"127.0.0.1), got {safe_url(url)[:100]!r}")
        return url

    @model_validator(mode="after")
    def _keys(self) -> AuthConfig:
        if not self.jwt_secret.get_secret_value() and not self.has_public_keys:
            raise ValueError("jwt_secret is empty and neither public_keys nor jwks_url is "
                             "set: no token could be checked; set one of them")
        if self.audience and self.audience == self.api_audience:
            raise ValueError(f"audience and api_audience must differ (both {self.audience!r}), "
                             "or a /ws token would open the HTTP API")
        if self.roles and not self.roles_claim:
            raise ValueError("roles are set without roles_claim; name the claim listing the "
                             "roles, e.g. roles_claim = \"roles\"")
        return self

    @property
    def has_public_keys(self) -> bool:
        return bool(self.public_keys or self.jwks_url)


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: Seconds between the INFO summaries of websocket connections opened and closed.
    summary_interval: float = Field(60.0, gt=0)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class UpstreamConfig(_Section):
    reconnect_initial: float = Field(0.5, gt=0)
    reconnect_max: float = Field(30.0, gt=0)
    auth_retry: float = Field(60.0, gt=0)
    request_timeout: float = Field(10.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    refresh_margin: float = Field(60.0, ge=0)
    refresh_jitter: float = Field(0.1, ge=0, le=0.5)
    default_lifetime: float = Field(3600.0, gt=0)
    token_unavailable_after: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> UpstreamConfig:
        if self.reconnect_max < self.reconnect_initial:
            raise ValueError(f"reconnect_max must be at least reconnect_initial, got "
                             f"{self.reconnect_max} < {self.reconnect_initial}")
        return self


class LeaseConfig(_Section):
    """Upstream stream ownership across instances (Redis brokers only)."""

    #: Seconds a lease lives without renewal: the longest a dead instance keeps its streams.
    ttl: float = Field(10.0, gt=0)
    #: Name of this instance in leases and logs; empty: hostname and process id.
    instance_id: str = Field("", max_length=100)
    #: Seconds a stopping instance keeps its streams running after releasing their leases,
    #: until another instance has them live upstream (at most half of the shutdown timeout).
    handover_timeout: float = Field(5.0, ge=0)


class StateConfig(_Section):
    """Live call state that cannot go stale: legs whose end never came are closed."""

    #: Seconds after its start a leg still in the state is closed (``closed_by: max_age``);
    #: 0: never.
    max_call_age: float = Field(14400.0, ge=0)
    #: Seconds between two sweeps of every tenant's state for legs past ``max_call_age``.
    sweep_interval: float = Field(60.0, gt=0)


class AntBuddyAccount(_Section):
    tenant: str = Field(pattern=r"^[A-Za-z0-9_.+\-]+$", max_length=64)
    oapi_url: str
    ws_url: str
    dialect: Literal["auto", "socketio-0.9", "kazoo-json", "engineio-4"] = "auto"
    app_id: str = Field(min_length=1)
    app_secret: SecretStr
    account_id: str = Field(min_length=1)
    bindings: list[str] = Field(default_factory=lambda: list(DEFAULT_BINDINGS), min_length=1)
    sip_user: str | None = None
    sip_password: SecretStr | None = None
    raw_payload: bool = False

    _length = field_validator("app_secret", "sip_password")(lambda v: _min_secret(v, 4))

    @field_validator("oapi_url", "ws_url")
    @classmethod
    def _url(cls, url: str, info: Any) -> str:
        allowed = (("http", "https") if info.field_name == "oapi_url"
                   else ("ws", "wss", "http", "https"))
        parts = urlsplit(url)
        if parts.scheme not in allowed or not parts.hostname:
            schemes = ", ".join(allowed[:-1]) + " or " + allowed[-1]
            raise ValueError(f"must be a URL with a host and the scheme {schemes}, "
                             f"got {safe_url(url)[:100]!r}")
        return url

    @model_validator(mode="after")
    def _sip_pair(self) -> AntBuddyAccount:
        if (self.sip_user is None) != (self.sip_password is None):
            given, absent = (("sip_user", "sip_password") if self.sip_password is None
                             else ("sip_password", "sip_user"))
            raise ValueError(f"{given} is set without {absent}; set both or neither")
        return self


def safe_url(url: str) -> str:
    """``url`` with its userinfo (``user:password@``), if any, masked: for messages."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if sep and "@" in authority:
        return f"{scheme}://{MASK}@{authority.rpartition('@')[2]}{slash}{path}"
    return url


class WebhookTarget(_Section):
    """One receiver of signed HTTP pushes (docs/consumers.md, "Webhooks")."""

    #: Names the target in logs, ``/readyz``, its lease, consumer group and dead letters.
    name: str = Field(pattern=TENANT, max_length=64)
    url: str
    #: Exact channel names whose events are pushed, each in its own order.
    channels: list[str] = Field(min_length=1, max_length=1000)
    #: HMAC keys, the first first; every one signs each push (one ``v1`` each) for rotation.
    secrets: list[SecretStr] = Field(min_length=1, max_length=4)
    #: Seconds one POST may take, connecting and answering included.
    timeout: float = Field(10.0, gt=0, le=300)
    #: Seconds an event is retried (from its first attempt) before it is dead-lettered.
    retry_for: float = Field(3600.0, gt=0, le=7 * 86400)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, got "
                             f"{safe_url(url)[:100]!r}")
        if "@" in parts.netloc:
            raise ValueError("must not hold credentials (user:password@), got "
                             f"{safe_url(url)[:100]!r}; receivers authenticate pushes by "
                             "their signature")
        return url

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[str]) -> list[str]:
        for channel in channels:
            if not is_valid_channel(channel):
                raise ValueError(f"{channel[:100]!r} is not a channel name; list exact names "
                                 "such as calls:acme or calls:acme:101 (no patterns)")
        for channel in channels:
            if channels.count(channel) > 1:
                raise ValueError(f"{channel[:100]!r} is listed twice; list each channel once")
        return channels

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for secret in secrets:
            register(secret.get_secret_value())
        for i, secret in enumerate(secrets):
            if len(secret.get_secret_value().encode()) < 16:
                raise ValueError(f"secrets[{i}] must be at least 16 bytes")
        return secrets

    @property
    def keys(self) -> list[bytes]:
        """The secrets as HMAC keys, in order."""
        return [s.get_secret_value().encode() for s in self.secrets]


class Config(_Section):
    server: ServerConfig = ServerConfig()
    broker: BrokerConfig = BrokerConfig()
    auth: AuthConfig
    logging: LoggingConfig = LoggingConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    lease: LeaseConfig = LeaseConfig()
    state: StateConfig = StateConfig()
    antbuddy: list[AntBuddyAccount] = []
    quickom: list[QuickomAccount] = []
    epacific: list[EPacificAccount] = []
    kompaas: list[KompaasAccount] = []
    #: Signed HTTP push targets (Redis brokers only); fixed for the life of the process.
    webhook: list[WebhookTarget] = []

    @model_validator(mode="after")
    def _unique_accounts(self) -> Config:
        seen: dict[tuple[str, str], int] = {}
        for i, acc in enumerate(self.antbuddy):
            key = (acc.tenant, acc.account_id)
            if key in seen:
                raise ValueError(
                    f"antbuddy[{i}]: repeats tenant {acc.tenant!r} with account_id "
                    f"{acc.account_id!r} of antbuddy[{seen[key]}]; one block per account"
                )
            seen[key] = i
        names: dict[str, int] = {}
        for i, target in enumerate(self.webhook):
            if target.name in names:
                raise ValueError(f"webhook[{i}]: repeats name {target.name!r} of "
                                 f"webhook[{names[target.name]}]; give each target its own name")
            names[target.name] = i
        if self.webhook and self.broker.url.startswith("memory:"):
            raise ValueError("webhook: pushes need a Redis [broker] url (their consumer "
                             "groups, leases and dead letters live there), got memory://; set "
                             "[broker] url to redis://HOST:6379/0")
        for section in ACCOUNT_SECTIONS:
            tenants: dict[str, int] = {}
            for i, block in enumerate(getattr(self, section)):
                if block.tenant in tenants:
                    raise ValueError(
                        f"{section}[{i}]: repeats tenant {block.tenant!r} of "
                        f"{section}[{tenants[block.tenant]}]; one block per tenant")
                tenants[block.tenant] = i
        return self

    @model_validator(mode="after")
    def _workers_share_redis(self) -> Config:
        if self.server.workers > 1 and self.broker.url.startswith("memory:"):
            raise ValueError(f"server.workers: {self.server.workers} workers need a Redis "
                             "[broker] url (each worker is an instance of its own; they share "
                             "events, leases and revocations there), got memory://; set "
                             "[broker] url to redis://HOST:6379/0, or [server] workers "
                             "(--workers) to 1")
        return self

    def model_dump_safe(self) -> dict[str, Any]:
        """A JSON-ready dict for display: secrets and the broker password masked."""
        data = self.model_dump(mode="json")
        data["broker"]["url"] = self.broker.safe_url
        return data


#: Every key whose value is a secret, in any section: never echoed, always registered.
_SECRET_MODELS: tuple[type[BaseModel], ...] = (AuthConfig, AntBuddyAccount, WebhookTarget,
                                               *ACCOUNT_SECTIONS.values())
_SECRET_KEYS = frozenset(
    name for model in _SECRET_MODELS
    for name, field in model.model_fields.items()
    if field.annotation in (SecretStr, SecretStr | None, list[SecretStr])
)

#: Sections written as arrays of tables, one block per provider account.
_ARRAYS: dict[str, type[Section]] = {"antbuddy": AntBuddyAccount, **ACCOUNT_SECTIONS}


def _single_sections() -> dict[str, type[_Section]]:
    sections: dict[str, type[_Section]] = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if name not in _ARRAYS and isinstance(model, type) and issubclass(model, _Section):
            sections[name] = model
    return sections


_SECTIONS = _single_sections()
