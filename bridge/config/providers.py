"""Configuration blocks of the providers (``[[quickom]]``, ``[[epacific]]``, ``[[kompaas]]``).

Kept apart from :mod:`bridge.config.model` so each provider's package can read its own settings
without importing the whole configuration. Every key is documented in docs/configuration.md.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

TENANT = r"^[A-Za-z0-9_.+\-]+$"


def min_secret(value: SecretStr | None, length: int) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < length:
        raise ValueError(f"must be at least {length} characters")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        shown = value.rpartition("@")[2] if "@" in value else value  # no credentials
        raise ValueError(f"must be an http:// or https:// URL, got {shown[:100]!r}")
    return value.rstrip("/")


class QuickomAccount(Section):
    tenant: str = Field(pattern=TENANT, max_length=64)
    #: Base URL of the Quickom API (``/api/enterprise/...`` is appended).
    api_url: str = "https://api.quickom.com"
    api_key: SecretStr
    #: HMAC-SHA256 key of the ``Signature`` header of webhooks.
    signing_secret: SecretStr
    #: Seconds between backfill polls of ``/api/enterprise/call/new`` (0: only at start).
    backfill_interval: float = Field(300.0, ge=0)
    backfill_limit: int = Field(50, ge=1, le=50)
    #: Largest webhook body accepted, in bytes.
    max_body_bytes: int = Field(65536, ge=1024)
    #: Seconds a webhook ``request_id`` is remembered to drop repeats.
    request_id_window: float = Field(86400.0, gt=0)

    _url = field_validator("api_url")(lambda v: _http_url(v))
    _secrets = field_validator("api_key", "signing_secret")(lambda v: min_secret(v, 8))


class EPacificAccount(Section):
    tenant: str = Field(pattern=TENANT, max_length=64)
    api_url: str = "https://api.ccall.vn"
    api_key: SecretStr
    api_secret: SecretStr
    #: Seconds between CDR polls.
    poll_interval: float = Field(60.0, gt=0)
    #: Seconds between polls of the registered (online) extensions.
    presence_interval: float = Field(15.0, gt=0)
    #: The provider's time zone, for its ``YYYY-MM-DD HH:mm`` dates (IANA name).
    timezone: str = "Asia/Ho_Chi_Minh"
    #: strftime format of ``date_range`` bounds.
    date_format: str = "%Y-%m-%d %H:%M"
    page_limit: int = Field(100, ge=1, le=1000)
    #: How far back the first poll (with no saved cursor) reaches, in seconds.
    initial_lookback: float = Field(3600.0, ge=0)
    #: Seconds a CDR may appear after its call started (each poll re-reads this far back).
    settle_window: float = Field(3600.0, gt=0)

    _url = field_validator("api_url")(lambda v: _http_url(v))
    _secrets = field_validator("api_key", "api_secret")(lambda v: min_secret(v, 4))


class KompaasAccount(Section):
    tenant: str = Field(pattern=TENANT, max_length=64)
    api_url: str = "https://paidmethods.kompaas.tech"
    #: Bearer token of the confirmation-call API.
    api_token: SecretStr
    #: Shared secret the webhook must present (the provider documents no signature).
    webhook_secret: SecretStr
    #: Seconds after which a verification with no outcome ends as timed out.
    verification_timeout: float = Field(120.0, gt=0)
    #: Where the outcome fields sit in the customer's webhook body template (dotted paths).
    field_uuid: str = "verification_call_uuid"
    field_q931: str = "q931_status"
    field_final: str = "final_status"

    _url = field_validator("api_url")(lambda v: _http_url(v))
    _secrets = field_validator("api_token", "webhook_secret")(lambda v: min_secret(v, 8))


ACCOUNT_SECTIONS: dict[str, type[Section]] = {
    "quickom": QuickomAccount,
    "epacific": EPacificAccount,
    "kompaas": KompaasAccount,
}
