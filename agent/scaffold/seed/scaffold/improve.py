"""How the agent edits itself: ask the model for a new version of one file of this repository."""

import os

from scaffold.text import last_code_block

DEFAULT_TARGET = "scaffold/settings.py"


def improve(workspace, problem_statement, llm):
    target = pick_target(workspace, problem_statement)
    path = os.path.join(workspace, target)
    with open(path) as f:
        current = f.read()
    messages = [
        {
            "role": "system",
            "content": "You improve a Python coding agent. Reply with the complete new version "
            "of the file in one ```python code block.",
        },
        {
            "role": "user",
            "content": f"Problem:\n{problem_statement}\n\nFile {target}:\n```python\n{current}```",
        },
    ]
    reply = llm.chat(messages, max_tokens=768, temperature=0.7)[0]
    code = last_code_block(reply)
    if not code or not code.strip():
        raise RuntimeError("the model's reply has no code block")
    with open(path, "w") as f:
        f.write(code)


def pick_target(workspace, problem_statement):
    """The first repository file the problem statement names, else the settings."""
    for root, _dirs, files in os.walk(workspace):
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), workspace)
            if rel.endswith(".py") and rel in problem_statement:
                return rel
    return DEFAULT_TARGET
