"""Live call state: what each channel's events say is happening now (pure code)."""
