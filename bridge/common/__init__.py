"""Small helpers every layer uses: redaction, retry delays and jitter, logging, recent ids,
a histogram, strict field parsing."""
