"""The end-to-end fixtures of tests/scenarios: the simulator and the bridge, for real."""

from __future__ import annotations

from tests.scenarios.conftest import start_bridge, start_simulator

__all__ = ["start_bridge", "start_simulator"]
