"""The Redis backends: redis:// and redis-cluster://, their wire format and subscriptions."""
