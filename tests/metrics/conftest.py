"""The end-to-end fixtures of tests/integration: the simulator and the bridge, for real."""

from __future__ import annotations

from tests.integration.conftest import start_bridge, start_simulator

__all__ = ["start_bridge", "start_simulator"]
