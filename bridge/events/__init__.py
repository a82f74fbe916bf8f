"""The normalized event and channel names: pure code, the schema of docs/events.md."""
