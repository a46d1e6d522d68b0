"""How a code benchmark's task is put to a model, and how its answer becomes the program judged.

Two protocols:

- `completion`, for base models: the task's prompt as-is; the model continues the function body,
  and a new top-level statement means the function is done, so generation stops there and the
  completion is cut before it (the Codex paper's convention). The program is prompt + completion.
- `instruct`, for chat models, exactly EvalPlus's (the protocol behind the Qwen2.5-Coder
  technical report's figures): one user message asking for "a self-contained Python script" with
  the prompt in a fence; the assistant's reply is pre-started with EvalPlus's sentence and an
  opening ```python fence; generation stops at the closing fence (or EvalPlus's other stops); the
  program is the reply through `evaluators.sanitize.reply_program`.

The chat template renders the user turn and opens the assistant's; the reply's start follows
verbatim. That is exactly what the gateway sends the backend for a chat whose last (assistant)
message is continued (`continue_final_message`), which is how the seed scaffold asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from evaluators.sanitize import reply_program

if TYPE_CHECKING:
    from agent.gateway.chat import ChatTemplate

ProtocolName = Literal["completion", "instruct"]
PROTOCOLS: tuple[ProtocolName, ...] = ("completion", "instruct")

COMPLETION_STOPS: tuple[str, ...] = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")

# The seed scaffold carries its own copies of these three (agent/scaffold/seed/scaffold/
# settings.py): knobs its self-edits may change; test_seed_protocol checks the seed starts equal.
INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:"
)
RESPONSE_PREFIX = (
    "Below is a Python script with a self-contained function that solves the problem and passes "
    "corresponding tests:"
)
# The closing fence, and EvalPlus's stops for replies that go on into a demo.
INSTRUCT_STOPS: tuple[str, ...] = ("\n```\n", "\nif __name__", "\ndef main(", "\nprint(")
# Token budgets per reply: a completion is a function body; an instruct reply restates the
# signature and docstring first (EvalPlus allows 768).
MAX_NEW_TOKENS: dict[str, int] = {"completion": 384, "instruct": 768}


def completion_prompt(task_prompt: str) -> str:
    """The text the model continues: the task's prompt, unchanged."""
    return task_prompt


def instruct_messages(task_prompt: str) -> list[dict[str, str]]:
    """The chat of the instruct protocol: the user's request and the assistant's pre-started
    reply (to be continued, not answered)."""
    request = f"{INSTRUCTION}\n```\n{task_prompt.strip()}\n```\n"
    opening = f"{RESPONSE_PREFIX}\n```python\n"
    return [{"role": "user", "content": request}, {"role": "assistant", "content": opening}]


def instruct_prompt(task_prompt: str, template: ChatTemplate) -> str:
    """The text the model continues: the templated user turn, then the reply's start (as the
    gateway renders a chat with `continue_final_message`)."""
    *turns, opening = instruct_messages(task_prompt)
    return template(turns) + opening["content"]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def default_protocol(tokenizer: Any) -> ProtocolName:
    """instruct for a model whose tokenizer has a chat template, completion otherwise."""
    return "instruct" if has_chat_template(tokenizer) else "completion"


def protocol_stops(protocol: ProtocolName) -> tuple[str, ...]:
    return INSTRUCT_STOPS if protocol == "instruct" else COMPLETION_STOPS


def task_prompts(
    protocol: ProtocolName, task_prompts: Sequence[str], template: ChatTemplate | None
) -> list[str]:
    """What the model continues for each task under `protocol`."""
    if protocol == "completion":
        return [completion_prompt(p) for p in task_prompts]
    if template is None:
        raise ValueError("the instruct protocol needs the model's chat template")
    return [instruct_prompt(p, template) for p in task_prompts]


def program(protocol: ProtocolName, task_prompt: str, entry_point: str, text: str) -> str:
    """The program judged for a generated `text`: prompt + completion, or the sanitized reply."""
    if protocol == "completion":
        return task_prompt + text
    return reply_program(text, entry_point)


def truncate_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """`text` cut at the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
