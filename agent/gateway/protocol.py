"""The OpenAI wire format, the subset the gateway speaks: parse and validate request bodies, build
response and error bodies. No sockets, no sessions, no model: pure data in, data out.

A bad field is answered with a 400 whose message and `param` name it, so an agent reading its
own transcript can see what it got wrong.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["completion", "chat"]
ROLES = ("system", "user", "assistant", "tool", "developer")


class ApiError(Exception):
    """An HTTP error answer in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_field(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param)


@dataclass(frozen=True)
class Decoding:
    """Per-row decoding settings of one request; `max_tokens` as asked (the gateway clips it)."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None


@dataclass(frozen=True)
class Request:
    """A validated generation request: `prompts` (completions) or `messages` (chat), `n` rows per
    prompt. The raw body is kept for the transcript."""

    kind: Kind
    prompts: tuple[str, ...]
    messages: tuple[dict[str, str], ...]
    n: int
    decoding: Decoding
    body: dict[str, Any]
    # vLLM's `continue_final_message`: the reply continues the last (assistant) message, so an
    # agent can put words in the model's mouth (for example the opening of a code block).
    continue_final: bool = False

    @property
    def rows(self) -> int:
        return (len(self.prompts) if self.kind == "completion" else 1) * self.n


@dataclass(frozen=True)
class Outcome:
    """What a backend (local or external) produced for a request: one text per row in OpenAI's
    choice order (prompt-major), with OpenAI finish reasons and token counts."""

    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "body is not valid JSON: nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"body must be a JSON object, got {type(body).__name__}")
    return body


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(body: dict, name: str, default: int | None, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if not _is_int(value):
        raise bad_field(name, f"must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise bad_field(name, f"must be >= {minimum}, got {value}")
    return value


def _number(
    body: dict, name: str, default: float, low: float, high: float, low_open: bool
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise bad_field(name, f"must be a number, got {type(value).__name__}")
    if not (low < value <= high if low_open else low <= value <= high):
        bounds = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise bad_field(name, f"must be in {bounds}, got {value}")
    return float(value)


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad_field("stop", "must be a string or a list of strings")
    if any(not s for s in stops):
        raise bad_field("stop", "stop strings must be non-empty")
    return tuple(stops)


def _decoding(body: dict, default_max_tokens: int) -> Decoding:
    if body.get("stream"):
        raise bad_field("stream", "streaming is not supported")
    return Decoding(
        max_tokens=_int(body, "max_tokens", default_max_tokens, 1),  # type: ignore[arg-type]
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0, low_open=False),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        stop=_stop(body),
        seed=_int(body, "seed", None, 0),
    )


def _content(value: object, param: str) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        return "".join(p["text"] for p in value)
    raise bad_field(param, 'must be a string or a list of {"type": "text", "text": str} parts')


def parse_completion(body: dict[str, Any], default_max_tokens: int) -> Request:
    """`POST /v1/completions`: prompt (str or list of str), n, and the decoding fields."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts = (prompt,)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = tuple(prompt)
    else:
        raise bad_field("prompt", "must be a string or a non-empty list of strings")
    if any(not p for p in prompts):
        raise bad_field("prompt", "prompts must be non-empty")
    n = _int(body, "n", 1, 1)
    return Request("completion", prompts, (), n, _decoding(body, default_max_tokens), body)  # type: ignore[arg-type]


def parse_chat(body: dict[str, Any], default_max_tokens: int) -> Request:
    """`POST /v1/chat/completions`: messages ([{role, content}]), n, and the decoding fields."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_field("messages", "must be a non-empty list of {role, content} objects")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_field(f"messages[{i}]", "must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise bad_field(
                f"messages[{i}].role", f"must be one of {', '.join(ROLES)}, got {role!r}"
            )
        clean.append(
            {"role": role, "content": _content(message.get("content"), f"messages[{i}].content")}
        )
    continue_final = body.get("continue_final_message", False)
    if not isinstance(continue_final, bool):
        raise bad_field("continue_final_message", "must be true or false")
    if continue_final and clean[-1]["role"] != "assistant":
        raise bad_field(
            "continue_final_message", "needs the last message to be the assistant's (its start)"
        )
    n = _int(body, "n", 1, 1)
    return Request(
        "chat",
        (),
        tuple(clean),
        n,
        _decoding(body, default_max_tokens),
        body,
        continue_final,
    )


def _usage(outcome: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    }


def response_body(request: Request, outcome: Outcome, model: str) -> dict[str, Any]:
    """A `text_completion` or `chat.completion` object with one choice per row."""
    rows = zip(outcome.texts, outcome.finish_reasons, strict=True)
    if request.kind == "completion":
        choices = [
            {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
            for i, (text, reason) in enumerate(rows)
        ]
        kind, prefix = "text_completion", "cmpl"
    else:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
            }
            for i, (text, reason) in enumerate(rows)
        ]
        kind, prefix = "chat.completion", "chatcmpl"
    return {
        "id": f"{prefix}-{secrets.token_hex(12)}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(outcome),
    }


def models_body(*models: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "lineage"}
            for model in models
        ],
    }
