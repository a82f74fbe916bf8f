"""``callbridge bench chaos``: load and combined faults on real processes, checked from outside.

A run starts a private ``redis-server``, the AntBuddy simulator and several ``callbridge serve``
instances, connects many websocket clients from worker processes, and then, while call traffic
flows, injects faults in a seeded random order, overlapping: Redis killed and restarted (empty or
with its data), instances killed or stopped and started again, reconnect storms, slow clients,
upstream drops, token expiries, pub/sub connections killed by Redis, revocations. Afterwards it
checks the promises of docs/protocol.md and docs/operations.md against what the clients saw and
what the simulator sent, never against callbridge's own counters (:mod:`bridge.bench.chaos.check`).
"""
