"""The ASGI app and its server: /ws, the API, health, metrics and static files."""
