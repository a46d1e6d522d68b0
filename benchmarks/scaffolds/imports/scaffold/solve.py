"""How the agent attacks a task: continue the prompt, keep the best candidate, add the
standard-library imports it forgot."""

import os
import select

from scaffold import settings
from scaffold.imports import with_missing_imports
from scaffold.text import doc_examples

EXAMPLE_TIMEOUT_S = 2.0


def solve(task, llm):
    prompt = task["prompt"]
    completions = llm.complete(
        prompt,
        max_tokens=settings.MAX_TOKENS,
        temperature=settings.TEMPERATURE,
        stop=settings.STOPS,
        n=settings.SAMPLES,
    )
    programs = [with_missing_imports(prompt + c) for c in completions]
    if len(programs) > 1 and settings.SELECT_BY_EXAMPLES:
        scores = [examples_passed(p, prompt) for p in programs]
        return programs[scores.index(max(scores))]  # ties keep the earliest sample
    return programs[0]


def examples_passed(program, prompt):
    """How many of the prompt's examples the program reproduces, run in a child process with a
    time limit so a candidate that loops or crashes cannot take the agent down with it."""
    examples = doc_examples(prompt)
    if not examples:
        return 0
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: run the candidate, report a count, never return
        os.close(read_end)
        passed = 0
        try:
            namespace = {}
            exec(program, namespace)
            for call, expected in examples:
                try:
                    value = eval(call, namespace)
                    passed += repr(value) == expected or str(value) == expected
                except Exception:
                    pass
        except BaseException:
            pass
        os.write(write_end, str(passed).encode())
        os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], EXAMPLE_TIMEOUT_S)
    answer = os.read(read_end, 32) if ready else b""
    os.close(read_end)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    return int(answer) if answer.isdigit() else 0
