"""Served engines' answers are decoded by orjson for speed; every answer decodes to what
json.loads makes of it, including the JSON that only Python's json accepts. (Integers past
64 bits, which no served answer holds, are the one known difference: orjson makes them
floats.)"""

from __future__ import annotations

import json
import math

import pytest

from nova_eval_assets.engines.http_client import decode_json

ANSWERS = [
    b'{"choices": [{"message": {"content": "caf\\u00e9 \\ud83d\\ude00 \xe6\x97\xa5"}}]}',
    b'{"logprob": -0.1, "top": [{"token": "a", "logprob": -1e-05}], "n": 12}',
    b'{"a": 1, "a": 2}',  # a repeated key: the last one wins
    b'{"ids": [18446744073709551615, 9223372036854775807, -9223372036854775808]}',
    b'{"tiny": 1e-400, "huge": 1e400}',
    b'{"logprob": -Infinity, "other": NaN}',  # Python servers write these
    b'{"text": "\\ud800 alone"}',  # a lone surrogate
    b"[0.1, 0.30000000000000004, 5e-324, 1.7976931348623157e308]",
    b'  {"padded": true}  \n',
]


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("answer", ANSWERS)
def test_decoded_as_json_loads_decodes_it(answer: bytes) -> None:
    assert _same(decode_json(answer), json.loads(answer))


def test_not_json_is_refused_as_json_refuses_it() -> None:
    with pytest.raises(json.JSONDecodeError):
        decode_json(b'{"cut": ')
