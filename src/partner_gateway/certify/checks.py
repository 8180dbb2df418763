"""The checks, as data: what BetLink's and BidPaw's certification will look at, in order.

Each check is an async function of the `Deployment` that raises `Failed` with what it expected
and what came back; it may return the latency figures of its concurrent requests. A check that
changes the player's state (a block) puts it back before it returns. The functions live by
concern: `auth_checks` (BetLink's Auth endpoint and its idempotency keys), `gateway_checks` (the
casino gateway's routes), `bidpaw_checks` (BidPaw's open-session), `ops_checks` (operations and
the front proxy), on top of `expectations`; `wallet_checks` holds BidPaw's wallet callbacks.
"""

from __future__ import annotations

from partner_gateway.certify.auth_checks import (
    api_key,
    blocked_player,
    body_shape,
    expired_token,
    failed_key_fresh,
    idempotency_key,
    key_expiry,
    key_reuse,
    no_store,
    operator_id,
    other_body,
    parallel_keys,
    parallel_same_key,
    pending_across_block,
    repeated_headers,
    replay,
    replay_headers,
    replay_token_live,
    success,
    unknown_token,
    used_token,
    wrong_user,
)
from partner_gateway.certify.bidpaw_checks import (
    bidpaw_bad_input,
    bidpaw_blocked,
    bidpaw_iframe,
    bidpaw_lang,
    bidpaw_player_headers,
    bidpaw_repeated_player_headers,
)
from partner_gateway.certify.expectations import Check
from partner_gateway.certify.gateway_checks import (
    block,
    block_revokes_session,
    body_cap,
    gateway_key,
    introspect_blocked,
    introspect_live,
    introspect_unknown,
    session_expiry,
    unblock,
)
from partner_gateway.certify.ops_checks import (
    docs,
    healthz,
    metrics,
    proxy_limits,
    proxy_user_id,
    public_surface,
    readyz,
    request_id,
)

