"""BETLINK_USER_ID_KEY: BetLink sees deterministic AES-SIV pseudonyms, never the real id."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from partner_gateway.security import UserIdCipher
from tests.conftest import GATEWAY_HEADERS
from tests.helpers import authenticate, failure, launch

KEY_A = os.urandom(64)
KEY_B = os.urandom(64)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class TestCipher:
    def test_deterministic_per_player_and_different_across_players(self) -> None:
        cipher = UserIdCipher([KEY_A])
        assert cipher.encrypt("player-1") == cipher.encrypt("player-1")
        assert cipher.encrypt("player-1") != cipher.encrypt("player-2")
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cipher.encrypt("Jöhn 🎰"))

    @pytest.mark.parametrize("user_id", ["player-1", "Jöhn 🎰", "x" * 128])
    def test_round_trip(self, user_id: str) -> None:
        cipher = UserIdCipher([KEY_A])
        assert cipher.decrypt(cipher.encrypt(user_id)) == user_id

    def test_tampered_or_foreign_values_are_rejected(self) -> None:
        cipher = UserIdCipher([KEY_A])
        value = cipher.encrypt("player-1")
        flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
        for bad in (flipped, "player-1", "", "!!!", UserIdCipher([KEY_B]).encrypt("player-1")):
            assert cipher.decrypt(bad) is None

    def test_rotation_keeps_old_values_valid(self) -> None:
        old_value = UserIdCipher([KEY_A]).encrypt("player-1")
        rotated = UserIdCipher([KEY_B, KEY_A])
        assert rotated.decrypt(old_value) == "player-1"
        assert rotated.encrypt("player-1") != old_value

    def test_without_keys_betlink_sees_the_real_id(self) -> None:
        assert UserIdCipher([]).encrypt("player-1") == "player-1"


class TestFlow:
    async def test_session_returns_the_pseudonym_and_authenticate_echoes_it(
        self, make_client: Callable[..., Any]
    ) -> None:
        client: httpx.AsyncClient = await make_client(betlink_user_id_key=b64(KEY_A))
        session = await launch(client)
        assert session["userId"] == UserIdCipher([KEY_A]).encrypt("player-1")
        answer = await authenticate(client, session)
        assert answer.status_code == 200
        assert answer.json()["userId"] == session["userId"]
        introspected = await client.post(
            "/betlink/sessions/introspect",
            headers=GATEWAY_HEADERS,
            json={"operatorSessionToken": answer.json()["operatorSessionToken"]},
        )
        assert introspected.json()["userId"] == "player-1"

    @pytest.mark.parametrize("which", ["real id", "tampered", "other player"])
    async def test_anything_but_the_players_pseudonym_is_invalid_user(
        self, make_client: Callable[..., Any], which: str
    ) -> None:
        client: httpx.AsyncClient = await make_client(betlink_user_id_key=b64(KEY_A))
        session = await launch(client)
        other = await launch(client, "player-2")
        value = {
            "real id": "player-1",
            "tampered": session["userId"][:-1] + ("A" if session["userId"][-1] != "A" else "B"),
            "other player": other["userId"],
        }[which]
        response = await authenticate(client, session, userId=value)
        assert response.status_code == 400
        assert response.json() == failure("INVALID_USER", "userId does not match the session's player")

    async def test_old_key_values_still_accepted_after_rotation(
        self, make_client: Callable[..., Any]
    ) -> None:
        before = await make_client(betlink_user_id_key=b64(KEY_A))
        session = await launch(before)
        after = await make_client(betlink_user_id_key=f"{b64(KEY_B)},{b64(KEY_A)}")
        assert (await authenticate(after, session)).status_code == 200


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _other_spellings(value: str) -> dict[str, str]:
    """Every other way to write the bytes of a base64url pseudonym that a lax decoder accepts."""
    spellings = {}
    padding = "=" * (-len(value) % 4)
    if padding:
        spellings["padded"] = value + padding
    if "-" in value or "_" in value:
        spellings["standard alphabet"] = value.replace("-", "+").replace("_", "/")
    if len(value) % 4:  # the last character carries spare bits that decoders ignore
        spellings["spare bits"] = value[:-1] + ALPHABET[ALPHABET.index(value[-1]) ^ 1]
    return spellings


def _player_for(length_mod_3: int, *, cipher: UserIdCipher) -> str:
    """A player id whose pseudonym has sealed bytes ≡ `length_mod_3` (mod 3) and a - or _ in it."""
    for n in range(1000):
        base = f"p{n}"
        user_id = base + "x" * ((length_mod_3 - 16 - len(base)) % 3)  # AES-SIV adds 16 bytes
        value = cipher.encrypt(user_id)
        if "-" in value or "_" in value:
            return user_id
    raise AssertionError("no such player id")


class TestOneSpellingPerPseudonym:
    """BetLink must see one id per wallet: only the spelling /betlink/session issued is valid."""

    @pytest.mark.parametrize("length_mod_3", [0, 1, 2])
    def test_the_cipher_refuses_every_other_spelling(self, length_mod_3: int) -> None:
        cipher = UserIdCipher([KEY_A])
        user_id = _player_for(length_mod_3, cipher=cipher)
        value = cipher.encrypt(user_id)
        spellings = _other_spellings(value)
        assert set(spellings) >= {"standard alphabet"} | ({"padded", "spare bits"} if length_mod_3 else set())
        for name, spelling in spellings.items():
            assert spelling != value
            assert cipher.decrypt(spelling) is None, name
        assert cipher.decrypt(value) == user_id

    @pytest.mark.parametrize("length_mod_3", [0, 1, 2])
    async def test_authenticate_answers_invalid_user_for_another_spelling(
        self, make_client: Callable[..., Any], length_mod_3: int
    ) -> None:
        client: httpx.AsyncClient = await make_client(betlink_user_id_key=b64(KEY_A))
        user_id = _player_for(length_mod_3, cipher=UserIdCipher([KEY_A]))
        session = await launch(client, user_id)
        for name, spelling in _other_spellings(session["userId"]).items():
            response = await authenticate(client, session, userId=spelling)
            assert response.status_code == 400, name
            assert response.json() == failure("INVALID_USER", "userId does not match the session's player")
        assert (await authenticate(client, session)).status_code == 200
