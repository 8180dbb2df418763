"""Who is calling, and the token and encryption primitives.

Tokens come from `secrets`, are stored only as SHA-256 digests and compared in constant time.
Two kinds of encryption: AES-GCM for the replay copies of 200 bodies (DATA_ENCRYPTION_KEY) and
deterministic AES-SIV for the user ids shown to BetLink (BETLINK_USER_ID_KEY). Both take a list
of keys, newest first: the first encrypts, every one decrypts, so keys rotate without downtime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from fastapi import Depends, Request
from pydantic import SecretStr

from partner_gateway.config import Settings
from partner_gateway.errors import BadRequest, BetLinkError, Unauthorized

LAUNCH_TOKEN_BYTES = 16  # 128 bits
SESSION_TOKEN_BYTES = 32  # 256 bits
NONCE_BYTES = 12


def new_token(nbytes: int) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def key_label(key: str) -> str:
    """A stable, non-reversible name for an API key, for audit rows and logs."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def match_key(presented: str | None, keys: Sequence[SecretStr]) -> str | None:
    """The label of the configured key equal to `presented`, compared in constant time.

    A match names the caller in every later log line of the request, the access line included
    (`caller`, the label: never the key)."""
    if not presented:
        return None
    candidate = presented.encode()
    found = None
    for key in keys:  # no early exit: every key is compared every time
        if hmac.compare_digest(candidate, key.get_secret_value().encode()):
            found = key.get_secret_value()
    if found is None:
        return None
    label = key_label(found)
    structlog.contextvars.bind_contextvars(caller=label)
    return label


async def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(settings_of)]


def _repeated(request: Request, names: Sequence[bytes]) -> set[bytes]:
    seen: set[bytes] = set()
    repeated: set[bytes] = set()
    for name, _ in request.headers.raw:  # ASGI header names are lower case
        if name in names:
            (repeated if name in seen else seen).add(name)
    return repeated


# A gateway that appends its verified X-User-Id instead of replacing the browser's would leave
# two; taking either one would let a player act as anyone. Headers that identify the caller
# count only when they occur exactly once, checked before anything else is looked at.
# X-User-Country and X-User-Currency are the gateway's word on the player too (a compliance
# control, a price), so the same holds for them.
_SINGLE_PLAYER_HEADERS = {
    b"x-user-id": "X-User-Id",
    b"x-user-country": "X-User-Country",
    b"x-user-currency": "X-User-Currency",
}


async def single_gateway_headers(request: Request) -> None:
    repeated = _repeated(request, (b"authorization", *_SINGLE_PLAYER_HEADERS))
    if b"authorization" in repeated:
        raise Unauthorized("Authorization must be sent exactly once")
    for name, spelled in _SINGLE_PLAYER_HEADERS.items():  # in the contract's order of checks
        if name in repeated:
            raise BadRequest(f"{spelled} must be sent exactly once")


async def single_betlink_headers(request: Request) -> None:
    repeated = _repeated(request, (b"x-api-key", b"x-idempotency-key"))
    if b"x-api-key" in repeated:
        raise BetLinkError("AUTHENTICATION_FAILED", "X-API-Key must be sent exactly once")
    if b"x-idempotency-key" in repeated:
        raise BetLinkError("MISSING_PARAMETER", "X-Idempotency-Key must be sent exactly once")


SingleGatewayHeaders = Depends(single_gateway_headers)
SingleBetLinkHeaders = Depends(single_betlink_headers)

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
# The checks each hot route awaits itself, in its own body, instead of declaring them as
# dependencies: FastAPI's solving of three dependencies was 15 % of a /betlink/session request's
# CPU (0.475 against 0.40 ms in-process, issue 21). OpenAPI reads them here (openapi.py).
RUNS_ITSELF: dict[Callable[..., Any], frozenset[Callable[..., Any]]] = {}


def runs_itself(*checks: Callable[..., Any]) -> Callable[[Endpoint], Endpoint]:
    """Mark an endpoint that awaits `checks` itself, so its OpenAPI describes their headers."""

    def mark(endpoint: Endpoint) -> Endpoint:
        RUNS_ITSELF[endpoint] = frozenset(checks)
        return endpoint

    return mark


@dataclass(frozen=True)
class Caller:
    label: str


# The identity dependencies read their headers from the request rather than through `Header()`
# parameters: FastAPI's per-parameter extraction was a tenth of a /betlink/session request's CPU.
# OpenAPI describes these headers itself (openapi.py: security schemes, X-User-Id).


async def gateway_caller(request: Request) -> Caller:
    """The casino gateway, authenticated by `Authorization: Bearer <one of GATEWAY_API_KEYS>`."""
    settings: Settings = request.app.state.settings
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    label = match_key(presented.strip(), settings.gateway_api_keys) if scheme.lower() == "bearer" else None
    if label is None:
        raise Unauthorized("missing or invalid gateway API key: send Authorization: Bearer <key>")
    return Caller(label)


GatewayCaller = Annotated[Caller, Depends(gateway_caller)]


class Sealer:
    """AES-GCM for stored copies of responses; the associated data binds a copy to its row."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._ciphers = [AESGCM(key) for key in keys]

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._ciphers[0].encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, ciphertext, context)
            except InvalidTag:
                continue
        raise ValueError("no DATA_ENCRYPTION_KEY opens this stored response")


class UserIdCipher:
    """Deterministic, reversible pseudonyms for the user ids BetLink sees (AES-SIV, base64url).

    Without keys it is the identity: BetLink sees the real id.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._ciphers = [AESSIV(key) for key in keys]

    def encrypt(self, user_id: str) -> str:
        if not self._ciphers:
            return user_id
        sealed = self._ciphers[0].encrypt(user_id.encode(), None)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def decrypt(self, value: str) -> str | None:
        """The real id behind `value`, or None when no key produced it."""
        if not self._ciphers:
            return value
        try:
            sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except ValueError:
            return None
        # One spelling per pseudonym: padding, the standard alphabet or other spare bits in the
        # last character decode to the same bytes, and would give BetLink many ids for one wallet.
        if base64.urlsafe_b64encode(sealed).rstrip(b"=").decode() != value:
            return None
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(sealed, None).decode()
            except (InvalidTag, ValueError):
                continue
        return None


MAX_USER_ID_CHARS = 128


def check_user_id(value: str) -> str:
    """The contract's rule for player ids: 1 to 128 characters, no control characters."""
    if not 1 <= len(value) <= MAX_USER_ID_CHARS:
        raise BadRequest(f"user id must be 1 to {MAX_USER_ID_CHARS} characters")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise BadRequest("user id must not contain control characters")
    return value


async def player_id(request: Request) -> str:
    """The player on whose behalf the gateway calls, decoded from the raw header as UTF-8."""
    raw = next((value for name, value in request.headers.raw if name == b"x-user-id"), None)
    if raw is None:
        raise BadRequest("missing X-User-Id header")
    try:
        return check_user_id(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("X-User-Id must be UTF-8") from None


PlayerId = Annotated[str, Depends(player_id)]
