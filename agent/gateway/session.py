"""One agent's session with the gateway: its budget (admission and settlement) and its transcript.

Tokens are reserved when a call is admitted (rows x clipped max_tokens) and settled with what was
really generated, so concurrent calls of one session can never overrun its token budget. Every
call is recorded, refused ones included: the transcripts feed the diagnosis of a run.
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
    template), the texts it returned, generated tokens, wall seconds, and the error if it failed."""

    endpoint: str
    request: dict[str, Any]
    prompts: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """A closed session: what it asked, what it got, and what it spent."""

    label: str
    member: int
    calls: list[CallRecord]
    tokens_used: int
    calls_used: int
    seconds_used: float
    exhausted: bool


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
    ) -> None:
        self.label = label
        self.budget = budget
        self.member = member
        self.external = external
        self.api_key = api_key
        self._lock = threading.Lock()
        self._calls: list[CallRecord] = []
        self._tokens_used = 0
        self._tokens_reserved = 0
        self._calls_used = 0
        self._started: float | None = None
        self._exhausted = False

    def admit(self, rows: int, max_tokens: int, cap: int) -> int:
        """Start a call of `rows` rows: the per-row max_tokens it may generate (clipped to `cap`
        and to the token budget left), reserved until `settle`. Raises a 429 when a budget is
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

    def record(self, record: CallRecord) -> None:
        """Record a call that was never admitted (refused or malformed)."""
        with self._lock:
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
            )
