"""JSON Web Tokens: client tokens for /ws and API tokens, both pure code."""
