"""BidPaw's open-session call: one signed GET, bounded in time and size, mapped to our errors.

The contract's rules, all enforced here:
- `GET {BIDPAW_API_URL}/api/casino/open-session/?clientId=..&nick=..&userId=..&lang=..&currency=..
  &country=..&gameId=..&allowedCountries=..`, parameters in exactly that order (those without a
  value left out; `gameId` always there), each percent-encoded as UTF-8, with the `sign` of
  exactly those parameters and `content-type: application/json; charset=UTF-8`;
- one overall deadline, BIDPAW_TIMEOUT_SECONDS, retries included (httpx's read timeout is per
  chunk, so a server that drips bytes would otherwise hold the call open indefinitely);
- retries only when the request cannot have reached BidPaw (the connection was refused or
  failed before anything was sent), with jittered exponential backoff, re-signed every time;
- redirects are not followed; the body is read up to MAX_BODY_BYTES and no further;
- success only for 200 with a JSON object whose `iframeURL` is an absolute https URL (http only
  when BIDPAW_API_URL is http, for local sandboxes). Everything else is a 502; a deadline passed
  after BidPaw accepted the connection is a 504.

Nothing secret leaves this module: error details and the log line name the outcome, BidPaw's
status and the latency, never the secret, the `sign` or the iframe URL (its query carries
BidPaw's session token). When an answer other than 200 carries BidPaw's JSON `message` (its 400s
say why: `Required parameters missing: gameId`, ...), the log line has it too, as
`bidpaw_message`: control characters removed, the secret and every `sign` sent cut out, at most
MAX_MESSAGE_CHARS characters. The caller's 502 detail never repeats it.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from partner_gateway.bidpaw import signing
from partner_gateway.config import Settings
from partner_gateway.errors import BadGateway, GatewayTimeout
from partner_gateway.logs import get_logger
from partner_gateway.metrics import BIDPAW_CALLS, BIDPAW_LATENCY

QueryParams = list[tuple[str, str]]

OPEN_SESSION_PATH = "/api/casino/open-session/"
CONTENT_TYPE = "application/json; charset=UTF-8"
MAX_BODY_BYTES = 64 * 1024
MAX_ERROR_BODY_BYTES = 16 * 1024  # an error answer is read this far for its `message`, no further
MAX_MESSAGE_CHARS = 200
MAX_IFRAME_URL_CHARS = 8192
MAX_ATTEMPTS = 4
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 1.0

logger = get_logger("partner_gateway.bidpaw")


class Outcome(StrEnum):
    OK = "ok"
    REJECTED = "rejected"  # BidPaw answered 4xx
    SERVER_ERROR = "server_error"  # BidPaw answered 5xx
    UNREACHABLE = "unreachable"  # no attempt got a connection
    CONNECTION_LOST = "connection_lost"  # the connection failed after the request may have been sent
    INVALID_RESPONSE = "invalid_response"  # an unexpected status, not JSON, no usable iframeURL, oversize
    TIMEOUT = "timeout"  # BidPaw accepted the connection but did not answer within the deadline
    CANCELLED = "cancelled"  # our caller went away first
    ERROR = "error"  # a bug of ours


class BidPawBadGateway(BadGateway):
    """BidPaw rejected, failed, could not be reached or answered something unusable.

    `bidpaw_message` is BidPaw's own `message`, sanitised, for the log line only.
    """

    def __init__(self, outcome: Outcome, detail: str, *, bidpaw_message: str | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.bidpaw_message = bidpaw_message


class BidPawTimeout(GatewayTimeout):
    """BidPaw accepted the connection but did not answer within BIDPAW_TIMEOUT_SECONDS."""

    outcome = Outcome.TIMEOUT


def open_session_params(
    *,
    client_id: str,
    user_id: str,
    nick: str | None,
    game_id: str,
    lang: str | None = None,
    currency: str | None = None,
    country: str | None = None,
    allowed_countries: Sequence[str] = (),
) -> QueryParams:
    """The parameters in the contract's order; one without a value is left out (not signed either).

    `currency`, `country` and `allowed_countries` go out upper-case; `gameId` is always there.
    """
    candidates = [
        ("clientId", client_id),
        ("nick", nick),
        ("userId", user_id),
        ("lang", lang),
        ("currency", currency.upper() if currency else None),
        ("country", country.upper() if country else None),
        ("gameId", game_id),
        ("allowedCountries", ",".join(code.upper() for code in allowed_countries)),
    ]
    # clientId, userId and gameId are never empty: the settings and X-User-Id's rules see to it.
    return [(name, value) for name, value in candidates if value]


def encode_query(params: QueryParams) -> str:
    """`k=v&...` in the given order, every byte outside RFC 3986's unreserved set percent-encoded.

    Built by hand rather than with httpx's `params=`, so the order is the signed order and httpx
    has nothing left to re-encode.
    """
    return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in params)


@dataclass
class _Attempts:
    """What happened so far in one call; fed by httpcore's trace events."""

    count: int = 0
    connected: bool = False  # the current attempt has a TCP connection: BidPaw may see the request
    status: int | None = None
    signs: list[str] = field(default_factory=list)  # every `sign` sent, to keep them out of logs

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        # A new connection reports connect_tcp; a reused keep-alive connection reports only the
        # sending of the request headers.
        if event == "connection.connect_tcp.complete" or event.endswith(".send_request_headers.started"):
            self.connected = True


