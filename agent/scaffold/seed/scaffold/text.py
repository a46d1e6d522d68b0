"""Pulling code out of model output, and the examples out of a prompt's docstring."""

import re

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def code_blocks(text):
    """The fenced code blocks of a reply, in order."""
    return [m.group(1) for m in _FENCE.finditer(text)]


def last_code_block(text):
    """The last fenced block, or None: models often restate the question before answering."""
    blocks = code_blocks(text)
    return blocks[-1] if blocks else None


def doc_examples(prompt):
    """(call, expected) pairs from `>>> call` lines followed by an expected-output line."""
    lines = prompt.splitlines()
    examples = []
    for i, line in enumerate(lines[:-1]):
        stripped = line.strip()
        if stripped.startswith(">>> "):
            expected = lines[i + 1].strip()
            if expected and not expected.startswith(">>>"):
                examples.append((stripped[4:], expected))
    return examples
