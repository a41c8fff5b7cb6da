"""The edge's parser limits as plain functions: the JSON depth scan agrees with the parser, the one
user-id rule, and the token size limit. (tests/test_edge_parsing.py drives them through the live mesh.)"""

from __future__ import annotations

import json
import random

import pytest

from chatmesh.auth import MAX_TOKEN_BYTES, AuthError, TokenVerifier, sign, user_id_problem
from chatmesh.config import Settings
from services.edge import bounded_json
from services.edge.bounded_json import MAX_JSON_DEPTH, too_deep


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def test_the_depth_scan_matches_the_parsed_depth() -> None:
    """Random documents whose strings are full of brackets, quotes and escapes: the scan sees through
    them and measures what json.loads builds."""
    rng = random.Random(7)
    tricky = ["[", "]", "{", "}", '"', "\\", '\\"', "\\\\", '["', "\\u005b"]

    def text() -> str:
        return "".join(rng.choice(tricky) for _ in range(rng.randint(0, 6)))

    def document(depth: int) -> object:
        """Nested `depth` deep along one chain, with strings and shallow siblings beside it."""
        if depth == 0:
            return text()
        items = [
            document(depth - 1),
            *(rng.choice([text(), [text()], {text(): [text()]}]) for _ in range(rng.randint(0, 2))),
        ]
        rng.shuffle(items)
        return items if rng.random() < 0.5 else {f"{text()}{i}": item for i, item in enumerate(items)}

    for _ in range(300):
        value = document(rng.randint(MAX_JSON_DEPTH - 6, MAX_JSON_DEPTH + 6))
        encoded = json.dumps(value)
        assert too_deep(encoded) == (_depth(value) > MAX_JSON_DEPTH), encoded[:200]
        if _depth(value) <= MAX_JSON_DEPTH:
            assert bounded_json.loads(encoded) == value


@pytest.mark.parametrize("raw", ["[" * 30_000, '{"a":' * 30_000, "[" * 33 + "]" * 33, b"[" * 30_000])
def test_deep_documents_are_refused_before_parsing(raw: str | bytes) -> None:
    with pytest.raises(bounded_json.JsonTooDeep):
        bounded_json.loads(raw)


def test_shallow_or_stringy_documents_parse() -> None:
    assert bounded_json.loads("[" * 32 + "]" * 32) is not None
    assert bounded_json.loads(json.dumps({"content": "[" * 5000})) == {"content": "[" * 5000}
    with pytest.raises(ValueError):  # not UTF-8: the parser's ordinary refusal
        bounded_json.loads(b'"\xff"')


@pytest.mark.parametrize(
    "value", ["", " a", "a ", "\x00a", "a\tb", "a\nb", "a\x7f", "a\x85b", "a\ud800", "\u00a0a", "x" * 129, 7, None]
)
def test_the_user_id_rule_refuses(value: object) -> None:
    assert user_id_problem(value) is not None


@pytest.mark.parametrize("value", ["alice", "x" * 128, "Ünïcødé 名前", "a b", "google-oauth2|1234", "é😀"])
def test_the_user_id_rule_accepts(value: str) -> None:
    assert user_id_problem(value) is None


def test_tokens_over_the_limit_are_refused_unread(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    assert verifier.verify(sign(settings, "alice")).user_id == "alice"
    with pytest.raises(AuthError, match="limited"):
        verifier.verify("x" * (MAX_TOKEN_BYTES + 1))  # not even a JWT: refused before it is parsed
    with pytest.raises(AuthError, match="sub"):
        verifier.verify(sign(settings, " alice"))
