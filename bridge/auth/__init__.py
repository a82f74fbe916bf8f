"""JSON Web Tokens: callbridge's own HS256 client and API tokens, and the identity provider's
tokens checked with its public keys (configured, or fetched from its JWKS by ``jwks``, the one
module here that does I/O)."""
