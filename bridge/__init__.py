"""callbridge: realtime call-signal bridge."""

__version__ = "0.1.0"
