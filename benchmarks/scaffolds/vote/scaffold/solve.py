"""How the agent attacks a task: greedy plus sampled candidates, voted by execution agreement."""

import os
import re
import select

from scaffold import settings
from scaffold.text import doc_examples

EXAMPLE_TIMEOUT_S = settings.RUN_TIMEOUT_S


def solve(task, llm):
    prompt = task["prompt"]
    common = dict(max_tokens=settings.MAX_TOKENS, stop=settings.STOPS)
    greedy = llm.complete(prompt, temperature=0.0, **common)
    sampled = llm.complete(prompt, temperature=settings.TEMPERATURE, n=settings.SAMPLES, **common)
    programs = [prompt + c for c in greedy + sampled]
    calls = example_calls(task, llm)
    signatures = [outputs_of(p, calls) for p in programs]
    alive = [i for i, s in enumerate(signatures) if s is not None]
    if not alive:
        return programs[0]
    if settings.SELECT_BY_EXAMPLES and doc_examples(prompt):
        scores = {i: examples_passed(programs[i], prompt) for i in alive}
        top = max(scores.values())
        alive = [i for i in alive if scores[i] == top]
    votes = {i: sum(signatures[j] == signatures[i] for j in alive) for i in alive}
    best = max(votes.values())
    return programs[min(i for i in alive if votes[i] == best)]  # ties keep the earliest (greedy)


def example_calls(task, llm):
    """Calls of the entry point the model writes for itself (inputs only, no expected outputs)."""
    name = task["entry_point"]
    ask = (
        f"{task['prompt']}    pass\n\n\n# {settings.INPUT_CALLS} example calls of {name} with "
        f"typical arguments, one per line:\n{name}("
    )
    text = llm.complete(ask, max_tokens=160, temperature=0.0, stop=["\n\n", "\ndef "])[0]
    calls = []
    for line in (name + "(" + text).splitlines():
        line = line.strip()
        if re.match(re.escape(name) + r"\(.*\)$", line) and line not in calls:
            calls.append(line)
    return calls[: settings.INPUT_CALLS]


def _in_child(fn, timeout_s):
    """fn() run in a forked child; its repr'd result, or None if it crashed or timed out."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            out = repr(fn()).encode()[:100000]
        except BaseException:
            out = b""
        os.write(write_end, out or b"\x00")
        os._exit(0)
    os.close(write_end)
    chunks = []
    while True:
        ready, _, _ = select.select([read_end], [], [], timeout_s)
        if not ready:
            break
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    data = b"".join(chunks)
    return None if data in (b"", b"\x00") else data.decode("utf-8", "replace")


def outputs_of(program, calls):
    """What the program returns on each call (exceptions by type); None if it does not load."""

    def run():
        namespace = {}
        exec(program, namespace)
        results = []
        for call in calls:
            try:
                results.append(repr(eval(call, namespace))[:2000])
            except Exception as exc:
                results.append("raised " + type(exc).__name__)
        return tuple(results)

    return _in_child(run, settings.RUN_TIMEOUT_S * (1 + len(calls)))


def examples_passed(program, prompt):
    """How many of the prompt's `>>>` examples the program reproduces."""
    examples = doc_examples(prompt)

    def run():
        namespace = {}
        exec(program, namespace)
        passed = 0
        for call, expected in examples:
            try:
                value = eval(call, namespace)
                passed += repr(value) == expected or str(value) == expected
            except Exception:
                pass
        return passed

    out = _in_child(run, EXAMPLE_TIMEOUT_S)
    return int(out) if out and out.isdigit() else 0
