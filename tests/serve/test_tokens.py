"""The prompt token-count rule and the output text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluidserve.serve.protocol import APIError, ResponseShape, prompt_tokens_of, validate
from fluidserve.serve.tokens import count_chat_tokens, count_prompt_tokens, count_text_tokens, output_text


@pytest.mark.parametrize(
    ("text", "n"),
    [("", 0), ("   ", 0), ("hello", 1), ("hello " * 100, 100), ("Hi, you!", 4), ("a_b c-d", 4), ("2024-11-22", 5)],
)
def test_text_rule(text, n):
    assert count_text_tokens(text) == n


def test_prompt_forms():
    assert count_prompt_tokens("") == 1  # BOS
    assert count_prompt_tokens([7] * 33) == 33
    assert count_chat_tokens([{"role": "user", "content": "one two"}, {"role": "assistant", "content": None},
                              {"role": "user", "content": [{"type": "text", "text": "three"}, {"type": "image_url"}]}]) == 3
    req = validate("completion", {"model": "m", "prompt": [[1, 2, 3]]})
    assert prompt_tokens_of(req) == 3
    with pytest.raises(APIError) as exc:
        prompt_tokens_of(validate("completion", {"model": "m", "prompt": ["a", "b"]}))
    assert exc.value.status == 400 and exc.value.param == "prompt"


@given(st.integers(min_value=0, max_value=500), st.integers(min_value=0, max_value=50))
def test_output_text_recounts_to_its_tokens(n, start):
    assert count_text_tokens(output_text(n, start)) == n


@given(st.integers(min_value=1, max_value=40))
def test_stream_chunks_concatenate_to_the_full_text(n):
    import json

    for kind in ("completion", "chat"):
        shape = ResponseShape(kind, "x-1", "m", 0, 3, n, "length")
        chunks = [json.loads(shape.token_chunk(k)[6:]) for k in range(n)]
        key = (lambda c: c["choices"][0]["text"]) if kind == "completion" else (lambda c: c["choices"][0]["delta"]["content"])
        assert "".join(key(c) for c in chunks) == output_text(n)
        assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (n - 1) + ["length"]
        full = shape.full_body()
        assert full["usage"] == {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
