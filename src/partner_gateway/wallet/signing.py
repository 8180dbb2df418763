"""`X-Wallet-Signature`: how our calls to the casino's wallet are signed, and how a wallet checks them.

`t=<unix seconds>,v1=<hex>`, where `<hex>` is the lower-case HMAC-SHA256 of `"<t>.<raw body>"`
keyed with the newest `WALLET_SECRET`. The timestamp is signed too, so a captured call cannot be
replayed with a fresh time; a wallet refuses a signature older than `MAX_AGE_SECONDS`. During a
rotation the wallet accepts any of its configured keys (`verify` takes them all).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "X-Wallet-Signature"
MAX_AGE_SECONDS = 300


def _digest(*, secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The header's value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret=secret, timestamp=timestamp, body=body)}"


def verify(
    header: str, *, secrets: Sequence[str], body: bytes, now: int, max_age: int = MAX_AGE_SECONDS
) -> bool:
    """The wallet's side: one `t`, at least one `v1` matching one of `secrets`, not too old.

    Compared in constant time. A timestamp more than `max_age` seconds from `now`, either way,
    is refused, as is anything malformed.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and timestamp is None and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > max_age:
        return False
    expected = [_digest(secret=secret, timestamp=timestamp, body=body) for secret in secrets]
    matched = False
    for candidate in candidates:
        for digest in expected:
            # Every pair is compared: how many match, or where, takes no less time.
            matched |= hmac.compare_digest(digest.encode(), candidate.encode("utf-8", "replace"))
    return matched
