"""AntBuddy's signal path: connection, dialects, session loop, tokens, Kazoo normalization."""
