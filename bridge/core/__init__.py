"""One running instance: pipeline, AntBuddy streams, backends, and the service that owns them."""
