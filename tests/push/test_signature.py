"""The push signature, pure: signing, verifying, rotation, tampering, stale timestamps; and the
receiver's snippet of the Webhooks documentation, run as written."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.push.signature import digest, parse, sign, verify

OLD, NEW = b"old-secret-0123456789", b"new-secret-9876543210"
BODY = b'{"type":"event","channel":"calls:acme","epoch":"e1","offset":"1-0","event":{"id":"x"}}'
ROOT = Path(__file__).resolve().parents[2]


def test_the_header_has_t_then_one_v1_per_secret_in_order():
    header = sign(BODY, [OLD, NEW], 1_700_000_000)
    assert header == (f"t=1700000000,v1={digest(OLD, 1_700_000_000, BODY)},"
                      f"v1={digest(NEW, 1_700_000_000, BODY)}")
    assert re.fullmatch(r"t=\d+(,v1=[0-9a-f]{64}){2}", header)
    assert parse(header) == (1_700_000_000, [digest(OLD, 1_700_000_000, BODY),
                                             digest(NEW, 1_700_000_000, BODY)])


def test_a_signature_verifies_with_its_secret_and_not_with_another():
    header = sign(BODY, [OLD], 1000)
    assert verify(BODY, header, [OLD], now=1000)
    assert not verify(BODY, header, [NEW], now=1000)


def test_rotation_each_listed_secret_verifies_on_its_own():
    header = sign(BODY, [OLD, NEW], 1000)
    assert verify(BODY, header, [OLD], now=1000)
    assert verify(BODY, header, [NEW], now=1000)


def test_a_tampered_body_or_signature_fails():
    header = sign(BODY, [OLD], 1000)
    assert not verify(BODY.replace(b'"x"', b'"y"'), header, [OLD], now=1000)
    assert not verify(BODY + b" ", header, [OLD], now=1000)
    forged = header[:-1] + ("0" if header[-1] != "0" else "1")
    assert not verify(BODY, forged, [OLD], now=1000)
    # The timestamp is signed: moving it forward to look fresh breaks the signature.
    assert not verify(BODY, header.replace("t=1000", "t=2000"), [OLD], now=2000)


def test_a_stale_or_future_timestamp_fails():
    header = sign(BODY, [OLD], 1000)
    assert verify(BODY, header, [OLD], now=1300)
    assert not verify(BODY, header, [OLD], now=1301)
    assert not verify(BODY, header, [OLD], now=699)
    assert verify(BODY, header, [OLD], now=1059, tolerance=60)


@pytest.mark.parametrize("header", ["", "t=1000", "v1=abc", "t=abc,v1=abc", "garbage,,,"])
def test_a_malformed_header_is_refused_never_raised(header):
    assert not verify(BODY, header, [OLD], now=1000)


def test_unknown_schemes_are_skipped():
    header = sign(BODY, [OLD], 1000) + ",v2=whatever"
    assert verify(BODY, header, [OLD], now=1000)


def test_signing_needs_a_secret():
    with pytest.raises(ValueError):
        sign(BODY, [], 1000)


# -- the documented receiver -------------------------------------------------------------------

def _documented_verify() -> Callable[..., bool]:
    """The ``verify`` of the Webhooks section of docs/consumers.md, as written."""
    text = (ROOT / "docs" / "consumers.md").read_text().split("## Webhooks", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    snippet = next(b for b in blocks if "def verify(" in b)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "webhooks-doc", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["verify"]  # type: ignore[no-any-return]


def test_the_documented_receiver_accepts_what_callbridge_signs():
    receiver = _documented_verify()
    now = int(time.time())
    assert receiver(BODY, sign(BODY, [OLD], now), OLD)
    assert receiver(BODY, sign(BODY, [OLD, NEW], now), NEW), "rotation: the new secret alone"
    assert receiver(BODY, sign(BODY, [OLD, NEW], now), OLD)


def test_the_documented_receiver_refuses_tampering_other_secrets_and_stale_requests():
    receiver = _documented_verify()
    now = int(time.time())
    assert not receiver(BODY + b" ", sign(BODY, [OLD], now), OLD)
    assert not receiver(BODY, sign(BODY, [OLD], now), NEW)
    assert not receiver(BODY, sign(BODY, [OLD], now - 301), OLD)
    assert not receiver(BODY, sign(BODY, [OLD], now + 301), OLD)
    assert receiver(BODY, sign(BODY, [OLD], now - 250), OLD)
    assert not receiver(BODY, "", OLD)
    assert not receiver(BODY, "t=,v1=", OLD)
