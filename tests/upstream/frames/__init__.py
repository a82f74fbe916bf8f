"""Recorded upstream payloads: Kazoo 3.x (Title-Case, numbers as strings) and 4.x (snake_case)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> dict[str, Any]:
    data = json.loads((HERE / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data
