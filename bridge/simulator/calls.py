"""Realistic Kazoo call flows, as the switch would send them. Pure: the caller supplies the
random generator and the start time.

A call has two legs, each its own channel with its own events, the way Kazoo reports them:

- the A-leg (``Call-Direction: inbound``) is the caller's side: the phone that dialled, or the
  carrier trunk for a call from outside;
- the B-leg (``Call-Direction: outbound``) rings the callee: a phone, or a carrier trunk for a
  call to an outside number.

Legs are linked by ``Other-Leg-Call-ID`` (on every B-leg event, and on A-leg events once the
B-leg exists) and ``Custom-Channel-Vars.Bridge-ID`` (the A-leg's call id, on both legs).
Payloads use Kazoo's Title-Case keys with native types (integers), as Kazoo 4.x has them
before a dialect encodes them. A leg that belongs to an extension carries its ``Presence-ID``
(``<extension>@<realm>``) and ``Custom-Channel-Vars.Username``; a carrier leg has neither.
Calls that involve a carrier carry ``Custom-Channel-Vars.Inception``: ``offnet`` for calls
from outside, ``onnet`` for calls placed by an extension to an outside number.

Every time is planned in whole microseconds, so ``Msg-ID`` is exactly the planned time, and
the ``*-Seconds`` of ``CHANNEL_DESTROY`` are the leg's planned spans, truncated to seconds.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from bridge.upstream.kazoo import GREGORIAN_OFFSET


class Outcome(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CANCELLED = "cancelled"  # the caller hangs up while the callee's phone rings


#: How often each outcome happens when plan_call chooses.
OUTCOME_WEIGHTS: dict[Outcome, float] = {
    Outcome.ANSWERED: 0.62,
    Outcome.NO_ANSWER: 0.18,
    Outcome.BUSY: 0.08,
    Outcome.CANCELLED: 0.12,
}
HOLD_PROBABILITY = 0.2

#: (Hangup-Cause, Hangup-Code) of both legs for each outcome.
HANGUPS: dict[Outcome, tuple[str, str]] = {
    Outcome.ANSWERED: ("NORMAL_CLEARING", "sip:200"),
    Outcome.BUSY: ("USER_BUSY", "sip:486"),
    Outcome.NO_ANSWER: ("NO_ANSWER", "sip:480"),
    Outcome.CANCELLED: ("ORIGINATOR_CANCEL", "sip:487"),
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a call: an extension of the account, or an outside number."""

    number: str
    name: str | None = None
    internal: bool = True


class PlannedSignal(NamedTuple):
    at: float  # Unix seconds; equals int(payload["Msg-ID"]) / 1e6
    name: str  # Kazoo event name
    payload: dict[str, Any]


@dataclass
class _Leg:
    call_id: str
    direction: str  # Kazoo Call-Direction
    owner: Endpoint  # whose leg it is: the caller's (A) or the callee's (B)
    created: int = 0  # µs
    answered: int | None = None


