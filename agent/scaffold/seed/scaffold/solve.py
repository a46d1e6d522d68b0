"""How the agent attacks a task: ask the model for programs, keep the best candidate.

`settings.PROTOCOL` picks how the task is put to the model (see settings.py). "instruct" is the
evaluators' own instruct protocol, message for message, and its replies become programs through
the evaluators' own sanitizer (`lineage_sanitize`, written beside this package in the sandbox), so
the seed scores what `lineage eval --protocol instruct` scores with the same model.
"""

import os
import select

from lineage_llm import LLMError
from lineage_sanitize import reply_program

from scaffold import settings
from scaffold.text import doc_examples

EXAMPLE_TIMEOUT_S = 2.0
_NO_CHAT_TEMPLATE = []  # set once the gateway says its model has no chat template


def solve(task, llm):
    prompt = task["prompt"]
    programs = candidates(task, llm, settings.SAMPLES, settings.TEMPERATURE)
    checking = (settings.SELECT_BY_EXAMPLES and len(programs) > 1) or settings.RETRY_SAMPLES > 0
    examples = doc_examples(prompt) if checking else []
    if not examples:
        return programs[0]
    scores = [examples_passed(p, prompt) for p in programs]
    if max(scores) < len(examples) and settings.RETRY_SAMPLES > 0:
        more = candidates(task, llm, settings.RETRY_SAMPLES, settings.RETRY_TEMPERATURE)
        programs += more
        scores += [examples_passed(p, prompt) for p in more]
    return programs[scores.index(max(scores))]  # ties keep the earliest program


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


def instruct_programs(task, llm, n, temperature):
    """Ask for a self-contained script, with the reply started by an opening fence; keep its
    imports and the definitions the entry point needs."""
    fence = settings.FENCE
    request = f"{settings.INSTRUCTION}\n{fence}\n{task['prompt'].strip()}\n{fence}\n"
    opening = f"{settings.RESPONSE_PREFIX}\n{fence}python\n"
    replies = llm.chat(
        [{"role": "user", "content": request}, {"role": "assistant", "content": opening}],
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
