"""The simulated AntBuddy call history: records built from the Kazoo signals of finished calls.

Feed :meth:`CallHistory.observe` every signal the simulator generates (it has the ``emit``
signature of :class:`bridge.simulator.traffic.Traffic`; the simulator's ``emit`` sends each
signal both to the hub and here). A call becomes one record, in the provider's documented
shape, when its A-leg (the leg whose ``Call-ID`` is the ``Bridge-ID``) is destroyed.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from bridge.upstream.kazoo import canonical, get

MAX_RECORDS = 100_000
#: Kazoo hangup cause -> status_detail
STATUSES = {"NORMAL_CLEARING": "SUCCESS", "USER_BUSY": "BUSY", "ORIGINATOR_CANCEL": "CANCELLED",
            "NO_ANSWER": "IVR"}


class CallHistory:
    def __init__(self, did_number: str = "02873019555", size: int = MAX_RECORDS) -> None:
        self.did_number = did_number
        #: (account id, Kazoo A-leg call id, record), oldest first
        self.records: deque[tuple[str, str, dict[str, Any]]] = deque(maxlen=size)
        self._starts: dict[str, int] = {}  # A-leg call id -> creation (Unix seconds)

    def observe(self, account_id: str, name: str, payload: dict[str, Any]) -> None:
        p = canonical(payload)
        call_id = str(p.get("call_id"))
        if call_id != str(get(p, "custom_channel_vars", "bridge_id")):
            return  # a B-leg
        if name == "CHANNEL_CREATE":
            if len(self._starts) < MAX_RECORDS:
                self._starts[call_id] = int(p["msg_id"]) // 1_000_000
        elif name == "CHANNEL_DESTROY":
            start = self._starts.pop(call_id, None)
            if start is not None:
                self.records.append((account_id, call_id, self._record(p, start)))

    def add(self, account_id: str, record: dict[str, Any], call_id: str = "") -> None:
        """Add a record directly (tests and demos of calls that produced no signals)."""
        self.records.append((account_id, call_id, record))

    def query(self, start: int, end: int,
              accounts: set[str] | None = None) -> list[dict[str, Any]]:
        """Records with ``start <= unix_timestamp <= end``, oldest first."""
        found = [r for a, _, r in self.records if start <= r["unix_timestamp"] <= end
                 and (accounts is None or a in accounts)]
        return sorted(found, key=lambda r: r["unix_timestamp"])

    def recordings(self) -> set[str]:
        return {r["recording"] for _, _, r in self.records if r.get("recording")}

    def _record(self, p: dict[str, Any], start: int) -> dict[str, Any]:
        inception = get(p, "custom_channel_vars", "inception")
        caller = _party(str(p.get("caller_id_number")), inception != "offnet")
        callee = _party(str(p.get("callee_id_number")), inception != "onnet")
        status = STATUSES.get(str(p.get("hangup_cause")), "ERROR")
        return {
            "caller": caller, "callee": callee,
            "class": "one_one" if inception is None else "trunking",
            "did_number": self.did_number if inception == "offnet" else None,
            "direction": "to_ab" if inception == "offnet" else "from_ab",
            "status_detail": status,
            "duration_seconds": int(p.get("duration_seconds") or 0),
            "unix_timestamp": start,
            "billing_seconds": int(p.get("billing_seconds") or 0) if status == "SUCCESS" else 0,
            "recording": f"call_recording_{p['call_id']}.mp3" if status == "SUCCESS" else "",
        }


def _party(number: str, internal: bool) -> dict[str, str]:
    if internal:
        return {"number": number, "type": "user", "username": f"user{number}"}
    return {"number": number, "type": "realnumber"}


Emit = Callable[[str, str, dict[str, Any]], Any]
