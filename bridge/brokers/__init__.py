"""Brokers: the contract every backend keeps (:mod:`bridge.brokers.base`), the backends
(``memory``, ``redis/``), and what wraps any of them (``continuity``, ``resilient``). The backend
a URL selects is chosen by :func:`bridge.core.backends.from_url`."""
