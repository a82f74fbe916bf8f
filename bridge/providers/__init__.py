"""Providers other than the AntBuddy signal stream: webhooks, pollers, REST calls.

Each provider lives in its own subpackage and implements :class:`bridge.providers.base.Provider`.
"""
