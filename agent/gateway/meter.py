"""Prompt tokens, counted before a call is admitted: the model's context caps them and a session's
prompt budget is charged them.

Counting tokenizes, which for a megabyte of text takes about a second; a prompt whose length alone
shows it is over the limit is refused without that. No token of the tokenizer's vocabulary spells
more characters than its longest entry, so a text of C characters has at least C / longest
tokens. Without a tokenizer a prompt counts one token per UTF-8 byte (plus one), which is at least
what a byte-level or byte-fallback tokenizer makes of it.

The tokenizer is shared with the backend without a lock: a fast tokenizer called with its default
settings only reads its state, and a lock would queue every session behind one long prompt.
"""

from __future__ import annotations

from typing import Any


class PromptMeter:
    """Tokens of prompts (with `tokenizer`, or by bytes without one) and the model's context:
    prompt plus completion tokens of one row (None: unknown, so uncapped)."""

    def __init__(self, tokenizer: Any = None, context_tokens: int | None = None) -> None:
        if context_tokens is not None and context_tokens < 2:
            raise ValueError(f"context_tokens must be >= 2 or None, got {context_tokens}")
        self.tokenizer = tokenizer
        self.context_tokens = context_tokens
        self.longest_token = 1
        if tokenizer is not None:
            self.longest_token = max((len(t) for t in tokenizer.get_vocab()), default=1)

    @classmethod
    def of(cls, backend: object) -> PromptMeter:
        """The meter of a backend's own `tokenizer` and context (a transformers model's
        positions, or a vLLM engine's `max_model_len`). A backend without a tokenizer gets the
        bytes meter and no context cap: bytes would refuse prompts the model can take."""
        tokenizer = getattr(backend, "tokenizer", None)
        if tokenizer is None:
            return cls()
        model_config = getattr(getattr(backend, "model", None), "config", None)
        context = getattr(model_config, "max_position_embeddings", None)
        if context is None:
            context = getattr(getattr(backend, "config", None), "max_model_len", None)
        return cls(tokenizer, context if isinstance(context, int) else None)

    def count(self, text: str, limit: int | None = None) -> int:
        """Tokens of `text`, exactly; or, when its length alone shows it has more than `limit`,
        a lower bound that is over `limit` (nothing is tokenized then)."""
        if limit is not None:
            at_least = -(-len(text) // self.longest_token)
            if at_least > limit:
                return at_least
        if self.tokenizer is None:
            return len(text.encode("utf-8", "surrogatepass")) + 1
        return len(self.tokenizer(text)["input_ids"])