def _backoff() -> Iterator[float]:
    """Exponential delays with jitter in [d/2, d], so callers refused together spread out."""
    delay = BACKOFF_FIRST_SECONDS
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(delay * 2, BACKOFF_MAX_SECONDS)


NEEDED_SETTINGS = "BIDPAW_API_URL, BIDPAW_CLIENT_ID, BIDPAW_SECRET_KEY, BIDPAW_GAME_ID"


class BidPawClient:
    """The one client for BidPaw, around the app's shared `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient, *, settings: Settings) -> None:
        if not (
            settings.bidpaw_api_url
            and settings.bidpaw_client_id
            and settings.bidpaw_secret_key
            and settings.bidpaw_game_id
        ):
            raise ValueError(f"BidPaw is not configured ({NEEDED_SETTINGS})")
        self._http = http
        self._base_url = settings.bidpaw_api_url.rstrip("/")
        self._client_id = settings.bidpaw_client_id
        self._secret: SecretStr = settings.bidpaw_secret_key
        self.game_id = settings.bidpaw_game_id
        self._allowed_countries = tuple(settings.bidpaw_allowed_countries)
        self._budget = settings.bidpaw_timeout_seconds
        self._schemes = {"https", "http"} if self._base_url.startswith("http://") else {"https"}

    async def open_session(
        self,
        *,
        user_id: str,
        nick: str | None,
        lang: str | None = None,
        currency: str | None = None,
        country: str | None = None,
    ) -> str:
        """BidPaw's iframeURL for the player; BidPawBadGateway (502) or BidPawTimeout (504) otherwise.

        The values are text as HTTP delivers it (no lone surrogates), already checked by the
        endpoint; `gameId` and `allowedCountries` come from the settings.
        """
        params = open_session_params(
            client_id=self._client_id,
            user_id=user_id,
            nick=nick,
            lang=lang,
            currency=currency,
            country=country,
            game_id=self.game_id,
            allowed_countries=self._allowed_countries,
        )
        attempts = _Attempts()
        started = time.perf_counter()
        outcome, detail, message = Outcome.ERROR, None, None
        try:
            iframe_url = await self._call(params, attempts)
            outcome = Outcome.OK
            return iframe_url
        except BidPawBadGateway as exc:
            outcome, detail, message = exc.outcome, exc.detail, exc.bidpaw_message
            raise
        except BidPawTimeout as exc:
            outcome, detail = exc.outcome, exc.detail
            raise
        except asyncio.CancelledError:
            outcome = Outcome.CANCELLED
            raise
        finally:
            _report(outcome, attempts, time.perf_counter() - started, detail, message)

    async def _call(self, params: QueryParams, attempts: _Attempts) -> str:
        try:
            async with asyncio.timeout(self._budget):
                status, body = await self._send_with_retries(params, attempts)
        except TimeoutError:
            raise _past_deadline(attempts, self._budget) from None
        if status != 200:
            secrets = [self._secret.get_secret_value(), *attempts.signs]
            raise _not_ok(status, bidpaw_message(body, secrets=secrets))
        return _iframe_url(body, schemes=self._schemes)

    async def _send_with_retries(self, params: QueryParams, attempts: _Attempts) -> tuple[int, bytes]:
        delays = _backoff()
        while True:
            attempts.count += 1
            attempts.connected = False
            try:
                return await self._send(params, attempts)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # Refused, reset or failed during connect or TLS: nothing was sent, so a retry
                # cannot make BidPaw open two sessions. (A TLS failure comes after connect_tcp.)
                attempts.connected = False
                if attempts.count >= MAX_ATTEMPTS:
                    raise BidPawBadGateway(
                        Outcome.UNREACHABLE, f"BidPaw could not be reached ({attempts.count} attempts)"
                    ) from None
            await asyncio.sleep(next(delays))

    async def _send(self, params: QueryParams, attempts: _Attempts) -> tuple[int, bytes]:
        url = f"{self._base_url}{OPEN_SESSION_PATH}?{encode_query(params)}"
        headers = {
            "sign": signing.sign(params=params, secret=self._secret.get_secret_value()),
            "content-type": CONTENT_TYPE,
        }
        attempts.signs.append(headers["sign"])
        try:
            async with self._http.stream(
                "GET", url, headers=headers, follow_redirects=False, extensions={"trace": attempts.trace}
            ) as response:
                attempts.status = response.status_code
                if response.status_code != 200:
                    # Read only for BidPaw's `message`: a short prefix, never an error itself.
                    return response.status_code, await _read_prefix(response, MAX_ERROR_BODY_BYTES)
                return response.status_code, await _read_capped(response)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise
        except httpx.TimeoutException:
            raise TimeoutError from None  # a per-phase httpx timeout: the same as our deadline
        except httpx.DecodingError:
            raise _invalid("BidPaw's answer could not be decoded") from None
        except httpx.TransportError as exc:
            # Read, write or protocol errors: the request may have reached BidPaw, so no retry.
            detail = f"the connection to BidPaw failed ({type(exc).__name__})"
            raise BidPawBadGateway(Outcome.CONNECTION_LOST, detail) from None


async def _read_capped(response: httpx.Response) -> bytes:
    """The body, or BidPawBadGateway as soon as it exceeds MAX_BODY_BYTES (nothing more is read)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(body)


