"""Scraping ``/metrics`` over HTTP and reading it back with prometheus_client's own parser."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: Sample names each metric type exposes, from its family name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


@dataclass
class Scrape:
    base_url: str
    text: str
    content_type: str
    #: (sample name, sorted label items) -> value
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    #: family name -> type
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly ``labels``; fails the test when it is absent."""
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, f"{name}{labels} not exposed"
        return self.samples[key]

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """``{label value: sample value}`` for every sample of ``name``."""
        out: dict[str, float] = {}
        for (sample, items), value in self.samples.items():
            if sample == name:
                out[dict(items)[label]] = value
        return out

    def label_values(self) -> set[str]:
        return {v for (_, items) in self.samples for _, v in items}

    def exposable(self) -> set[str]:
        """Every sample name the exposed families may carry, samples or not."""
        return {family + suffix for family, kind in self.types.items()
                for suffix in _SUFFIXES[kind]}


async def scrape(base_url: str) -> Scrape:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        response = await http.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return Scrape(base_url, response.text, response.headers["content-type"], samples, types)
