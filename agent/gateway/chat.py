"""Chat messages -> one prompt: the template a gateway applies to `/v1/chat/completions`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ChatTemplate = Callable[[list[dict]], str]


def tokenizer_chat_template(tokenizer: Any) -> ChatTemplate:
    """The model's own chat template (from its tokenizer), ending with the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{type(tokenizer).__name__} has no chat template; pass one explicitly")

    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return render