async def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    """The body when it fits in `limit` bytes, else b"" (a cut JSON document has no message)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return b""
    return bytes(body)


def _invalid(detail: str) -> BidPawBadGateway:
    return BidPawBadGateway(Outcome.INVALID_RESPONSE, detail)


def _too_large() -> BidPawBadGateway:
    return _invalid(f"BidPaw's answer is larger than {MAX_BODY_BYTES} bytes")


def _past_deadline(attempts: _Attempts, budget: float) -> BidPawBadGateway | BidPawTimeout:
    if attempts.connected:
        return BidPawTimeout(f"BidPaw did not answer within {budget:g} s")
    # Every attempt so far was refused, or the connect itself hung: BidPaw never had the request.
    return BidPawBadGateway(
        Outcome.UNREACHABLE, f"BidPaw could not be reached within {budget:g} s ({attempts.count} attempts)"
    )


def _not_ok(status: int, message: str | None) -> BidPawBadGateway:
    """What an answer other than 200 means for us; BidPaw's own message goes to the log only."""
    if 400 <= status < 500:
        detail, outcome = f"BidPaw rejected the request (HTTP {status})", Outcome.REJECTED
    elif status >= 500:
        detail, outcome = f"BidPaw failed (HTTP {status})", Outcome.SERVER_ERROR
    else:
        detail, outcome = f"BidPaw answered HTTP {status} instead of 200", Outcome.INVALID_RESPONSE
    return BidPawBadGateway(outcome, detail, bidpaw_message=message)


# Removed from BidPaw's message before it is logged: control and format characters (a newline
# or a bidi override would forge or hide log text), line and paragraph separators, and lone
# surrogates (not encodable).
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def bidpaw_message(body: bytes, *, secrets: Sequence[str]) -> str | None:
    """BidPaw's `message` from an error body, fit for a log line; None when there is none.

    Control characters go first, then every occurrence of a secret (the SECRET_KEY, a `sign`
    sent), then everything past MAX_MESSAGE_CHARS characters: a cut never leaves part of a secret.
    """
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    message = document.get("message") if isinstance(document, dict) else None
    if not isinstance(message, str):
        return None
    text = "".join(char for char in message if unicodedata.category(char) not in _UNPRINTABLE)
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text[:MAX_MESSAGE_CHARS]


def _iframe_url(body: bytes, *, schemes: set[str]) -> str:
    """The iframeURL of a 200 answer, or the BidPawBadGateway that describes what is wrong."""
    document = _json(body)
    if not isinstance(document, dict):
        raise _invalid("BidPaw's answer is not a JSON object")
    url = document.get("iframeURL")
    if not isinstance(url, str):
        raise _invalid("BidPaw's answer has no iframeURL string")
    if not _is_absolute_url(url, schemes):
        wanted = " or ".join(sorted(schemes, reverse=True))
        raise _invalid(f"BidPaw's iframeURL is not an absolute {wanted} URL")
    return url


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: 64 KiB of `[`
        raise _invalid("BidPaw's answer is not JSON") from None


# Whitespace, control characters and backslashes: browsers "repair" such URLs in ways that differ.
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\\ud800-\udfff]")  # controls, space, \, lone surrogates


def _is_absolute_url(url: str, schemes: set[str]) -> bool:
    if len(url) > MAX_IFRAME_URL_CHARS or _UNSAFE_URL_CHARS.search(url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname)


def _report(
    outcome: Outcome, attempts: _Attempts, seconds: float, detail: str | None, message: str | None
) -> None:
    """The call's one log line and its metrics: outcome, BidPaw's status and message, latency;
    nothing secret."""
    BIDPAW_CALLS.labels(outcome.value).inc()
    BIDPAW_LATENCY.labels(outcome.value).observe(seconds)
    log = logger.info if outcome is Outcome.OK else logger.warning
    log(
        "bidpaw.open_session",
        outcome=outcome.value,
        bidpaw_status=attempts.status,
        attempts=attempts.count,
        latency_ms=round(seconds * 1000, 1),
        detail=detail,
        bidpaw_message=message,
    )
