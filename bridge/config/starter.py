"""The starter configuration ``callbridge init`` writes: every section, one comment per key.

Keys a first configuration sets are written as values; the others are commented out with their
default, so a file written today follows the defaults of a later version. The provider and
webhook blocks are commented out whole, ready to uncomment. Secrets are never literal: they
are ``"${NAME}"`` placeholders the loader fills from the environment variable ``NAME``.
tests/cli/test_init_check.py holds this text to the schema: its keys, sections and defaults.
"""

from __future__ import annotations

import re

#: The default file name, in the working directory.
DEFAULT_PATH = "callbridge.toml"

TEXT = """\
# callbridge configuration (docs/configuration.md describes every key).
#
# Secrets are never written here: a value "${NAME}" is read from the environment variable NAME.
# A CALLBRIDGE__SECTION__KEY variable overrides any key (CALLBRIDGE__SERVER__PORT=9000).
# Commented keys show their default. Check the file with: callbridge check --config FILE

[server]
host = "127.0.0.1"                    # address to listen on ("0.0.0.0": every interface)
port = 8080                           # port to listen on (0: any free port)
board = false                         # serve the live softphone board at /
# max_message_bytes = 65536           # largest client message accepted
# auth_timeout = 5.0                  # seconds a new /ws client has to send its token
# ping_interval = 20.0                # seconds between pings and heartbeats to each client
# idle_timeout = 0.0                  # seconds a client may send nothing (0: no limit)
# client_queue_bytes = 1048576        # send buffer per client; a slower client is closed
# max_channels = 100                  # channels one connection may hold
# max_connections_per_ip = 1000       # open /ws connections from one address
# allowed_origins = []                # browser origins allowed on /ws ([]: any)
# trusted_proxies = []                # reverse proxies whose X-Forwarded-For is believed
# send_timeout = 30.0                 # seconds one blocked send may take
# shutdown_timeout = 10.0             # seconds from SIGTERM to exit
# workers = 1                         # processes sharing the port, Linux (docs/operations.md)
# metrics_port_base = 0               # worker i's own /metrics on this + i (0: none)

[broker]
url = "memory://"                     # memory:// (one process) or redis://host:6379/0
prefix = "callbridge:"                # prepended to every Redis key and channel
# history_length = 1000               # events kept per channel for resuming clients
# history_max_age = 86400.0           # seconds back a client may resume (0: no limit)
# dedup_window = 600.0                # seconds an event id is remembered against repeats
# probe_interval = 5.0                # seconds between checks of the Redis subscription
# buffer_events = 10000               # events held while Redis is unreachable
# pool_size = 64                      # Redis connections for commands, at most

[auth]
jwt_secret = "${JWT_SECRET}"          # key of client tokens: 32 characters or more
# leeway = 5.0                        # seconds of clock skew tolerated on token times
# expiry_grace = 10.0                 # seconds a connection may outlive its token
# revocation_ttl = 86400.0            # seconds a revoked token of unknown expiry stays refused
# Tokens from your identity provider, checked with its public keys (docs/configuration.md):
# public_keys = []                    # PEM text ("${IDP_PUBLIC_KEY}") or PEM file paths
# jwks_url = ""                       # where it publishes its keys (https://)
# jwks_refresh = 300.0                # seconds between two fetches of jwks_url
# jwks_min_refresh = 30.0             # seconds at least between fetches for an unknown kid
# jwks_timeout = 5.0                  # seconds one fetch may take
# issuer = ""                         # the iss its tokens must carry ("": not checked)
# audience = ""                       # the aud of its /ws tokens ("": none)
# api_audience = "callbridge-api"     # the aud of its API tokens
# channels_claim = "channels"         # claim listing a /ws token's channel patterns
# scopes_claim = "scopes"             # claim listing an API token's scopes
# tenants_claim = "tenants"           # claim listing an API token's tenants
# roles_claim = ""                    # claim listing roles, each granting what roles says
# roles = {}                          # role -> grants: { supervisor = { channels = ["calls:a"] } }

[logging]
level = "INFO"                        # DEBUG, INFO, WARNING, ERROR or CRITICAL
# summary_interval = 60.0             # seconds between websocket connection summaries

[upstream]
# reconnect_initial = 0.5             # first reconnect delay, seconds (doubling)
# reconnect_max = 30.0                # largest reconnect delay, seconds
# auth_retry = 60.0                   # seconds between attempts after refused credentials
# request_timeout = 10.0              # seconds one oapi request may take
# connect_timeout = 10.0              # seconds to open the call-signal websocket
# refresh_margin = 60.0               # refresh a token this long before it expires
# refresh_jitter = 0.1                # plus up to this fraction of its lifetime, at random
# default_lifetime = 3600.0           # token lifetime assumed when the oapi gives none
# token_unavailable_after = 30.0      # seconds of failed refreshes before giving up

[lease]
# ttl = 10.0                          # seconds a dead instance keeps its streams (Redis)
# instance_id = ""                    # this instance's name ("": hostname and process id)
# handover_timeout = 5.0              # seconds a stopping instance waits for a successor

[state]
# max_call_age = 14400.0              # seconds after which a call never ended is closed
# sweep_interval = 60.0               # seconds between looks for such calls

# One [[antbuddy]] block per AntBuddy account: uncomment, then set its secrets.
# [[antbuddy]]
# tenant = "acme"                     # names the channels: calls:acme, calls:acme:<ext>
# oapi_url = "https://oapi.antbuddy.com"   # the oapi base URL
# ws_url = "https://ws.antbuddy.com:5557"  # the call-signal websocket server
# dialect = "auto"                    # auto, socketio-0.9, kazoo-json or engineio-4
# app_id = "your-app-id"              # the oapi app id
# app_secret = "${ANTBUDDY_APP_SECRET}"    # the oapi app secret
# account_id = "your-account-id"      # the Kazoo account whose calls are followed
# raw_payload = false                 # add the provider's payload to each event
# sip_user = "1001"                   # SIP user sent with the token request (optional)
# sip_password = "${ANTBUDDY_SIP_PASSWORD}"  # its password (set both or neither)
# bindings = ["call.CHANNEL_CREATE.*", "call.CHANNEL_DESTROY.*"]  # default: every call event

# One [[quickom]] block per Quickom enterprise (webhooks at /webhooks/quickom/<tenant>).
# [[quickom]]
# tenant = "acme"                     # names the channels and the webhook path
# api_url = "https://api.quickom.com" # the Quickom API
# api_key = "${QUICKOM_API_KEY}"      # sent as Authorization to the Quickom API
# signing_secret = "${QUICKOM_SIGNING_SECRET}"  # HMAC key of the webhooks' Signature
# backfill_interval = 300.0           # seconds between polls for missed webhooks
# backfill_limit = 50                 # calls asked for per poll (1..50)
# max_body_bytes = 65536              # largest webhook body accepted
# request_id_window = 86400.0         # seconds a webhook request_id is remembered

# One [[epacific]] block per ePacific (ccall.vn) account, polled for CDRs and presence.
# [[epacific]]
# tenant = "acme"                     # names the channels calls:acme and presence:acme
# api_url = "https://api.ccall.vn"    # the ePacific API
# api_key = "${EPACIFIC_API_KEY}"     # sent with every request
# api_secret = "${EPACIFIC_API_SECRET}"  # sent with every request
# poll_interval = 60.0                # seconds between CDR polls
# presence_interval = 15.0            # seconds between polls of the online extensions
# timezone = "Asia/Ho_Chi_Minh"       # the provider's time zone (IANA name)
# date_format = "%Y-%m-%d %H:%M"      # format of its date_range bounds
# page_limit = 100                    # CDRs per page
# initial_lookback = 3600.0           # seconds the first poll reaches back
# settle_window = 3600.0              # seconds a CDR may appear after its call started

# One [[kompaas]] block per Kompaas account (webhooks at /webhooks/kompaas/<tenant>).
# [[kompaas]]
# tenant = "acme"                     # names the channel verifications:acme
# api_url = "https://paidmethods.kompaas.tech"  # the paid-methods API
# api_token = "${KOMPAAS_API_TOKEN}"  # bearer token of the confirmation-call API
# webhook_secret = "${KOMPAAS_WEBHOOK_SECRET}"  # the secret the webhook must present
# verification_timeout = 120.0        # seconds before a verification ends as timed out
# field_uuid = "verification_call_uuid"  # where the webhook body has the verification id
# field_q931 = "q931_status"          # where it has the Q.931 cause code
# field_final = "final_status"        # where it has the final status

# One [[webhook]] block per HTTP push target (needs a redis:// [broker] url).
# [[webhook]]
# name = "crm"                        # names the target in logs and /readyz
# url = "https://crm.example.com/hooks/callbridge"  # where events are POSTed
# channels = ["calls:acme"]           # exact channel names whose events are pushed
# secrets = ["${WEBHOOK_SECRET}"]     # HMAC keys of the signature, 16 bytes or more
# timeout = 10.0                      # seconds one POST may take
# retry_for = 3600.0                  # seconds an event is retried, then dead-lettered
"""

_PLACEHOLDER = re.compile(r'"\$\{([A-Za-z_][A-Za-z0-9_]*)\}"')
_KEY_LINE = re.compile(r"^(# )?[a-z0-9_]+ = ")


def variables(text: str = TEXT) -> tuple[list[str], list[str]]:
    """The environment variables ``text`` reads: (by its active keys, by its commented ones)."""
    active: list[str] = []
    commented: list[str] = []
    for line in filter(_KEY_LINE.match, text.splitlines()):
        target = commented if line.startswith("#") else active
        for name in _PLACEHOLDER.findall(line):
            if name not in target:
                target.append(name)
    return active, commented
