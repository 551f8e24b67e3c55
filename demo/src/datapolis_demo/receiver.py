"""The partners' side: a webhook receiver that verifies every Standard
Webhooks signature, and the demo's issuer of subject tokens (the residents'
identity provider), whose public keys consent fetches."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Standard Webhooks: refuse timestamps further than this from our clock.
TOLERANCE_S = 300


def verify_signature(secret: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    """True when a `v1,` entry of webhook-signature is the HMAC-SHA256 of
    `{id}.{timestamp}.{body}` keyed with the whsec_ secret, and the timestamp
    is recent."""
    message_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not message_id or not timestamp.isdigit() or abs(now - int(timestamp)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in headers.get("webhook-signature", "").split():
        scheme, _, signature = entry.partition(",")
        if scheme == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


@dataclass(frozen=True)
class ReceiverAddress:
    """Where the receiver listens, and the URL the platform reaches it at:
    the base of its webhook URLs and of its token issuer. On one machine
    both are the loopback; in a cluster it listens on every interface and
    notify and consent call it by its Service's name."""

    host: str
    port: int
    public_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ReceiverAddress:
        port = int(environ.get("DEMO_PORT", "8090"))
        host = environ.get("DEMO_HOST") or "127.0.0.1"
        public_url = environ.get("DEMO_PUBLIC_URL") or f"http://127.0.0.1:{port}"
        return cls(host, port, public_url.rstrip("/"))


@dataclass
class Arrival:
    at: float  # time.monotonic() when the request arrived
    event: dict[str, Any]


@dataclass
class Hook:
    secret: str | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    verified: int = 0
    invalid: int = 0


class Receiver:
    """POST /hooks/<run>/<name>: a hook of this run; any other run's is gone
    (410), so notify disables the endpoints of earlier runs."""

    def __init__(self, run: str, issuer: SubjectIssuer) -> None:
        self.run = run
        self.issuer = issuer
        self.hooks: dict[str, Hook] = {}
        self.app = web.Application()
        self.app.router.add_post("/hooks/{run}/{name}", self._hook)
        self.app.router.add_get("/subjects/jwks.json", self._jwks)
        self._runner: web.AppRunner | None = None

    def url(self, base: str, name: str) -> str:
        self.hooks.setdefault(name, Hook())
        return f"{base}/hooks/{self.run}/{name}"

    def expect(self, name: str, secret: str) -> None:
        self.hooks.setdefault(name, Hook()).secret = secret

    @property
    def invalid(self) -> int:
        return sum(hook.invalid for hook in self.hooks.values())

    @property
    def verified(self) -> int:
        return sum(hook.verified for hook in self.hooks.values())

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        hook = self.hooks.get(request.match_info["name"])
        if request.match_info["run"] != self.run or hook is None:
            return web.Response(status=410, text="this demo run is over")
        body = await request.read()
        arrived = time.monotonic()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if hook.secret is None or not verify_signature(hook.secret, headers, body, time.time()):
            hook.invalid += 1
            return web.Response(status=401, text="signature does not verify")
        hook.verified += 1
        document = json.loads(body)
        events = document if isinstance(document, list) else [document]
        hook.arrivals.extend(Arrival(arrived, event) for event in events)
        return web.Response(status=204)

    async def _jwks(self, _: web.Request) -> web.Response:
        return web.json_response(self.issuer.jwks())


class SubjectIssuer:
    """The residents' identity provider in the demo: an Ed25519 key kept in
    the demo's state folder, so tokens verify across runs."""

    AUDIENCE = "datapolis-consent"

    def __init__(self, key_file: Path, issuer: str) -> None:
        self.issuer = issuer
        if key_file.exists():
            loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError(f"{key_file} is not an Ed25519 key")
            self.key = loaded
        else:
            self.key = Ed25519PrivateKey.generate()
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_bytes(
                self.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            key_file.chmod(0o600)
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        # RFC 7638 thumbprint as the key id.
        canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": self.x}, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).digest()
        self.kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": self.x,
                    "kid": self.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }

    def token(self, subject: str, dataset: str, lifetime_s: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.AUDIENCE,
            "sub": subject,
            "dataset": dataset,
            "iat": now,
            "exp": now + lifetime_s,
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})
