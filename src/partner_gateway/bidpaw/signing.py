"""BidPaw's request signature, byte-compatible with their JavaScript sample.

BidPaw signs `JSON.stringify(params)` with `CryptoJS.HmacSHA256(message, SECRET_KEY)` and sends
the lower-case hex digest in the `sign` header. Python's `json.dumps` is close but not equal, so
the message is built here by JavaScript's rules:

- property order is JavaScript's: keys that are array indices ("0", "42", up to 2**32 - 2 in
  canonical form) first, ascending; every other key in first-insertion order. A repeated key keeps
  its first position and takes its last value;
- strings escape `"`, `\\`, `\\b \\f \\n \\r \\t`, other characters below U+0020 as lower-case
  `\\u00xx`, and lone surrogates as `\\udxxx` (ES2019 well-formed stringify); everything else,
  including `/`, `<`, `>`, `&`, U+2028 and U+2029, is written as it is;
- no spaces after `,` or `:`.

The message is then encoded as UTF-8 (crypto-js's default for strings), as is the secret.
The vectors in tests/data/bidpaw_vectors.json come from BidPaw's sample run with crypto-js.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import TypeAlias, TypeVar

Params = Mapping[str, str] | Iterable[tuple[str, str]]

_MAX_ARRAY_INDEX = 2**32 - 2
_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]*")
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f\ud800-\udfff]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _is_array_index(key: str) -> bool:
    return _CANONICAL_INDEX.fullmatch(key) is not None and int(key) <= _MAX_ARRAY_INDEX


V = TypeVar("V")


def js_object(params: Mapping[str, V] | Iterable[tuple[str, V]]) -> dict[str, V]:
    """The params as a JavaScript object would hold them: JavaScript's property order."""
    items = params.items() if isinstance(params, Mapping) else params
    merged: dict[str, V] = {}
    for key, value in items:
        merged[key] = value  # like `obj[key] = value`: first position, last value
    indices = sorted((key for key in merged if _is_array_index(key)), key=int)
    named = [key for key in merged if not _is_array_index(key)]
    return {key: merged[key] for key in [*indices, *named]}


def _as_js_string(value: str) -> str:
    # A JavaScript string is UTF-16: a high and a low surrogate next to each other are one
    # character there, so join such pairs before escaping; only lone surrogates remain.
    if not any("\ud800" <= char <= "\udfff" for char in value):
        return value
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def quote(value: str) -> str:
    """JavaScript's `JSON.stringify` of one string."""
    return '"' + _NEEDS_ESCAPE.sub(_escape, _as_js_string(value)) + '"'


def message(*, params: Params) -> str:
    """JavaScript's `JSON.stringify(params)` for an object of strings, keys in sending order."""
    members = (f"{quote(key)}:{quote(value)}" for key, value in js_object(params).items())
    return "{" + ",".join(members) + "}"


def sign(*, params: Params, secret: str) -> str:
    """The `sign` header: HMAC-SHA256 of `message(params)`, keyed with UTF-8 `secret`, lower-case hex."""
    payload = message(params=params).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def verify(*, params: Params, secret: str, signature: str) -> bool:
    """BidPaw's side of the check, in constant time; for the sandbox and tests."""
    expected = sign(params=params, secret=secret).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


# --- BidPaw's wallet callbacks: a parameter object of any JSON values --------------------------


class Pairs(list[tuple[str, "JsonValue"]]):
    """A JSON object as parsed, members in order, repeats kept (`json.loads(object_pairs_hook=Pairs)`)."""


JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | Pairs | None"


_SAFE_INTEGER = 2**53


def _js_number(value: float) -> str:
    """ECMAScript's Number::toString for a finite double (shortest round-trip digits)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction.rstrip("0")).lstrip("0") if fraction != "0" else whole.lstrip("0")
    point = len(whole.lstrip("0")) if whole.strip("0") else -(len(fraction) - len(fraction.lstrip("0")))
    point += int(exponent or 0)
    digits = digits.rstrip("0") or "0"
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        text = (
            digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if n >= 1 else "-") + str(abs(n - 1))
        )
    return sign + text


def stringify(value: JsonValue) -> str:
    """JavaScript's `JSON.stringify` of a value `JSON.parse` produced (objects as `Pairs`)."""
    if isinstance(value, str):
        return quote(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) <= _SAFE_INTEGER else _js_number(float(value))
    if isinstance(value, float):
        return _js_number(value) if value == value and abs(value) != float("inf") else "null"
    if isinstance(value, Pairs):
        members = js_object(value)
        return "{" + ",".join(f"{quote(key)}:{stringify(item)}" for key, item in members.items()) + "}"
    return "[" + ",".join(stringify(item) for item in value) + "]"


def callback_signatures(*, params: Pairs, secrets: Iterable[str]) -> list[str]:
    """The `sign` each secret gives a callback's parameter object, as BidPaw's sample computes it."""
    payload = stringify(params).encode("utf-8")
    return [hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest() for secret in secrets]
