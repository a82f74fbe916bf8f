"""What a reload changes, computed from two configurations (pure code)."""

from __future__ import annotations

from typing import Any

from bridge.config.changes import diff
from bridge.config.model import Config

SECRET = "changes-test-secret-0123456789abcdef"
KOMPAAS = [{"tenant": "kx", "api_token": "token-0001", "webhook_secret": "hook-0001"}]


def config(accounts: list[dict[str, Any]], **sections: Any) -> Config:
    return Config.model_validate({"auth": {"jwt_secret": SECRET}, "antbuddy": accounts,
                                  **sections})


def block(account: str, tenant: str = "acme", **extra: Any) -> dict[str, Any]:
    return {"tenant": tenant, "oapi_url": "http://oapi.test", "ws_url": "ws://ws.test",
            "app_id": "app", "app_secret": "app-secret-1", "account_id": account, **extra}


def test_blocks_are_named_by_stream_and_compared_whole_secrets_included():
    old = config([block("a"), block("b"), block("c")], kompaas=KOMPAAS)
    new = config([block("a"), block("b", app_secret="app-secret-2"), block("d")], kompaas=KOMPAAS)
    changes = diff(old, new)
    antbuddy = changes.sections["antbuddy"]
    assert antbuddy.added == ("antbuddy/acme/d",)
    assert antbuddy.removed == ("antbuddy/acme/c",)
    assert antbuddy.changed == ("antbuddy/acme/b",)
    assert antbuddy.unchanged == ("antbuddy/acme/a",)
    assert changes.sections["kompaas"].unchanged == ("kompaas/kx",)
    assert changes.applies_anything and changes.restart_needed == ()
    assert changes.config.antbuddy == new.antbuddy
    assert "app-secret" not in str(changes.as_dict()) + changes.summary()
    assert changes.summary() == "antbuddy +1 -1 ~1 =1, kompaas +0 -0 ~0 =1"


def test_fixed_sections_are_reported_and_keep_their_running_values():
    old = config([block("a")])
    new = config([block("a")], server={"port": 9999}, logging={"level": "DEBUG"},
                 auth={"jwt_secret": SECRET[::-1]}, lease={"ttl": 3.0})
    changes = diff(old, new)
    assert changes.restart_needed == ("server", "auth", "logging", "lease")
    assert not changes.applies_anything
    assert changes.config.server == old.server and changes.config.auth == old.auth
    assert changes.config.logging.level == "INFO"
    assert changes.summary().endswith("restart needed for [server] [auth] [logging] [lease]")


def test_a_changed_webhook_target_needs_a_restart() -> None:
    base = {"auth": {"jwt_secret": "s" * 32}, "broker": {"url": "redis://127.0.0.1:6379/0"}}
    target = {"name": "crm", "url": "https://crm.example/hook", "channels": ["calls:acme"],
              "secrets": ["k" * 16]}
    old = Config.model_validate({**base, "webhook": [target]})
    new = Config.model_validate({**base, "webhook": [{**target, "url": "https://crm.example/v2"}]})
    changes = diff(old, new)
    assert changes.restart_needed == ("webhook",)
    assert changes.config.webhook == old.webhook, "the running targets stay"
    assert "restart needed for [webhook]" in changes.summary()
