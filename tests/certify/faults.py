"""The real service with one fault injected per request: a deliberately broken deployment.

`python -m tests.certify.faults PORT` serves the app (settings from the environment, as `serve`)
wrapped in `FaultInjector`. A request carrying `X-Certify-Fault: <check id>` (the header is
removed before the app sees it) gets the broken behaviour that that check must catch; every
other request is the service's own answer. So one process serves many certify runs at once,
each with its own fault, and each run must fail exactly the check its fault names.

The injector remembers what it has seen (launch tokens issued, keys answered, blocks), so a fault
fires on a *situation* (a used token, a blocked player's session), not on the check's name.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FAULT_HEADER = b"x-certify-fault"
AUTHENTICATE = "/betlink/authenticate"
INTROSPECT = "/betlink/sessions/introspect"
OPEN_SESSION = "/bidpaw/open-session"
UUID_LENGTH = 36
IDENTITY_HEADERS = frozenset({b"authorization", b"x-user-id", b"x-api-key", b"x-idempotency-key"})


@dataclass
class Exchange:
    """One request and the answer that will be sent, which a fault may rewrite."""

    method: str
    path: str
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes
    status: int = 0
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response: bytes = b""

    @property
    def headers(self) -> dict[str, str]:
        return {name.decode(): value.decode("latin-1") for name, value in self.raw_headers}

    def set_header(self, name: str, value: str) -> None:
        """Every copy of the header gets `value` (a request may carry one twice)."""
        key, new = name.encode(), value.encode("latin-1")
        if key not in dict(self.raw_headers):
            self.raw_headers.append((key, new))
        self.raw_headers = [(k, new if k == key else v) for k, v in self.raw_headers]

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def answer(self) -> Any:
        try:
            return json.loads(self.response)
        except ValueError:
            return None

    def sent(self, name: str) -> Any:
        body = self.json
        return body.get(name) if isinstance(body, dict) else None

    def is_auth(self) -> bool:
        return self.method == "POST" and self.path == AUTHENTICATE

    def error_code(self) -> Any:
        answer = self.answer
        return answer.get("errorCode") if isinstance(answer, dict) else None

    def answer_json(self, status: int, body: Any, content_type: str = "application/json") -> None:
        self.status, self.response = status, json.dumps(body).encode()
        self.response_headers = [
            (name, value)
            for name, value in self.response_headers
            if name not in (b"content-length", b"content-type")
        ] + [(b"content-type", content_type.encode())]

    def betlink_error(self, status: int, code: str) -> None:
        self.answer_json(
            status, {"status": "FAILED_AUTHENTICATION", "errorCode": code, "errorMessage": "fault"}
        )

    def problem(self, status: int) -> None:
        body = {"type": "about:blank", "title": "fault", "status": status, "detail": "fault"}
        self.answer_json(status, body, "application/problem+json")


@dataclass
class Seen:
    """What the service has answered so far, keyed by tokens, keys and players."""

    issued: dict[str, tuple[str, float]] = field(default_factory=dict)  # launch token: player, when
    exchanged: dict[str, bytes] = field(default_factory=dict)  # launch token: its 200 body
    first_answer: dict[str, tuple[Any, int, bytes]] = field(
        default_factory=dict
    )  # key: request, status, body
    key_uses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    token_keys: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sessions: dict[str, str] = field(default_factory=dict)  # operatorSessionToken: player
    blocked: set[str] = field(default_factory=set)

    def player_of_path(self, path: str) -> str:
        return unquote(path.removeprefix("/players/").removesuffix("/block"))


@dataclass
class Arrival:
    """The state at the moment a request arrived (before the service answered it)."""

    key_uses: int = 0
    exchanged_before: bool = False
    others_in_flight: int = 0
    was_blocked: bool = False


Fault = Callable[[Seen, Arrival, Exchange], None]


class FaultInjector:
    def __init__(self, app: ASGIApp, *, betlink_key: str, operator_id: str, launch_token_ttl: float) -> None:
        self.app = app
        self.betlink_key = betlink_key
        self.operator_id = operator_id
        self.ttl = launch_token_ttl
        self.seen = Seen()
        self.before: dict[str, Callable[[Exchange], None]] = {
            "auth.api_key": self._accept_any_api_key,
            "auth.operator_id": self._ignore_operator_id,
            "auth.repeated_headers": take_first_copy,
            "bidpaw.repeated_player_headers": take_first_player_header,
        }
        self.after: dict[str, Fault] = {**AFTER_FAULTS, "auth.expired_token": self._accept_expired}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fault = next((v.decode() for k, v in scope["headers"] if k == FAULT_HEADER), None)
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != FAULT_HEADER]}
        exchange = Exchange(
            scope["method"],
            scope["path"],
            list(scope["headers"]),
            await _read_body(receive),
        )
        if fault in self.before:
            self.before[fault](exchange)
            scope["headers"] = exchange.raw_headers
        arrival = self._arrive(exchange)
        try:
            await self.app(scope, _replay(exchange.body), _capture(exchange))
        finally:
            self._leave(exchange)
        self._record(exchange)
        if fault in self.after:
            self.after[fault](self.seen, arrival, exchange)
        await _send(send, exchange)

    # --- bookkeeping ---

    def _arrive(self, ex: Exchange) -> Arrival:
        seen, token, key = self.seen, ex.sent("launchToken"), ex.headers.get("x-idempotency-key")
        arrival = Arrival()
        if ex.is_auth() and isinstance(token, str) and key is not None:
            seen.key_uses[key] += 1
            seen.token_keys[token].add(key)
            seen.in_flight[token] += 1
            arrival = Arrival(seen.key_uses[key], token in seen.exchanged, seen.in_flight[token] - 1)
        if ex.path.startswith("/players/"):
            arrival.was_blocked = seen.player_of_path(ex.path) in seen.blocked
        return arrival

    def _leave(self, ex: Exchange) -> None:
        token = ex.sent("launchToken")
        if ex.is_auth() and isinstance(token, str) and "x-idempotency-key" in ex.headers:
            self.seen.in_flight[token] -= 1

    def _record(self, ex: Exchange) -> None:
        seen, answer = self.seen, ex.answer
        if ex.path == "/betlink/session" and ex.status == 201:
            seen.issued[answer["launchToken"]] = (ex.headers["x-user-id"], time.monotonic())
        key = ex.headers.get("x-idempotency-key")
        if ex.is_auth() and key is not None:
            seen.first_answer.setdefault(key, (ex.json, ex.status, ex.response))
            if ex.status == 200:
                seen.exchanged.setdefault(ex.sent("launchToken"), ex.response)
                player = seen.issued.get(ex.sent("launchToken"), ("", 0.0))[0]
                seen.sessions[answer["operatorSessionToken"]] = player
        if ex.path.startswith("/players/") and ex.status == 204:
            player = seen.player_of_path(ex.path)
            (seen.blocked.add if ex.method == "PUT" else seen.blocked.discard)(player)

    # --- faults that need the service's configuration ---

    def _accept_any_api_key(self, ex: Exchange) -> None:
        if ex.is_auth() and "x-api-key" in ex.headers:
            ex.set_header("x-api-key", self.betlink_key)

    def _ignore_operator_id(self, ex: Exchange) -> None:
        body = ex.json
        operator = body.get("operatorId") if isinstance(body, dict) else None
        if ex.is_auth() and isinstance(operator, str) and operator != self.operator_id:
            ex.body = json.dumps({**body, "operatorId": self.operator_id}).encode()
            ex.set_header("content-length", str(len(ex.body)))

    def _accept_expired(self, seen: Seen, arrival: Arrival, ex: Exchange) -> None:
        issued = seen.issued.get(ex.sent("launchToken"))
        if ex.is_auth() and ex.status == 401 and issued and time.monotonic() - issued[1] > self.ttl:
            if not arrival.exchanged_before:
                ex.betlink_error(400, "INVALID_USER")


def take_first_copy(ex: Exchange, only: frozenset[bytes] = IDENTITY_HEADERS) -> None:
    """A proxy or framework that keeps one copy of a repeated header, so the service never sees two."""
    names: set[bytes] = set()
    kept = []
    for name, value in ex.raw_headers:
        if name not in names or name not in only:
            names.add(name)
            kept.append((name, value))
    ex.raw_headers = kept


def take_first_player_header(ex: Exchange) -> None:
    take_first_copy(ex, frozenset({b"x-user-country", b"x-user-currency"}))


# --- faults on the answer, one per check ---------------------------------------------------------


def _stored_200(seen: Seen, ex: Exchange) -> None:
    ex.status, ex.response = 200, seen.exchanged.get(ex.sent("launchToken"), b'{"status":"AUTHENTICATED"}')


def wrong_code_for_bad_idempotency_key(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    key = ex.headers.get("x-idempotency-key")
    if ex.is_auth() and key is not None and len(key) != UUID_LENGTH and ex.status == 400:
        ex.betlink_error(500, "GENERAL_EXCEPTION")


def accept_non_digit_timestamp(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    stamp = ex.sent("authRequestedTimestamp")
    if ex.is_auth() and isinstance(stamp, str) and not stamp.isdigit() and ex.status == 400:
        ex.betlink_error(401, "INVALID_SESSION")


def replay_key_for_another_token(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    first = seen.first_answer.get(ex.headers.get("x-idempotency-key", "-"))
    if ex.is_auth() and ex.status == 403 and first and first[1] == 200:
        if first[0].get("launchToken") != ex.sent("launchToken"):
            ex.status, ex.response = 200, first[2]


def wrong_code_for_unknown_token(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.is_auth() and ex.status == 401 and ex.sent("launchToken") not in seen.issued:
        ex.betlink_error(400, "INVALID_USER")


def exchange_used_token_again(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    # Only a token presented after its exchange was answered, with nothing else in flight: the
    # losers of a parallel race are the other check's business. A loser of that race can still
    # arrive after the winner's answer, with nothing in flight, so the situation alone is not
    # enough on a loaded machine: the request must also not come from a concurrent run
    # (certify's X-Request-ID, `certify-<check>-<n>`, names the check that sent it).
    sequential = not ex.headers.get("x-request-id", "").startswith("certify-idempotency.parallel")
    if (
        ex.is_auth()
        and ex.status == 401
        and sequential
        and arrival.exchanged_before
        and arrival.others_in_flight == 0
    ):
        if len(seen.token_keys[ex.sent("launchToken")]) == 2:
            _stored_200(seen, ex)


def wrong_code_for_wrong_user(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.is_auth() and ex.error_code() == "INVALID_USER":
        ex.betlink_error(401, "INVALID_SESSION")


def wrong_code_for_blocked_player(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.is_auth() and ex.error_code() == "USER_BLOCKED":
        ex.betlink_error(401, "INVALID_SESSION")


def drop_redirect_url(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.is_auth() and ex.status == 200:
        ex.answer_json(200, {k: v for k, v in ex.answer.items() if k != "redirectUrl"})


def echo_new_request_id_on_replay(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    first = seen.first_answer.get(ex.headers.get("x-idempotency-key", "-"))
    if ex.is_auth() and ex.status == 200 and first and first[0].get("requestId") != ex.sent("requestId"):
        ex.answer_json(200, {**ex.answer, "requestId": ex.sent("requestId")})


def replay_key_for_another_user(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    first = seen.first_answer.get(ex.headers.get("x-idempotency-key", "-"))
    if ex.is_auth() and ex.status == 403 and first and first[1] == 200:
        if first[0].get("userId") != ex.sent("userId"):
            ex.status, ex.response = 200, first[2]


def store_failures(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    first = seen.first_answer.get(ex.headers.get("x-idempotency-key", "-"))
    if ex.is_auth() and arrival.key_uses > 1 and first and first[1] != 200:
        ex.status, ex.response = first[1], first[2]


def new_token_for_duplicates(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.is_auth() and ex.status == 200 and arrival.key_uses >= 3:
        ex.answer_json(200, {**ex.answer, "operatorSessionToken": secrets.token_urlsafe(32)})


def let_racing_keys_win(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.is_auth() and ex.status == 401 and len(seen.token_keys[ex.sent("launchToken")]) >= 3:
        _stored_200(seen, ex)


def wrong_expiry_on_introspection(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == INTROSPECT and isinstance(ex.answer, dict) and ex.answer.get("active"):
        ex.answer_json(200, {**ex.answer, "sessionExpiry": str(int(ex.answer["sessionExpiry"]) + 3_600_000)})


def verbose_unknown_introspection(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == INTROSPECT and ex.sent("operatorSessionToken") not in seen.sessions:
        ex.answer_json(200, {"active": False, "userId": None})


def blocked_session_stays_active(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    player = seen.sessions.get(ex.sent("operatorSessionToken"))
    if ex.path == INTROSPECT and player in seen.blocked:
        ex.answer_json(200, {"active": True, "userId": player, "sessionExpiry": "0"})


def block_twice_conflicts(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.method == "PUT" and ex.path.startswith("/players/") and arrival.was_blocked:
        ex.problem(409)


def unblock_twice_not_found(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.method == "DELETE" and ex.path.startswith("/players/") and not arrival.was_blocked:
        ex.problem(404)


def http_iframe_url(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == OPEN_SESSION and ex.status == 200:
        ex.answer_json(200, {"iframeURL": ex.answer["iframeURL"].replace("https://", "http://", 1)})


def blocked_player_bad_gateway(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == OPEN_SESSION and ex.status == 403:
        ex.problem(502)


def _detail(ex: Exchange) -> str:
    answer = ex.answer
    return str(answer.get("detail", "")) if isinstance(answer, dict) else ""


def bad_input_bad_gateway(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    # Only the player id's 400s: the checks of today's headers and lang expect theirs.
    detail = _detail(ex)
    if (
        ex.path == OPEN_SESSION
        and ex.status == 400
        and ("X-User-Id" in detail or detail.startswith("user id"))
    ):
        ex.problem(502)


FAKE_LOBBY = {"iframeURL": "https://sandbox.bidpaw.invalid/en/auctions?token=fault&session=fault"}


def accept_unsupported_currency(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == OPEN_SESSION and _detail(ex).startswith("X-User-Currency must be one of"):
        ex.answer_json(200, FAKE_LOBBY)


def accept_any_lang(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == OPEN_SESSION and _detail(ex).startswith("lang must be"):
        ex.answer_json(200, FAKE_LOBBY)


def broken_healthz(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == "/healthz":
        ex.problem(500)


def not_ready(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == "/readyz":
        ex.problem(503)


def garbled_metrics(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == "/metrics":
        ex.response = b'partner_gateway_http_requests_total{route="/x" 1\n'


def cacheable_introspection(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    if ex.path == INTROSPECT:
        ex.response_headers = [(k, v) for k, v in ex.response_headers if k != b"cache-control"]


def drop_request_id(seen: Seen, arrival: Arrival, ex: Exchange) -> None:
    ex.response_headers = [(k, v) for k, v in ex.response_headers if k != b"x-request-id"]


AFTER_FAULTS: dict[str, Fault] = {
    "auth.idempotency_key": wrong_code_for_bad_idempotency_key,
    "auth.body_shape": accept_non_digit_timestamp,
    "auth.key_reuse": replay_key_for_another_token,
    "auth.unknown_token": wrong_code_for_unknown_token,
    "auth.used_token": exchange_used_token_again,
    "auth.wrong_user": wrong_code_for_wrong_user,
    "auth.blocked_player": wrong_code_for_blocked_player,
    "auth.success": drop_redirect_url,
    "auth.no_store": cacheable_introspection,
    "idempotency.replay": echo_new_request_id_on_replay,
    "idempotency.other_body": replay_key_for_another_user,
    "idempotency.failed_key_fresh": store_failures,
    "idempotency.parallel_same_key": new_token_for_duplicates,
    "idempotency.parallel_keys": let_racing_keys_win,
    "wallet.introspect_live": wrong_expiry_on_introspection,
    "wallet.introspect_unknown": verbose_unknown_introspection,
    "wallet.introspect_blocked": blocked_session_stays_active,
    "wallet.block": block_twice_conflicts,
    "wallet.unblock": unblock_twice_not_found,
    "bidpaw.open_session": http_iframe_url,
    "bidpaw.blocked": blocked_player_bad_gateway,
    "bidpaw.bad_input": bad_input_bad_gateway,
    "bidpaw.player_headers": accept_unsupported_currency,
    "bidpaw.lang": accept_any_lang,
    "ops.healthz": broken_healthz,
    "ops.readyz": not_ready,
    "ops.metrics": garbled_metrics,
    "ops.request_id": drop_request_id,
}


async def _read_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _capture(exchange: Exchange) -> Send:
    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.response_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            exchange.response += message.get("body", b"")

    return send


async def _send(send: Send, exchange: Exchange) -> None:
    headers = [(k, v) for k, v in exchange.response_headers if k != b"content-length"]
    headers.append((b"content-length", str(len(exchange.response)).encode()))
    await send({"type": "http.response.start", "status": exchange.status, "headers": headers})
    await send({"type": "http.response.body", "body": exchange.response})


def main(port: int) -> None:
    import uvicorn

    from partner_gateway.app import create_app
    from partner_gateway.config import load_settings
    from partner_gateway.logs import setup_logging

    settings, _ = load_settings()
    setup_logging(settings)
    assert settings.betlink_operator_id is not None
    app = FaultInjector(
        create_app(settings),
        betlink_key=settings.betlink_api_keys[0].get_secret_value(),
        operator_id=settings.betlink_operator_id,
        launch_token_ttl=settings.betlink_launch_token_ttl_seconds,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main(int(sys.argv[1]))
