"""OpenAI request validation, error bodies and response / stream-chunk shapes.

Requests are validated with pydantic. The OpenAI sampling parameters (``temperature``,
``top_p``, penalties, ``seed``, ``stop``, ``user``) are type- and range-checked as the OpenAI API
does and then ignored (the simulator does not sample); other unknown fields are accepted. Every problem becomes :class:`APIError`, rendered as
OpenAI's error body ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.
Stream chunks are built from string templates (no ``json.dumps`` per token).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from fluidserve.serve.tokens import count_chat_tokens, count_prompt_tokens, output_text, output_token_json


class APIError(Exception):
    """An error answered to the client: HTTP ``status`` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: Any = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: StrictStr
    max_tokens: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = 1
    # checked like the OpenAI API (400 on a bad type or range), not used by the simulator
    temperature: float | None = Field(None, strict=True, ge=0, le=2)
    top_p: float | None = Field(None, strict=True, ge=0, le=1)
    presence_penalty: float | None = Field(None, strict=True, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, strict=True, ge=-2, le=2)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    user: StrictStr | None = None


class CompletionRequest(_Common):
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    echo: StrictBool = False
    best_of: StrictInt | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None


def _first_error(exc: ValidationError) -> APIError:
    err = exc.errors()[0]
    loc = [str(x) for x in err["loc"]]
    # pydantic reports each union member; keep the field path, drop the member type names
    path = ".".join(x for x in loc if not (x.startswith(("list[", "str", "int", "bool")) or x in ("function-after",)))
    param = loc[0] if loc else None
    if err["type"] == "missing":
        return APIError(400, f"'{path}' is a required property", param=param)
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {json.dumps(value)})"
    return APIError(400, f"{path}: {err['msg']}{shown}", param=param)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or 400."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def validate(kind: Literal["completion", "chat"], data: dict[str, Any]) -> CompletionRequest | ChatCompletionRequest:
    """Validate a request body; raises :class:`APIError` (400) naming the parameter."""
    if "model" not in data:
        raise APIError(400, "you must provide a model parameter ('model' is a required property)", param="model")
    cls = CompletionRequest if kind == "completion" else ChatCompletionRequest
    try:
        req = cls.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    if req.n != 1:
        raise APIError(400, f"n: only n=1 is supported by the simulated endpoint (got {req.n})", param="n")
    if isinstance(req, CompletionRequest):
        if req.echo:
            raise APIError(400, "echo: not supported by the simulated endpoint", param="echo")
        if req.best_of not in (None, 1):
            raise APIError(400, f"best_of: only 1 is supported (got {req.best_of})", param="best_of")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, name, None)
        if value is not None and value < 1:
            raise APIError(400, f"{name}: must be at least 1 (got {value})", param=name)
    return req


def prompt_tokens_of(req: CompletionRequest | ChatCompletionRequest) -> int:
    """Prompt tokens under the documented rule (fluidserve/serve/tokens.py)."""
    if isinstance(req, ChatCompletionRequest):
        return count_chat_tokens([m.model_dump() for m in req.messages])
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise APIError(400, f"prompt: batched prompts are not supported, send one prompt per request (got {len(prompt)})", param="prompt")
        prompt = prompt[0]
    return count_prompt_tokens(prompt)


def requested_max_tokens(req: CompletionRequest | ChatCompletionRequest) -> int | None:
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        return req.max_completion_tokens
    return req.max_tokens


class ResponseShape:
    """Builds the OpenAI JSON of one request: stream chunks, the final usage chunk, the full body.

    ``kind`` is ``"completion"`` (object ``text_completion``) or ``"chat"``
    (``chat.completion`` / ``chat.completion.chunk``).
    """

    def __init__(self, kind: str, request_id: str, model: str, created: int, prompt_tokens: int, completion_tokens: int, finish_reason: str):
        self.kind = kind
        self.id = request_id
        self.model = model
        self.created = created
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.finish_reason = finish_reason
        m = json.dumps(model)
        if kind == "completion":
            self._head = f'data: {{"id":"{request_id}","object":"text_completion","created":{created},"model":{m},"choices":[{{"index":0,"text":'
            self._tail_mid = ',"logprobs":null,"finish_reason":null}]}\n\n'
            self._tail_last = f',"logprobs":null,"finish_reason":"{finish_reason}"}}]}}\n\n'
            self._first_head = self._head
        else:
            self._head = f'data: {{"id":"{request_id}","object":"chat.completion.chunk","created":{created},"model":{m},"choices":[{{"index":0,"delta":{{"content":'
            self._first_head = self._head.replace('"delta":{"content":', '"delta":{"role":"assistant","content":')
            self._tail_mid = '},"logprobs":null,"finish_reason":null}]}\n\n'
            self._tail_last = f'}},"logprobs":null,"finish_reason":"{finish_reason}"}}]}}\n\n'

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def token_chunk(self, k: int) -> str:
        """SSE event carrying output token ``k`` (0-based); the last one has the finish reason."""
        head = self._first_head if k == 0 else self._head
        tail = self._tail_last if k == self.completion_tokens - 1 else self._tail_mid
        return head + output_token_json(k) + tail

    def usage_chunk(self) -> str:
        obj = "text_completion" if self.kind == "completion" else "chat.completion.chunk"
        body = {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": [], "usage": self.usage()}
        return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"

    @staticmethod
    def error_chunk(err: APIError) -> str:
        return "data: " + json.dumps(err.body(), separators=(",", ":")) + "\n\n"

    def full_body(self) -> dict[str, Any]:
        text = output_text(self.completion_tokens)
        if self.kind == "completion":
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": self.finish_reason}
            obj = "text_completion"
        else:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
            obj = "chat.completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": [choice], "usage": self.usage()}


DONE_EVENT = "data: [DONE]\n\n"