def plan_call(
    rng: random.Random,
    *,
    start: float,
    account_id: str,
    realm: str,
    caller: Endpoint,
    callee: Endpoint,
    outcome: Outcome | None = None,
    hold: bool | None = None,
    scale: float = 1.0,
) -> list[PlannedSignal]:
    """Every signal of one call, sorted by time, the first at ``start`` (Unix seconds).

    ``outcome`` and ``hold`` (answered calls only) are drawn from ``rng`` when None. ``scale``
    multiplies every planned delay (ring, talk, hold and the switch's small gaps); the same
    ``rng`` state gives the same flow at any scale, only faster. At least one endpoint must be
    internal.
    """
    if not (caller.internal or callee.internal):
        raise ValueError("a simulated call needs at least one internal endpoint")
    if scale <= 0:
        raise ValueError("scale must be positive")
    # Draw everything first, in a fixed order, so that a flow does not depend on its options.
    drawn_outcome = rng.choices(list(OUTCOME_WEIGHTS), weights=list(OUTCOME_WEIGHTS.values()))[0]
    drawn_hold = rng.random() < HOLD_PROBABILITY
    a_id, b_id = _call_id(rng), _call_id(rng)
    setup = rng.uniform(0.05, 0.3)  # dial plan lookup before the B-leg exists
    ring = rng.uniform(3.0, 18.0)
    busy = rng.uniform(0.3, 1.5)
    no_answer = rng.choice((20.0, 25.0, 30.0))  # typical ring timeouts
    talk = min(max(rng.expovariate(1 / 90), 4.0), 600.0)
    hold_at, hold_for = rng.uniform(0.2, 0.6), rng.uniform(5.0, 40.0)
    holder_is_caller = rng.random() < 0.5
    caller_hangs_up = rng.random() < 0.5
    gaps = [rng.uniform(0.01, 0.08) for _ in range(3)]  # the switch's own delays

    outcome = drawn_outcome if outcome is None else Outcome(outcome)
    hold = drawn_hold if hold is None else hold
    inception: str | None = None
    if not caller.internal:
        inception = "offnet"
    elif not callee.internal:
        inception = "onnet"

    def us(seconds: float) -> int:
        return max(1, round(seconds * scale * 1_000_000))

    a = _Leg(a_id, "inbound", caller)
    b = _Leg(b_id, "outbound", callee)
    ctx = _Context(account_id, realm, caller, callee, a, b, inception)
    t = round(start * 1_000_000)
    out = [ctx.signal(t, "CHANNEL_CREATE", a, linked=False)]
    a.created = t
    t += us(setup)
    b.created = t
    out.append(ctx.signal(t, "CHANNEL_CREATE", b))

    if outcome is Outcome.ANSWERED:
        t += us(ring)
        b.answered = t
        out.append(ctx.signal(t, "CHANNEL_ANSWER", b))
        t += us(gaps[0])
        a.answered = t
        out.append(ctx.signal(t, "CHANNEL_ANSWER", a))
        t += us(gaps[1])
        out.append(ctx.signal(t, "CHANNEL_BRIDGE", a))
        talk_start = t
        if hold:
            holder = a if holder_is_caller else b
            t = talk_start + us(talk * hold_at)
            out.append(ctx.signal(t, "CHANNEL_HOLD", holder))
            t += us(min(hold_for, talk * (1 - hold_at) / 2))
            out.append(ctx.signal(t, "CHANNEL_UNHOLD", holder))
        t = max(t, talk_start + us(talk))
        first, second = (a, b) if caller_hangs_up else (b, a)
    elif outcome is Outcome.BUSY:
        t += us(busy)
        first, second = b, a
    elif outcome is Outcome.NO_ANSWER:
        t += us(no_answer)
        first, second = b, a
    else:
        t += us(ring)
        first, second = a, b

    cause, code = HANGUPS[outcome]
    out.append(ctx.destroy(t, first, cause, code))
    t += us(gaps[2])
    out.append(ctx.destroy(t, second, cause, code))
    return out


def _call_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class _Context:
    account_id: str
    realm: str
    caller: Endpoint
    callee: Endpoint
    a: _Leg
    b: _Leg
    inception: str | None

    def signal(self, at_us: int, name: str, leg: _Leg, *, linked: bool = True) -> PlannedSignal:
        other = self.b if leg is self.a else self.a
        ccv: dict[str, Any] = {"Account-ID": self.account_id, "Bridge-ID": self.a.call_id}
        payload: dict[str, Any] = {
            "Event-Category": "call_event",
            "Event-Name": name,
            "Call-ID": leg.call_id,
            "Call-Direction": leg.direction,
            "Caller-ID-Number": self.caller.number,
            "Caller-ID-Name": self.caller.name or self.caller.number,
            "Callee-ID-Number": self.callee.number,
            "Callee-ID-Name": self.callee.name or self.callee.number,
            "From": f"{self.caller.number}@{self.realm}",
            "To": f"{self.callee.number}@{self.realm}",
            "Request": f"{self.callee.number}@{self.realm}",
            "Timestamp": at_us // 1_000_000 + GREGORIAN_OFFSET,
            "Msg-ID": str(at_us),
            "Custom-Channel-Vars": ccv,
        }
        if leg.owner.internal:
            payload["Presence-ID"] = f"{leg.owner.number}@{self.realm}"
            ccv["Username"] = leg.owner.number
        if self.inception is not None:
            ccv["Inception"] = self.inception
        if linked:
            payload["Other-Leg-Call-ID"] = other.call_id
        return PlannedSignal(at_us / 1_000_000, name, payload)

    def destroy(self, at_us: int, leg: _Leg, cause: str, code: str) -> PlannedSignal:
        signal = self.signal(at_us, "CHANNEL_DESTROY", leg)
        answered = leg.answered if leg.answered is not None else at_us
        signal.payload.update(
            {
                "Hangup-Cause": cause,
                "Hangup-Code": code,
                "Duration-Seconds": (at_us - leg.created) // 1_000_000,
                "Billing-Seconds": (at_us - answered) // 1_000_000,
                "Ringing-Seconds": (answered - leg.created) // 1_000_000,
            }
        )
        return signal
