"""How the agent attacks a task: candidates from two views of the prompt, chosen by self-written
tests.

Candidates: the greedy continuation of the prompt (the seed's answer), the chat model's greedy
answer to "complete this function" (a different view of the same task, often right where the
continuation is wrong), and a few continuations sampled at a low temperature. The model writes a
few asserts for the entry point (inputs and the outputs it expects), and each candidate runs them
in a child process with a time limit. Candidates that pass the same tests agree; a group scores
its size times the number of tests it passes (CodeT's dual agreement, Chen et al. 2022: a wrong
assert is outvoted when most candidates disagree with it), and the best group's earliest
candidate wins (the greedy continuation first). A candidate that does not even load, or runs out
of time, is in no group."""

import os
import select
from concurrent.futures import ThreadPoolExecutor

from scaffold import settings
from scaffold.text import doc_examples, last_code_block


def solve(task, llm):
    prompt = task["prompt"]
    common = dict(max_tokens=settings.MAX_TOKENS, stop=settings.STOPS)
    # Independent calls, sent together: each is batched with the same kind of call of other tasks.
    with ThreadPoolExecutor(max_workers=4) as calls:
        greedy = calls.submit(llm.complete, prompt, temperature=0.0, **common)
        chatted = calls.submit(chat_program, task, llm)
        sampled = calls.submit(
            llm.complete, prompt, temperature=settings.TEMPERATURE, n=settings.SAMPLES, **common
        )
        asserts = calls.submit(own_tests, task, llm)
    programs = [prompt + greedy.result()[0], chatted.result()]
    programs += [prompt + c for c in sampled.result()]
    tests = asserts.result()
    if not tests:
        return programs[0]
    return programs[dual_agreement([tests_passed(p, tests) for p in programs])]


def chat_program(task, llm):
    """The chat model's whole function, under the prompt's imports (the part before the `def`)."""
    prompt = task["prompt"]
    ask = settings.CHAT_ASK + "\n\n```python\n" + prompt + "```"
    reply = llm.chat(
        [{"role": "user", "content": ask}], max_tokens=settings.CHAT_MAX_TOKENS, temperature=0.0
    )[0]
    code = last_code_block(reply)
    imports = prompt.split("def " + task["entry_point"], 1)[0]
    return imports + (reply if code is None else code)


def dual_agreement(passed):
    """Index of the chosen candidate, given each one's passed tests (None: did not run)."""
    groups = {}
    for index, tests in enumerate(passed):
        if tests is not None:
            groups.setdefault(tests, []).append(index)
    if not groups:
        return 0
    best = max(groups.values(), key=lambda group: (len(group) * len(passed[group[0]]), -group[0]))
    return best[0]


def own_tests(task, llm):
    """Asserts about the entry point that the model writes for itself; lines that do not even
    compile are dropped."""
    name = task["entry_point"]
    opening = f"assert {name}("
    ask = f"{task['prompt']}    pass\n\n\n# {settings.TESTS} tests of {name}:\n{opening}"
    text = llm.complete(
        ask, max_tokens=200, temperature=0.0, stop=["\n\n", "\ndef ", "\nif ", "\nprint"]
    )[0]
    tests = []
    for line in (opening + text).splitlines():
        line = line.strip()
        if line.startswith(opening) and line not in tests and _compiles(line):
            tests.append(line)
    return tests[: settings.TESTS]


def _compiles(line):
    try:
        compile(line, "<test>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def tests_passed(program, tests):
    """Indices of the `tests` the program passes; None if it does not load or runs out of time."""
    checks = [lambda namespace, test=test: exec(test, namespace) or True for test in tests]
    return _checks_passed(program, checks, settings.RUN_TIMEOUT_S * (1 + len(tests)))


def _checks_passed(program, checks, timeout_s):
    """Indices of the `checks` (functions of the program's namespace) that return true, run in
    a child process with a time limit; None if the program does not load or runs out of time."""

    def run():
        namespace = {}
        exec(program, namespace)
        passed = ""
        for check in checks:
            try:
                passed += "1" if check(namespace) else "0"
            except Exception:
                passed += "0"
        return passed

    out = _in_child(run, timeout_s)
    if out is None or len(out) != len(checks) + 2:  # repr of a string of 0s and 1s
        return None
    return frozenset(i for i, mark in enumerate(out[1:-1]) if mark == "1")


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


def examples_passed(program, prompt):
    """How many of the prompt's `>>>` examples the program reproduces."""

    def reproduces(call, expected):
        def check(namespace):
            value = eval(call, namespace)
            return repr(value) == expected or str(value) == expected

        return check

    checks = [reproduces(call, expected) for call, expected in doc_examples(prompt)]
    return len(_checks_passed(program, checks, settings.RUN_TIMEOUT_S) or ())
