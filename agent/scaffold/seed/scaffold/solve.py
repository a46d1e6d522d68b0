"""How the agent attacks a task: ask the model for programs, keep the best candidate.

`settings.PROTOCOL` picks how the task is put to the model (see settings.py). "instruct" is the
evaluators' own instruct protocol, message for message, and its replies become programs through
the evaluators' own sanitizer (`lineage_sanitize`, written beside this package in the sandbox), so
the seed scores what `lineage eval --protocol instruct` scores with the same model.
"""

import json
import os
import select
import time

from lineage_llm import LLMError
from lineage_sanitize import reply_program

from scaffold import settings
from scaffold.text import doc_examples

EXAMPLE_TIMEOUT_S = 2.0
FAILURE_CHARS = 300  # of a failure shown to the model when it repairs
_NO_CHAT_TEMPLATE = []  # set once the gateway says its model has no chat template


def solve(task, llm):
    prompt = task["prompt"]
    programs = candidates(task, llm, settings.SAMPLES, settings.TEMPERATURE)
    checking = (
        (settings.SELECT_BY_EXAMPLES and len(programs) > 1)
        or settings.RETRY_SAMPLES > 0
        or settings.REPAIR_ROUNDS > 0
    )
    examples = doc_examples(prompt) if checking else []
    if not examples:
        return programs[0]
    reports = [run_examples(p, prompt) for p in programs]  # (examples passed, first failure)
    if max(passed for passed, _ in reports) < len(examples) and settings.RETRY_SAMPLES > 0:
        more = candidates(task, llm, settings.RETRY_SAMPLES, settings.RETRY_TEMPERATURE)
        programs += more
        reports += [run_examples(p, prompt) for p in more]
    scores = [passed for passed, _ in reports]
    best = scores.index(max(scores))  # ties keep the earliest program
    return repaired(task, llm, programs[best], *reports[best], len(examples))


def repaired(task, llm, program, passed, failure, examples):
    """`program` (passing `passed` of the examples, `failure` the first it fails) after up to
    `settings.REPAIR_ROUNDS` rounds of showing the model that failure; a round's fix is kept only
    if it passes more examples."""
    for _ in range(settings.REPAIR_ROUNDS):
        if passed == examples or failure is None:
            break
        if settings.PROTOCOL != "instruct" or _NO_CHAT_TEMPLATE:
            break
        fixed = instruct_programs(task, llm, 1, 0.0, (program, failure))[0]
        fixed_passed, fixed_failure = run_examples(fixed, task["prompt"])
        if fixed_passed <= passed:
            break
        program, passed, failure = fixed, fixed_passed, fixed_failure
    return program


def candidates(task, llm, n, temperature):
    """`n` programs under `settings.PROTOCOL` (instruct falls back to completion for a model
    without a chat template)."""
    if settings.PROTOCOL not in ("instruct", "completion"):
        raise ValueError(
            f"settings.PROTOCOL must be 'instruct' or 'completion', not {settings.PROTOCOL!r}"
        )
    if settings.PROTOCOL == "instruct" and not _NO_CHAT_TEMPLATE:
        try:
            return instruct_programs(task, llm, n, temperature)
        except LLMError as exc:
            if exc.status != 400 or "chat template" not in str(exc):
                raise
            _NO_CHAT_TEMPLATE.append(True)
    return completion_programs(task, llm, n, temperature)


def instruct_programs(task, llm, n, temperature, attempt=None):
    """Ask for a self-contained script, with the reply started by an opening fence; keep its
    imports and the definitions the entry point needs. `attempt` = (program, what failed): the
    earlier answer and the failure are shown, and a corrected script is asked for."""
    fence = settings.FENCE
    request = f"{settings.INSTRUCTION}\n{fence}\n{task['prompt'].strip()}\n{fence}\n"
    opening = f"{settings.RESPONSE_PREFIX}\n{fence}python\n"
    messages = [{"role": "user", "content": request}]
    if attempt is not None:
        program, failure = attempt
        messages += [
            {"role": "assistant", "content": f"{opening}{program.strip()}\n{fence}"},
            {"role": "user", "content": settings.REPAIR_INSTRUCTION.replace("{failure}", failure)},
        ]
    replies = llm.chat(
        [*messages, {"role": "assistant", "content": opening}],
        continue_final=True,
        max_tokens=settings.INSTRUCT_MAX_TOKENS,
        temperature=temperature,
        stop=settings.INSTRUCT_STOPS,
        n=n,
    )
    return [reply_program(reply, task["entry_point"]) for reply in replies]


def completion_programs(task, llm, n, temperature):
    """Continue the prompt; each program is the prompt plus one continuation."""
    prompt = task["prompt"]
    completions = llm.complete(
        prompt,
        max_tokens=settings.MAX_TOKENS,
        temperature=temperature,
        stop=settings.STOPS,
        n=n,
    )
    return [prompt + c for c in completions]


def examples_passed(program, prompt):
    """How many of the prompt's examples the program reproduces (see `run_examples`)."""
    return run_examples(program, prompt)[0]


def run_examples(program, prompt):
    """(examples reproduced, the first failure or None), run in a child process with a time
    limit so a candidate that loops or crashes cannot take the agent down with it."""
    examples = doc_examples(prompt)
    if not examples:
        return 0, None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: run the candidate, report, never return
        os.close(read_end)
        passed, failure = 0, None
        try:
            namespace = {}
            exec(program, namespace)
            for call, expected in examples:
                try:
                    value = eval(call, namespace)
                    if repr(value) == expected or str(value) == expected:
                        passed += 1
                        continue
                    why = f"`{call}` returned `{value!r:.{FAILURE_CHARS}}`, expected `{expected}`"
                except Exception as exc:
                    why = f"`{call}` raised {type(exc).__name__}: {exc}"
                if failure is None:
                    failure = why[:FAILURE_CHARS]
        except BaseException as exc:
            failure = f"running it raised {type(exc).__name__}: {exc}"[:FAILURE_CHARS]
        os.write(write_end, json.dumps([passed, failure]).encode())
        os._exit(0)
    os.close(write_end)
    report = _report(read_end, time.monotonic() + EXAMPLE_TIMEOUT_S)
    os.close(read_end)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    return report


def _report(read_end, deadline):
    """The child's [passed, failure], read until it parses (a process the candidate started may
    hold the pipe open, so its end is not waited for); none in time counts as none passed."""
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([read_end], [], [], left)
        chunk = os.read(read_end, 65536) if ready else b""
        if not chunk:
            break
        data += chunk
        try:
            passed, failure = json.loads(data)
        except ValueError:
            continue
        if isinstance(passed, int) and (failure is None or isinstance(failure, str)):
            return passed, failure
        break
    return 0, f"the examples did not finish within {EXAMPLE_TIMEOUT_S:g} s"
