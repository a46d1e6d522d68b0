"""Settings of the LLM gateway, a session's budget, and an external OpenAI-compatible endpoint.

Each is a frozen dataclass validated once (TRL's config style): a bad value fails where it is
written, naming the field, not later inside a request handler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway listens and batches.

    - `socket_dir`: host folder for the Unix socket `llm.sock` (None: a fresh temp folder, removed
      on close). The folder is what the sandbox mounts into containers.
    - `batch_window_s`: how long the batcher waits, from the first queued request, for more
      requests to share one `generate` call.
    - `max_batch_rows`: most rows (prompts x n) in one batch; also the backend's batch size.
    - `max_tokens_cap`: no call generates more tokens per row than this.
    - `default_max_tokens`: per-row tokens when a request names no `max_tokens`.
    - `model_name`: the local policy's name in `/v1/models` and in responses.
    - `reuse_greedy_mb` (64): greedy replies kept for equal requests to the same weights
      (`agent/gateway/reuse.py`), at most this many MB of their text; 0 keeps none. Only
      a gateway told which weights generate (the loop's) keeps any.

    What one agent can make the gateway hold (every agent is untrusted; the bounds keep the host's
    memory and threads, and the other sessions' service, safe from any one of them):

    - `max_body_bytes` (1 MiB): a request announcing a longer body is answered 413 before any of
      it is read. A prompt filling a 32k-token context is about 130 KB.
    - `max_header_bytes` (16 KiB): request line and headers together; over it, 431.
    - `header_timeout_s` (5 s): a connection whose request line and headers have not all arrived
      this long after it opened (or after its previous answer) is dropped.
    - `body_timeout_s` (10 s): the same for the body, counted from the end of the headers, and for
      writing the answer to a client that does not read it.
    - `max_connections` (256): open connections in all, one handler thread each. At the cap, a
      new connection evicts the oldest one still waiting for its headers (a half-sent request);
      with none to evict it is answered 503 `overloaded` at once, without a thread.
    - `max_session_calls` (16): requests of one session past their headers at once (receiving
      the body, generating, answering); more are answered 503 `overloaded`. The session is known
      only from the token in the headers, so this is what bounds one agent's share of threads,
      body buffers and tokenizing. The client retries `overloaded` answers with backoff.
    - `max_refusal_records` (100): refused calls (malformed, over a bound, over budget) kept in
      the session's record, sizes and reasons only; later ones are only counted.
    """

    socket_dir: str | None = None
    batch_window_s: float = 0.03
    max_batch_rows: int = 64
    max_tokens_cap: int = 1024
    default_max_tokens: int = 384
    model_name: str = "lineage-policy"
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 16 << 10
    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    max_connections: int = 256
    max_session_calls: int = 16
    max_refusal_records: int = 100
    reuse_greedy_mb: int = 64

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_header_bytes",
            "max_connections",
            "max_session_calls",
            "max_refusal_records",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"GatewayConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(
                    f"GatewayConfig.{name} must be in (0, 3600], got {getattr(self, name)}"
                )
        if self.socket_dir is not None and not self.socket_dir:
            raise ValueError("GatewayConfig.socket_dir must be a path or None, got ''")
        if not 0 <= self.batch_window_s <= 10:
            raise ValueError(
                f"GatewayConfig.batch_window_s must be in [0, 10], got {self.batch_window_s}"
            )
        if self.max_batch_rows < 1:
            raise ValueError(
                f"GatewayConfig.max_batch_rows must be >= 1, got {self.max_batch_rows}"
            )
        if self.max_tokens_cap < 1:
            raise ValueError(
                f"GatewayConfig.max_tokens_cap must be >= 1, got {self.max_tokens_cap}"
            )
        if not 1 <= self.default_max_tokens <= self.max_tokens_cap:
            raise ValueError(
                "GatewayConfig.default_max_tokens must be in [1, max_tokens_cap="
                f"{self.max_tokens_cap}], got {self.default_max_tokens}"
            )
        if not 0 <= self.reuse_greedy_mb <= 1 << 16:
            raise ValueError(
                "GatewayConfig.reuse_greedy_mb must be in [0, 65536] (0: none kept), got "
                f"{self.reuse_greedy_mb}"
            )
        if not self.model_name:
            raise ValueError("GatewayConfig.model_name must be non-empty")


@dataclass(frozen=True)
class Budget:
    """What one session may spend; None means unlimited.

    - `tokens`: generated tokens over all calls (each call's `max_tokens` is clipped to what is
      left, divided over its rows, so the budget is never overrun).
    - `seconds`: wall time since the session's first call.
    - `calls`: HTTP calls that generate (completions and chat).
    - `max_tokens_per_call`: a call asking for more tokens per row gets this many (a run-away
      completion holds the whole batch it decodes in).
    - `prompt_tokens`: prompt tokens over all calls, each row counted (a prompt with n=4 is
      prefilled four times). Separate from `tokens`, which callers size for generation (a
      diagnosis call's prompt alone is longer than its 256 generated tokens). Every prompt is also
      capped by the model's context, whatever the budget.
    """

    tokens: int | None = None
    seconds: float | None = None
    calls: int | None = None
    max_tokens_per_call: int | None = None  # per-row cap on any one call's max_tokens
    prompt_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens_per_call is not None and self.max_tokens_per_call < 1:
            raise ValueError(
                f"Budget.max_tokens_per_call must be >= 1 or None, got {self.max_tokens_per_call!r}"
            )
        for name in ("tokens", "seconds", "calls", "prompt_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ValueError(f"Budget.{name} must be >= 0 or None, got {value!r}")


@dataclass(frozen=True)
class ExternalEndpoint:
    """An OpenAI-compatible server (vLLM serve, llama.cpp server, a hosted API) that serves a
    session instead of the local backend.

    - `base_url`: up to and including the version, e.g. `http://127.0.0.1:8000/v1`.
    - `model`: the model name sent in every request (the agent's own `model` is replaced).
    - `api_key_env`: environment variable holding the bearer key (None: no key sent); read when a
      session opens, so a missing one fails there.
    - `timeout_s`: per-call limit (also cut to the session's remaining seconds).
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"ExternalEndpoint.base_url must start with http:// or https://, got {self.base_url!r}"
            )
        if not self.model:
            raise ValueError("ExternalEndpoint.model must be non-empty")
        if self.api_key_env is not None and not self.api_key_env:
            raise ValueError("ExternalEndpoint.api_key_env must be a variable name or None")
        if self.timeout_s <= 0:
            raise ValueError(f"ExternalEndpoint.timeout_s must be > 0, got {self.timeout_s}")