CHECKS: tuple[Check, ...] = (
    Check(
        "gateway.api_key",
        "every gateway route: no key, a wrong key and BetLink's key are 401",
        gateway_key,
    ),
    Check(
        "auth.api_key",
        "Auth #1: X-API-Key missing, wrong or the gateway's is 403 AUTHENTICATION_FAILED",
        api_key,
    ),
    Check(
        "auth.idempotency_key",
        "Auth #2: X-Idempotency-Key missing or not a UUID is 400 MISSING_PARAMETER",
        idempotency_key,
    ),
    Check(
        "auth.repeated_headers",
        "Auth #1, #2: X-API-Key or X-Idempotency-Key twice is refused; so is a repeated gateway header",
        repeated_headers,
    ),
    Check("auth.body_shape", "Auth #2: a malformed body is 400 MISSING_PARAMETER", body_shape),
    Check("auth.operator_id", "Auth #3: another operatorId is 403 AUTHENTICATION_FAILED", operator_id),
    Check(
        "auth.key_reuse",
        "Auth #4: a processed key with another launchToken is 403 AUTHENTICATION_FAILED",
        key_reuse,
    ),
    Check("auth.unknown_token", "Auth #6: an unknown launchToken is 401 INVALID_SESSION", unknown_token),
    Check("auth.used_token", "Auth #9: an exchanged launchToken is 401 INVALID_SESSION", used_token),
    Check(
        "auth.expired_token",
        "Auth #9: a launchToken is accepted until its TTL, then 401 INVALID_SESSION (--launch-token-ttl)",
        expired_token,
        waits=True,
    ),
    Check(
        "auth.pending_across_block",
        "Auth #9: a launchToken pending across a block and unblock is 401 INVALID_SESSION",
        pending_across_block,
    ),
    Check("auth.wrong_user", "Auth #7: another player's userId is 400 INVALID_USER", wrong_user),
    Check(
        "auth.blocked_player",
        "Auth #8: a blocked player's pending launchToken is 400 USER_BLOCKED",
        blocked_player,
    ),
    Check(
        "auth.success",
        "Auth: 200 carries the eight fields; sessionExpiry = timestamp + 30 min (or --session-ttl)",
        success,
    ),
    Check(
        "auth.no_store",
        "session, authenticate and introspect answers carry Cache-Control: no-store",
        no_store,
    ),
    Check("idempotency.replay", "a replay is byte-identical, even with a new requestId", replay),
    Check(
        "idempotency.replay_token_live",
        "after a replay, the first answer's operatorSessionToken is still live",
        replay_token_live,
    ),
    Check(
        "idempotency.replay_headers",
        "a replay carries every header of the first answer, Cache-Control: no-store included",
        replay_headers,
    ),
    Check("idempotency.other_body", "the same key with another body is 403", other_body),
    Check("idempotency.failed_key_fresh", "a failed attempt's key is evaluated afresh", failed_key_fresh),
    Check(
        "idempotency.parallel_same_key",
        "parallel requests with one key: one token, identical bodies",
        parallel_same_key,
    ),
    Check(
        "idempotency.parallel_keys",
        "parallel keys on one launchToken, over several rounds: exactly one 200 each",
        parallel_keys,
    ),
    Check(
        "idempotency.key_expiry",
        "a processed key is replayed until its TTL, then evaluated afresh (--idempotency-ttl)",
        key_expiry,
        waits=True,
    ),
    Check(
        "wallet.introspect_live",
        "introspection of a live token: active, the player, its expiry",
        introspect_live,
    ),
    Check(
        "wallet.introspect_unknown",
        'introspection of an unknown token: exactly {"active": false}',
        introspect_unknown,
    ),
    Check("wallet.introspect_blocked", "introspection after a block: inactive", introspect_blocked),
    Check(
        "wallet.block_revokes_session",
        "a session token issued before a block and unblock stays inactive",
        block_revokes_session,
    ),
    Check(
        "wallet.session_expiry",
        "a session token is live until its TTL, then inactive (--session-ttl)",
        session_expiry,
        waits=True,
    ),
    Check("wallet.block", "block is idempotent; a blocked player gets no launch token (403)", block),
    Check("wallet.unblock", "unblock is idempotent; the player gets launch tokens again", unblock),
    Check(
        "limits.body_cap",
        "a body over the cap: 400 MISSING_PARAMETER on authenticate, 413 on introspect",
        body_cap,
    ),
    Check("bidpaw.open_session", "open-session answers a usable https iframeURL", bidpaw_iframe, bidpaw=True),
    Check("bidpaw.blocked", "open-session for a blocked player is 403", bidpaw_blocked, bidpaw=True),
    Check(
        "bidpaw.bad_input",
        "open-session refuses bad input (400) and no gateway key (401)",
        bidpaw_bad_input,
        bidpaw=True,
    ),
    Check(
        "bidpaw.player_headers",
        "open-session refuses an empty or malformed X-User-Country or X-User-Currency, and a currency "
        "BidPaw does not support (400); accepts them in any case",
        bidpaw_player_headers,
        bidpaw=True,
    ),
    Check(
        "bidpaw.repeated_player_headers",
        "open-session refuses X-User-Country or X-User-Currency sent twice (400)",
        bidpaw_repeated_player_headers,
        bidpaw=True,
    ),
    Check(
        "bidpaw.lang",
        "open-session refuses a lang that is not 2 to 8 letters and hyphens (400); accepts pt-BR",
        bidpaw_lang,
        bidpaw=True,
    ),
    Check("ops.healthz", "GET /healthz is 200", healthz),
    Check("ops.readyz", "GET /readyz is 200", readyz),
    Check("ops.metrics", "GET /metrics is Prometheus text", metrics),
    Check("ops.docs", "GET /docs is HTML and /openapi.json describes the API", docs),
    Check(
        "ops.public_surface",
        "/metrics, /docs and /openapi.json are 404 on --url (with --ops-url)",
        public_surface,
    ),
    Check("ops.request_id", "X-Request-ID is echoed", request_id),
    Check("proxy.user_id", "the front proxy drops a client's X-User-Id (--proxy)", proxy_user_id),
    Check(
        "proxy.limits",
        "the front proxy refuses oversized headers and bodies on every route, in our shapes (--proxy)",
        proxy_limits,
    ),
)
