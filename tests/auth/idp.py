"""An identity provider for the tests: keys made in the test, tokens signed with them, and a
JWKS served over real HTTP on 127.0.0.1 that can rotate its keys or stop answering."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any, AsyncIterator

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.http.serving import AppServer

ISSUER = "https://id.example.test/"


def private_key(alg: str) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def jwk(key: Any, alg: str, kid: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    data: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


def sign(key: Any, alg: str, claims: dict[str, Any], *, kid: str | None = None,
         ttl: float = 600) -> str:
    now = time.time()
    body = {"iss": ISSUER, "sub": "agent-7", "iat": int(now), "exp": int(now + ttl),
            "jti": uuid.uuid4().hex, **claims}
    body = {name: value for name, value in body.items() if value is not None}  # None: left out
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


class Provider:
    """Signing keys by kid, and the JWKS of those published (:meth:`publish`)."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[Any, str]] = {}
        self.published: list[str] = []
        self.down = False
        self.requests = 0

    def add(self, kid: str, alg: str = "RS256", *, publish: bool = True) -> None:
        self.keys[kid] = (private_key(alg), alg)
        if publish:
            self.published.append(kid)

    def publish(self, *kids: str) -> None:
        self.published = list(kids)

    def token(self, kid: str, **claims: Any) -> str:
        key, alg = self.keys[kid]
        return sign(key, alg, claims, kid=kid)

    def document(self) -> dict[str, Any]:
        return {"keys": [jwk(self.keys[k][0], self.keys[k][1], k) for k in self.published]}

    async def _jwks(self, request: Request) -> Response:
        self.requests += 1
        if self.down:
            return Response("down for maintenance", status_code=503)
        return Response(json.dumps(self.document()), media_type="application/json")

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve the JWKS; yields its URL."""
        async with AppServer(Starlette(routes=[Route("/jwks", self._jwks)])) as server:
            yield f"{server.url}/jwks"
