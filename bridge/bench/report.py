"""Results: machine description, medians across runs, JSON and a printed table."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from typing import Any

import orjson


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/meminfo") as f:
            info["memory_kb"] = int(f.readline().split()[1])
        with open("/proc/cpuinfo") as f:
            model = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if model:
            info["processor"] = model[0]
    except OSError:
        pass
    return info


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median of every numeric metric present in all ``runs``."""
    if not runs:
        return {}
    keys = [k for k, v in runs[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and all(isinstance(r.get(k), (int, float)) for r in runs)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def result(scenario: str, command: str, params: dict[str, Any],
           per_target: dict[str, list[dict[str, Any]]], headline: list[str]) -> dict[str, Any]:
    targets = {name: {"runs": runs, "median": medians(runs)} for name, runs in per_target.items()}
    return {"scenario": scenario, "command": command, "machine": machine(), "params": params,
            "headline": headline, "targets": targets}


def dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def table(data: dict[str, Any]) -> str:
    """The headline metrics' medians, one row per target."""
    cols = data["headline"]
    rows = [["target", *cols]]
    for name, t in data["targets"].items():
        rows.append([name, *(_fmt(t["median"].get(c)) for c in cols)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols) + 1)]
    runs = max((len(t["runs"]) for t in data["targets"].values()), default=0)
    lines = [f"{data['scenario']}: {data['command']}", f"runs per target: {runs} (medians shown)"]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"{c}: {LEGEND[c]}" for c in cols if c in LEGEND]
    return "\n".join(lines)


#: What the columns that need it mean, printed under the table.
LEGEND = {
    "server_cpu_us_per_frame": "server CPU microseconds per frame delivered (all its processes)",
    "clients_cpu_s": "CPU seconds of the client worker processes, which share the machine: "
                     "when it nears the cores left over, the clients bound the figures",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)
