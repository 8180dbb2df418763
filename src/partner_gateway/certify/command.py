"""`partner-gateway certify`: flags, keys from the environment, output and exit code.

It needs no service setting (no DATABASE_URL): only the URL of the deployment and two keys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path

from partner_gateway.certify import report
from partner_gateway.certify.client import BidpawWallet, Options
from partner_gateway.certify.runner import certify

KEY_SOURCES = {
    "gateway_key": ("--gateway-key", "CERTIFY_GATEWAY_KEY", "GATEWAY_API_KEYS"),
    "betlink_key": ("--betlink-key", "CERTIFY_BETLINK_KEY", "BETLINK_API_KEYS"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the deployment, e.g. https://gw.staging.example")
    parser.add_argument(
        "--gateway-key",
        help="the casino gateway's key (default: $CERTIFY_GATEWAY_KEY, else the first of $GATEWAY_API_KEYS); "
        "prefer the environment: a flag shows in the process list",
    )
    parser.add_argument(
        "--betlink-key",
        help="BetLink's X-API-Key (default: $CERTIFY_BETLINK_KEY, else the first of $BETLINK_API_KEYS)",
    )
    parser.add_argument("--player", help="the dedicated test player (default: certify-<random>)")
    parser.add_argument(
        "--gateway-url",
        help="where the casino gateway's calls go, when not --url (a front proxy's gateway listener)",
    )
    parser.add_argument(
        "--ops-url",
        help="the internal listener with /healthz, /readyz, /metrics, /docs; --url is then checked "
        "to NOT serve /metrics, /docs or /openapi.json",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="--url is the front proxy: also check that it drops a client's X-User-Id and refuses "
        "oversized headers and bodies in the contract's shapes",
    )
    for flag, setting in (
        ("--launch-token-ttl", "BETLINK_LAUNCH_TOKEN_TTL_SECONDS"),
        ("--session-ttl", "BETLINK_SESSION_TTL_SECONDS"),
        ("--idempotency-ttl", "IDEMPOTENCY_TTL_SECONDS"),
    ):
        parser.add_argument(
            flag,
            type=float,
            metavar="SECONDS",
            help=f"the deployment's {setting}: check that expiry, to the second (default: not checked)",
        )
    parser.add_argument(
        "--parallel-same-key",
        type=int,
        default=8,
        metavar="N",
        help="parallel requests with one key (default 8)",
    )
    parser.add_argument(
        "--parallel-keys",
        type=int,
        default=16,
        metavar="M",
        help="parallel keys on one launch token, per round (default 16)",
    )
    parser.add_argument(
        "--parallel-rounds",
        type=int,
        default=3,
        metavar="R",
        help="rounds of the parallel-keys race (default 3)",
    )
    parser.add_argument("--bidpaw", action="store_true", help="also check /bidpaw/open-session")
    parser.add_argument("--bidpaw-iframe-prefix", help="with --bidpaw: the iframeURL must start with this")
    wallet = parser.add_argument_group("BidPaw's wallet callbacks (--bidpaw-wallet)")
    wallet.add_argument(
        "--bidpaw-wallet",
        action="store_true",
        help="also play BidPaw's wallet callbacks (POST /bidpaw/wallet) against a deployment whose "
        "BIDPAW_API_URL is the bidpaw-sandbox and whose wallet is the sandbox or a staging wallet",
    )
    for flag, sources in WALLET_SOURCES.items():
        wallet.add_argument(flag, help=f"default: ${' else the first of $'.join(sources)}")
    wallet.add_argument(
        "--bidpaw-wallet-currency",
        default="EUR",
        help="the test player's wallet currency, sent as X-User-Currency (default EUR)",
    )
    wallet.add_argument(
        "--wallet-sandbox-url",
        help="the sandbox wallet's admin API: checks codes 1 and 7 and the wallet's ledger "
        "(without it those are skipped, with a line that says so)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--junit", type=Path, metavar="FILE", help="also write a JUnit XML report")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


WALLET_SOURCES = {
    "--bidpaw-callback-secret": ("CERTIFY_BIDPAW_CALLBACK_SECRET", "BIDPAW_CALLBACK_SECRET"),
    "--bidpaw-client-id": ("CERTIFY_BIDPAW_CLIENT_ID", "BIDPAW_CLIENT_ID"),
    "--bidpaw-game-id": ("CERTIFY_BIDPAW_GAME_ID", "BIDPAW_GAME_ID"),
}


def _wallet(args: argparse.Namespace) -> BidpawWallet | str | None:
    """What --bidpaw-wallet needs, or what is missing; None without --bidpaw-wallet."""
    if not args.bidpaw_wallet:
        return None
    values, missing = {}, []
    for flag, (own, shared) in WALLET_SOURCES.items():
        value: str | None = getattr(args, flag.removeprefix("--").replace("-", "_")) or os.environ.get(own)
        if not value and os.environ.get(shared):
            value = os.environ[shared].split(",")[0].strip()
        if not value:
            missing.append(f"{flag} or {own} or {shared}")
        values[flag] = value or ""
    if missing:
        return f"--bidpaw-wallet: missing {'; '.join(missing)}"
    return BidpawWallet(
        callback_secret=values["--bidpaw-callback-secret"],
        client_id=values["--bidpaw-client-id"],
        game_id=values["--bidpaw-game-id"],
        currency=args.bidpaw_wallet_currency.upper(),
        sandbox_url=args.wallet_sandbox_url.rstrip("/") if args.wallet_sandbox_url else None,
    )


def _key(args: argparse.Namespace, name: str) -> str | None:
    _, own, shared = KEY_SOURCES[name]
    value: str | None = getattr(args, name) or os.environ.get(own)
    if not value and os.environ.get(shared):
        value = os.environ[shared].split(",")[0].strip()
    return value or None


def main(args: argparse.Namespace) -> int:
    keys = {name: _key(args, name) for name in KEY_SOURCES}
    missing = [" or ".join(KEY_SOURCES[name]) for name, value in keys.items() if value is None]
    ttls = (args.launch_token_ttl, args.session_ttl, args.idempotency_ttl)
    if missing or min(args.parallel_same_key, args.parallel_keys) < 2 or args.parallel_rounds < 1:
        reason = (
            f"missing {'; '.join(missing)}"
            if missing
            else "--parallel-same-key and --parallel-keys need 2 or more, --parallel-rounds 1 or more"
        )
    elif any(ttl is not None and ttl <= 0 for ttl in ttls):
        reason = "--launch-token-ttl, --session-ttl and --idempotency-ttl must be positive"
    else:
        reason = ""
    if reason:
        print(f"partner-gateway certify: {reason}", file=sys.stderr)  # noqa: T201
        return 2
    wallet = _wallet(args)
    if isinstance(wallet, str):
        print(f"partner-gateway certify: {wallet}", file=sys.stderr)  # noqa: T201
        return 2
    options = Options(
        player=args.player or f"certify-{secrets.token_hex(4)}",
        launch_token_ttl=args.launch_token_ttl,
        session_ttl=args.session_ttl,
        idempotency_ttl=args.idempotency_ttl,
        parallel_same_key=args.parallel_same_key,
        parallel_keys=args.parallel_keys,
        parallel_rounds=args.parallel_rounds,
        bidpaw=args.bidpaw,
        bidpaw_iframe_prefix=args.bidpaw_iframe_prefix,
        gateway_url=args.gateway_url.rstrip("/") if args.gateway_url else None,
        ops_url=args.ops_url.rstrip("/") if args.ops_url else None,
        proxy=args.proxy,
        bidpaw_wallet=wallet,
    )
    run = asyncio.run(
        certify(
            args.url.rstrip("/"),
            gateway_key=str(keys["gateway_key"]),
            betlink_key=str(keys["betlink_key"]),
            options=options,
            timeout=args.timeout,
        )
    )
    if args.junit:
        args.junit.write_text(report.junit(run), encoding="utf-8")
    print(report.as_json(run) if args.json else report.table(run))  # noqa: T201
    return 0 if run.passed else 1
