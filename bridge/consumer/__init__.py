"""Back-end consumers of callbridge's channels, reading Redis directly with the same guarantees
as ``/ws``: follow channels from a saved position (:mod:`~bridge.consumer.follow`), share a
channel's events between workers (:mod:`~bridge.consumer.groups`)."""
