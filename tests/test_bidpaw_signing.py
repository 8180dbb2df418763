"""BidPaw's `sign`: byte-compatible with BidPaw's JavaScript sample (JSON.stringify + crypto-js).

The vectors in tests/data were produced by BidPaw's sample itself: for each case of
bidpaw_vectors_input.json, `CryptoJS.HmacSHA256(JSON.stringify(params), secret)` in Node with
crypto-js from npm, written with the message and the hex `sign` to bidpaw_vectors.json. To add a
case, append it to the input file and run that sample over it again (the sample is BidPaw's, not
part of this repository).

The input file keeps the parameters in sending order; the tool's output lists them in JavaScript's
property order (array-index keys first), so the tests sign the input's order and compare with the
output's message and sign.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partner_gateway.bidpaw.client import open_session_params
from partner_gateway.bidpaw.signing import js_object, message, sign, verify

DATA = Path(__file__).parent / "data"
INPUTS: list[dict[str, Any]] = json.loads((DATA / "bidpaw_vectors_input.json").read_text())
OUTPUTS: list[dict[str, Any]] = json.loads((DATA / "bidpaw_vectors.json").read_text())
VECTORS = [
    pytest.param(given_, produced, id=given_["name"])
    for given_, produced in zip(INPUTS, OUTPUTS, strict=True)
]

# Keys that are not array indices keep their order in JavaScript, so json.dumps is comparable.
names = st.text(min_size=1).filter(lambda key: not key.isdigit())


class TestMatchesBidPawsJavaScriptSample:
    @pytest.mark.parametrize(("given_", "produced"), VECTORS)
    def test_message_and_sign_equal_the_vector(
        self, given_: dict[str, Any], produced: dict[str, Any]
    ) -> None:
        assert produced["secret"] == given_["secret"]
        assert produced["params"] == given_["params"]
        assert message(params=given_["params"]) == produced["message"]
        assert sign(params=given_["params"], secret=given_["secret"]) == produced["sign"]

    def test_the_worked_example_of_bidpaws_notes(self) -> None:
        params = [("clientId", "c"), ("userId", "42")]
        assert message(params=params) == '{"clientId":"c","userId":"42"}'
        assert (
            sign(params=params, secret="k")
            == "c40ebc0fcd667fd9f037e37b4faf4ff4f21451bbe3c70233269590f762890102"
        )

    def test_the_vectors_cover_the_cases_the_issue_lists(self) -> None:
        covered = {vector["name"] for vector in INPUTS}
        for case in (
            "absent nick",
            "empty nick",
            "non-ascii letters",
            "double quotes",
            "backslashes",
            "slashes",
        ):
            assert case in covered
        assert any(ord(char) > 0x7F for vector in INPUTS for char in vector["secret"])
        assert any("\x00" in vector["params"].get("nick", "") for vector in INPUTS)

    def test_the_vectors_cover_todays_parameters_in_the_order_the_client_sends_them(self) -> None:
        full = next(vector for vector in INPUTS if vector["name"].startswith("today's parameters, every one"))
        sent = open_session_params(
            client_id="casino-42",
            nick="john",
            user_id="player-1",
            lang="pt-BR",
            currency="eur",
            country="de",
            game_id="game-7",
            allowed_countries=["us", "GB", "De"],
        )
        assert sent == list(full["params"].items())
        names = {name for vector in INPUTS for name in vector["params"]}
        assert {"lang", "currency", "country", "gameId", "allowedCountries"} <= names
        assert any("\ud800" in vector["params"].get("gameId", "") for vector in INPUTS)


class TestFollowsJavaScriptSemantics:
    def test_pairs_and_a_mapping_sign_alike(self) -> None:
        pairs = [("clientId", "c"), ("nick", "n"), ("userId", "u")]
        assert sign(params=pairs, secret="k") == sign(params=dict(pairs), secret="k")

    def test_the_order_of_the_parameters_is_signed(self) -> None:
        assert sign(params=[("a", "1"), ("b", "2")], secret="k") != sign(
            params=[("b", "2"), ("a", "1")], secret="k"
        )

    def test_a_surrogate_pair_in_two_code_points_is_one_character_as_in_javascript(self) -> None:
        assert message(params={"n": "\ud83c\udfb0"}) == message(params={"n": "🎰"}) == '{"n":"🎰"}'

    def test_lone_surrogates_are_escaped_in_lower_case(self) -> None:
        assert message(params={"n": "a\udc00b\ud8ff"}) == '{"n":"a\\udc00b\\ud8ff"}'

    def test_a_repeated_key_keeps_its_first_position_and_its_last_value(self) -> None:
        assert js_object([("a", "1"), ("b", "2"), ("a", "3")]) == {"a": "3", "b": "2"}
        assert message(params=[("a", "1"), ("b", "2"), ("a", "3")]) == '{"a":"3","b":"2"}'

    def test_array_index_keys_come_first_in_numeric_order(self) -> None:
        ordered = js_object([("b", ""), ("10", ""), ("2", ""), ("02", ""), ("4294967295", ""), ("0", "")])
        assert list(ordered) == ["0", "2", "10", "b", "02", "4294967295"]

    def test_sign_is_64_lower_case_hex_digits(self) -> None:
        assert re.fullmatch(r"[0-9a-f]{64}", sign(params={"a": "b"}, secret="k"))

    def test_verify_accepts_the_sign_and_rejects_any_other(self) -> None:
        good = sign(params={"a": "b"}, secret="k")
        assert verify(params={"a": "b"}, secret="k", signature=good)
        assert not verify(params={"a": "b"}, secret="k", signature=good.upper())
        assert not verify(params={"a": "b"}, secret="other", signature=good)
        assert not verify(params={"a": "b"}, secret="k", signature="ü")


class TestProperties:
    @given(st.dictionaries(names, st.text(), max_size=5))
    def test_the_message_is_json_that_decodes_to_the_params(self, params: dict[str, str]) -> None:
        assert json.loads(message(params=params)) == params

    @given(
        user_id=st.text(min_size=1),
        nick=st.none() | st.text(),
        game_id=st.text(min_size=1),
        lang=st.none() | st.from_regex(r"[A-Za-z-]{2,8}", fullmatch=True),
        currency=st.none() | st.sampled_from(["EUR", "usdt", "Jpy"]),
        country=st.none() | st.from_regex(r"[A-Za-z]{2}", fullmatch=True),
        allowed=st.lists(st.from_regex(r"[A-Za-z]{2}", fullmatch=True), max_size=3),
    )
    def test_todays_parameters_are_signed_in_the_order_sent(
        self,
        user_id: str,
        nick: str | None,
        game_id: str,
        lang: str | None,
        currency: str | None,
        country: str | None,
        allowed: list[str],
    ) -> None:
        # No parameter name is an array index, so JavaScript keeps the sending order.
        params = open_session_params(
            client_id="c",
            user_id=user_id,
            nick=nick,
            game_id=game_id,
            lang=lang,
            currency=currency,
            country=country,
            allowed_countries=allowed,
        )
        expected = json.dumps(dict(params), ensure_ascii=False, separators=(",", ":"))
        assert message(params=params) == expected
        assert list(json.loads(message(params=params))) == [name for name, _ in params]

    @given(st.dictionaries(names, st.text(), max_size=5))
    def test_without_lone_surrogates_it_equals_compact_json_dumps(self, params: dict[str, str]) -> None:
        # Hypothesis' text() has no surrogates; for such text JSON.stringify and json.dumps agree.
        expected = json.dumps(params, ensure_ascii=False, separators=(",", ":"))
        assert message(params=params) == expected
