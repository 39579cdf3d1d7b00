"""The simulated endpoint's token rules: how long a prompt is, and what the output says.

Prompt token-count rule (documented, deterministic, tokenizer-free):

* a string prompt counts one token per word (a maximal run of letters, digits and ``_``) and
  one per other non-space character (punctuation, symbols), i.e. the matches of
  ``\\w+|[^\\w\\s]``; so ``"hello " * 100`` is 100 tokens and ``"Hi, you!"`` is 4;
* a prompt given as a list of token ids (``[101, 7592, ...]``) counts one token per id;
* a chat request counts the sum over its messages of the tokens of each message's text
  content (string content, or the ``text`` of ``{"type": "text"}`` parts); roles and the
  chat template add nothing;
* every prompt counts at least 1 token (an empty prompt is one BOS token).

Output text: token ``k`` (0-based) of a completion is ``" " + OUTPUT_WORDS[k % len]``, a word,
so the completion text re-counts to exactly the number of generated tokens under the rule.
"""

from __future__ import annotations

import json
import re
from typing import Any

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

OUTPUT_WORDS = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim",
)
# JSON-encoded token texts, precomputed for the streaming hot path
OUTPUT_TEXTS_JSON = tuple(json.dumps(" " + w) for w in OUTPUT_WORDS)


def count_text_tokens(text: str) -> int:
    """Tokens of a string under the rule (0 for an empty or all-space string)."""
    return len(TOKEN_PATTERN.findall(text))


def count_prompt_tokens(prompt: str | list[int]) -> int:
    """Prompt tokens of a completion prompt: a string or a list of token ids (at least 1)."""
    n = len(prompt) if isinstance(prompt, list) else count_text_tokens(prompt)
    return max(1, n)


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, None, or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


def count_chat_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens of a chat request: the sum over messages of their text tokens (at least 1)."""
    return max(1, sum(count_text_tokens(message_text(m.get("content"))) for m in messages))


def output_text(num_tokens: int, start: int = 0) -> str:
    """The text of output tokens ``start .. start + num_tokens - 1``."""
    n = len(OUTPUT_WORDS)
    return "".join(" " + OUTPUT_WORDS[k % n] for k in range(start, start + num_tokens))


def output_token_json(k: int) -> str:
    """JSON string literal of output token ``k`` (for building SSE chunks without json.dumps)."""
    return OUTPUT_TEXTS_JSON[k % len(OUTPUT_TEXTS_JSON)]
