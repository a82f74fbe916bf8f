"""The /ws side: protocol, sessions, resume, fan-out (hub) and per-client buffers (link)."""
