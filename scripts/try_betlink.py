#!/usr/bin/env python3
"""Run BetLink's whole flow against a running partner-gateway, fast enough for a 10 s launch token.

    python3 scripts/try_betlink.py [--url http://127.0.0.1:8000] [--user u1]

The keys come from GW and BL in the environment (as `serve` printed them), else from local
mode's DATA_DIR/local-secrets.json (DATA_DIR defaults to .data, as for `serve`). Prints each call
and its answer: the launch token (what the casino page gets), the exchange (what BetLink's backend
gets), the same exchange again under the same idempotency key (replayed byte for byte), and the
wallet's check of the session token. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def _keys() -> tuple[str, str]:
    gateway, betlink = os.environ.get("GW"), os.environ.get("BL")
    if gateway and betlink:
        return gateway, betlink
    secrets_file = Path(os.environ.get("DATA_DIR", ".data")) / "local-secrets.json"
    if not secrets_file.exists():
        sys.exit(f"try_betlink: set GW and BL (as `serve` printed them), or run from where {secrets_file} is")
    local = json.loads(secrets_file.read_text())
    return gateway or local["GATEWAY_API_KEYS"], betlink or local["BETLINK_API_KEYS"]


def _call(url: str, headers: dict[str, str], body: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def _show(name: str, status: int, body: bytes) -> None:
    print(f"{name} -> {status}\n  {body.decode()}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="u1")
    args = parser.parse_args()
    gateway_key, betlink_key = _keys()
    gateway = {"Authorization": f"Bearer {gateway_key}", "X-User-Id": args.user}

    status, body = _call(f"{args.url}/betlink/session", gateway)
    _show("POST /betlink/session", status, body)
    if status != 201:
        return 1
    launch = json.loads(body)
    exchange = {
        "requestId": str(uuid.uuid4()),
        "userId": launch["userId"],
        "operatorId": launch["operatorId"],
        "launchToken": launch["launchToken"],
        "authRequestedTimestamp": "1640995200000",
    }
    betlink = {
        "X-API-Key": betlink_key,
        "X-Idempotency-Key": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    status, first = _call(f"{args.url}/betlink/authenticate", betlink, exchange)
    _show("POST /betlink/authenticate", status, first)
    if status != 200:
        return 1
    status, again = _call(
        f"{args.url}/betlink/authenticate", betlink, {**exchange, "requestId": str(uuid.uuid4())}
    )
    _show("POST /betlink/authenticate, same X-Idempotency-Key", status, again)
    print(f"  identical to the first answer: {again == first}")
    token = json.loads(first)["operatorSessionToken"]
    wallet = {"Authorization": f"Bearer {gateway_key}", "Content-Type": "application/json"}
    status, body = _call(f"{args.url}/betlink/sessions/introspect", wallet, {"operatorSessionToken": token})
    _show("POST /betlink/sessions/introspect", status, body)
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
