"""callbridge's HTTP API: provider calls and webhooks, described by a served OpenAPI document."""
