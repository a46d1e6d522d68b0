"""Completion-mode prompting for base-model code benchmarks (HumanEval, MBPP): the prompt as-is.

The model continues the function body; a new top-level statement means the function is done, so
generation stops there and the completion is cut before it (the Codex paper's convention).
"""

from __future__ import annotations

COMPLETION_STOPS: tuple[str, ...] = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")


def completion_prompt(task_prompt: str) -> str:
    """The text the model continues: the task's prompt, unchanged."""
    return task_prompt


def truncate_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """`text` cut at the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
