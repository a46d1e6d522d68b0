"""One agent's session with the gateway: its budget (admission and settlement) and its transcript.

Tokens are reserved when a call is admitted (rows x clipped max_tokens) and settled with what was
really generated, so concurrent calls of one session can never overrun its token budget; prompt
tokens are known at admission and charged then. Every call is recorded, refused ones included:
the transcripts feed the diagnosis of a run. A refused call is recorded by its size and reason,
never its body, and only the first `max_refusals` are kept (the rest are counted), so an agent
cannot grow its record by sending what will be refused.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.gateway.config import Budget, ExternalEndpoint
from agent.gateway.protocol import ApiError


@dataclass(frozen=True)
class CallRecord:
    """One HTTP call: the request body as sent, the prompts the model saw (a chat rendered by the
    template), the texts it returned, generated tokens, wall seconds, and the error if it failed.
    A refused call has an empty `request` and no prompts: only `body_bytes` and the error."""

    endpoint: str
    request: dict[str, Any]
    prompts: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    body_bytes: int = 0
    prompt_tokens: int = 0


@dataclass(frozen=True)
class SessionRecord:
    """A closed session: what it asked, what it got, and what it spent. `refused_calls` counts
    every refused call, also those past the records kept."""

    label: str
    member: int
    calls: list[CallRecord]
    tokens_used: int
    calls_used: int
    seconds_used: float
    exhausted: bool
    prompt_tokens_used: int = 0
    refused_calls: int = 0


def budget_exhausted(message: str) -> ApiError:
    return ApiError(429, message, type="insufficient_quota", code="budget_exhausted")


class Session:
    """Budget bookkeeping and transcript of one bearer token; thread-safe."""

    def __init__(
        self,
        label: str,
        budget: Budget,
        member: int,
        external: ExternalEndpoint | None = None,
        api_key: str | None = None,
        max_refusals: int = 100,
    ) -> None:
        self.label = label
        self.budget = budget
        self.member = member
        self.external = external
        self.api_key = api_key
        self.max_refusals = max_refusals
        self._lock = threading.Lock()
        self._calls: list[CallRecord] = []
        self._tokens_used = 0
        self._tokens_reserved = 0
        self._prompt_tokens_used = 0
        self._calls_used = 0
        self._refused = 0
        self._in_flight = 0
        self._started: float | None = None
        self._exhausted = False

    def enter(self, limit: int) -> bool:
        """Take one of the session's `limit` places for requests in flight; False when all are
        taken. Every True is paired with one `leave`."""
        with self._lock:
            if self._in_flight >= limit:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def prompt_tokens_left(self) -> int | None:
        """Prompt tokens the budget still allows (None: unlimited)."""
        if self.budget.prompt_tokens is None:
            return None
        with self._lock:
            return max(0, self.budget.prompt_tokens - self._prompt_tokens_used)

    def admit(self, rows: int, max_tokens: int, cap: int, prompt_tokens: int = 0) -> int:
        """Start a call of `rows` rows whose prompts are `prompt_tokens` tokens (all rows): the
        per-row max_tokens it may generate (clipped to `cap` and to the token budget left),
        reserved until `settle`; the prompt tokens are charged now. Raises a 429 when a budget is
        spent, and from then on the session stays exhausted."""
        with self._lock:
            now = time.monotonic()
            if self._started is None:
                self._started = now
            budget = self.budget
            reason = None
            allowed = min(max_tokens, cap, budget.max_tokens_per_call or cap)
            if self._exhausted:
                reason = "the session's budget is exhausted"
            elif budget.calls is not None and self._calls_used >= budget.calls:
                reason = f"call budget exhausted: {self._calls_used} of {budget.calls} calls used"
            elif budget.seconds is not None and now - self._started >= budget.seconds:
                reason = (
                    f"time budget exhausted: {now - self._started:.1f}s of {budget.seconds}s "
                    "since the first call"
                )
            elif (
                budget.prompt_tokens is not None
                and self._prompt_tokens_used + prompt_tokens > budget.prompt_tokens
            ):
                left = max(0, budget.prompt_tokens - self._prompt_tokens_used)
                reason = (
                    f"prompt token budget exhausted: {left} of {budget.prompt_tokens} prompt "
                    f"tokens left, this call's prompts are {prompt_tokens}"
                )
            elif budget.tokens is not None:
                left = budget.tokens - self._tokens_used - self._tokens_reserved
                if left < rows:
                    reason = (
                        f"token budget exhausted: {max(left, 0)} of {budget.tokens} tokens left, "
                        f"this call needs at least {rows} (one per row)"
                    )
                allowed = min(allowed, left // rows)
            if reason is not None:
                self._exhausted = True
                raise budget_exhausted(reason)
            self._calls_used += 1
            self._tokens_reserved += rows * allowed
            self._prompt_tokens_used += prompt_tokens
            return allowed

    def seconds_left(self) -> float | None:
        """Wall seconds left of the time budget (None: unlimited)."""
        if self.budget.seconds is None:
            return None
        with self._lock:
            started = self._started if self._started is not None else time.monotonic()
            return max(0.0, self.budget.seconds - (time.monotonic() - started))

    def settle(self, reserved: int, record: CallRecord) -> None:
        """End an admitted call: release its reservation, charge what it generated, record it."""
        with self._lock:
            self._tokens_reserved -= reserved
            self._tokens_used += record.tokens
            self._calls.append(record)

    def refuse(self, record: CallRecord) -> None:
        """Record a call that was never admitted (refused or malformed): counted always, kept
        while fewer than `max_refusals` are."""
        with self._lock:
            self._refused += 1
            if self._refused <= self.max_refusals:
                self._calls.append(record)

    def snapshot(self) -> SessionRecord:
        with self._lock:
            seconds = 0.0 if self._started is None else time.monotonic() - self._started
            return SessionRecord(
                label=self.label,
                member=self.member,
                calls=list(self._calls),
                tokens_used=self._tokens_used,
                calls_used=self._calls_used,
                seconds_used=seconds,
                exhausted=self._exhausted,
                prompt_tokens_used=self._prompt_tokens_used,
                refused_calls=self._refused,
            )
