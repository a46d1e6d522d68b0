"""Forwarding a session's calls to an external OpenAI-compatible server (stdlib urllib).

The body is rebuilt from the validated request, not passed through: the endpoint's model replaces
the agent's, `max_tokens` is the gateway's clipped value, and unknown fields stay behind. The
remote's answer comes back as an `Outcome`, so budgets and transcripts work as for the local model.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from agent.gateway.config import ExternalEndpoint
from agent.gateway.protocol import ApiError, Outcome, Request


def request_body(endpoint: ExternalEndpoint, request: Request, max_tokens: int) -> dict[str, Any]:
    d = request.decoding
    body: dict[str, Any] = {
        "model": endpoint.model,
        "max_tokens": max_tokens,
        "temperature": d.temperature,
        "top_p": d.top_p,
        "n": request.n,
    }
    if request.kind == "completion":
        body["prompt"] = request.prompts[0] if len(request.prompts) == 1 else list(request.prompts)
    else:
        body["messages"] = [dict(m) for m in request.messages]
    if d.stop:
        body["stop"] = list(d.stop)
    if d.seed is not None:
        body["seed"] = d.seed
    return body


def _remote_message(error: urllib.error.HTTPError) -> str:
    raw = error.read()[:2000].decode("utf-8", "replace")
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return raw.strip() or str(error.reason)


def parse_outcome(answer: object, request: Request, max_tokens: int) -> Outcome:
    """Texts in choice order; without a `usage` the call is charged its full reservation."""
    try:
        choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))  # type: ignore[index]
        if request.kind == "completion":
            texts = [str(c["text"]) for c in choices]
        else:
            texts = [str(c["message"].get("content") or "") for c in choices]
        reasons = ["length" if c.get("finish_reason") == "length" else "stop" for c in choices]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ApiError(
            502, f"external endpoint answered without valid choices: {exc!r}", type="api_error"
        ) from None
    if len(texts) != request.rows:
        raise ApiError(
            502,
            f"external endpoint answered {len(texts)} choices for {request.rows} rows",
            type="api_error",
        )
    usage = answer.get("usage") if isinstance(answer, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    completion = usage.get("completion_tokens")
    prompt = usage.get("prompt_tokens")
    return Outcome(
        texts=texts,
        finish_reasons=reasons,
        prompt_tokens=prompt if isinstance(prompt, int) else 0,
        completion_tokens=completion if isinstance(completion, int) else request.rows * max_tokens,
    )


def forward(
    endpoint: ExternalEndpoint,
    api_key: str | None,
    request: Request,
    max_tokens: int,
    timeout_s: float,
) -> Outcome:
    """POST the request to the endpoint; its 4xx about the request come back as 400 (the agent's
    mistake, e.g. a prompt over the context), anything else as 502, a timeout as 504."""
    path = "/completions" if request.kind == "completion" else "/chat/completions"
    url = endpoint.base_url.rstrip("/") + path
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(request_body(endpoint, request, max_tokens)).encode()
    http = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(http, timeout=timeout_s) as reply:
            answer = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        message = f"external endpoint {url} answered {exc.code}: {_remote_message(exc)}"
        if exc.code in (400, 413, 422):
            raise ApiError(400, message) from None
        raise ApiError(502, message, type="api_error") from None
    except TimeoutError as exc:
        raise ApiError(
            504,
            f"external endpoint {url} timed out after {timeout_s:.0f}s: {exc}",
            type="api_error",
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise ApiError(
                504, f"external endpoint {url} timed out after {timeout_s:.0f}s", type="api_error"
            ) from None
        raise ApiError(
            502, f"external endpoint {url} unreachable: {exc.reason}", type="api_error"
        ) from None
    except (ValueError, OSError) as exc:
        raise ApiError(502, f"external endpoint {url} failed: {exc!r}", type="api_error") from None
    return parse_outcome(answer, request, max_tokens)
