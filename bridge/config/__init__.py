"""The configuration: its model, loading a file with environment overrides, and what
changed between two."""
