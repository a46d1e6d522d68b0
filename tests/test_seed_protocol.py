"""The seed scaffold starts fair: it asks the instruct protocol through the gateway (the same
messages, the same rendered prompt and the same sanitizer as `lineage eval --protocol instruct`),
follows its `PROTOCOL` knob, and falls back to completion for a model without a chat template.
Real sandbox, real gateway; the tiny model for the plumbing, SmolLM2 for same-programs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from agent.cli import app
from agent.gateway import Gateway, GatewayConfig, tokenizer_chat_template
from agent.loop.config import load_config
from agent.policy import prompts
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
from agent.scaffold.jobs import PROTECTED_PATHS
from agent.scaffold.repo import seed_files
from agent.scaffold.solving import Scoring, SolveConfig, solve
from evaluators.datasets import load_humaneval
from evaluators.sanitize import reply_program
from sandbox import SandboxConfig, SandboxPool, Status

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
FAST = SolveConfig(tasks_per_job=2, threads=2, wall_s=120, tokens_per_task=512)


def seed_with(**knobs: object) -> dict[str, str]:
    """The seed with some settings replaced (each must exist)."""
    files = seed_files()
    text = files["scaffold/settings.py"]
    for name, value in knobs.items():
        line = next(x for x in text.splitlines() if x.startswith(f"{name} = "))
        text = text.replace(line, f"{name} = {value!r}")
    return {**files, "scaffold/settings.py": text}


@pytest.fixture(scope="module")
def tiny_backend() -> TransformersBackend:
    torch.set_num_threads(1)
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    tokenizer.chat_template = TEMPLATE
    return TransformersBackend(model, tokenizer)


def pool_for(gateway: Gateway, image: str) -> SandboxPool:
    gateway_dir = str(Path(gateway.socket_path).parent)
    return SandboxPool(SandboxConfig(workers=2, gateway_dir=gateway_dir), image=image)


def test_seed_settings_are_the_evaluators_instruct_protocol() -> None:
    files = seed_files()
    namespace: dict = {}
    exec(files["scaffold/settings.py"], namespace)
    assert namespace["PROTOCOL"] == "instruct"
    assert namespace["INSTRUCTION"] == prompts.INSTRUCTION
    assert namespace["RESPONSE_PREFIX"] == prompts.RESPONSE_PREFIX
    assert tuple(namespace["INSTRUCT_STOPS"]) == prompts.INSTRUCT_STOPS
    assert tuple(namespace["STOPS"]) == prompts.COMPLETION_STOPS
    assert namespace["INSTRUCT_MAX_TOKENS"] == prompts.MAX_NEW_TOKENS["instruct"]
    assert namespace["MAX_TOKENS"] == prompts.MAX_NEW_TOKENS["completion"]
    # issue 24's guard: the seed ships the fair protocol, no selection strategy switched on
    assert namespace["SAMPLES"] == 1 and namespace["SELECT_BY_EXAMPLES"] is False
    assert namespace["RETRY_SAMPLES"] == 0  # documented, off: the loop must find it
    assert namespace["REPAIR_ROUNDS"] == 0  # likewise
    assert "lineage_sanitize.py" in PROTECTED_PATHS
    # the seed's improve takes a file back out of a fenced reply: these must hold no fence
    assert not any("`" * 3 in files[f] for f in ("scaffold/settings.py", "scaffold/solve.py"))


def test_runs_and_the_demo_select_on_mbpp_example_and_hold_out_humaneval() -> None:
    demo = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.toml")
    for config in (load_config(None), demo):
        assert (config.tasks.train, config.tasks.dev, config.tasks.heldout) == (
            "mbpp-example:train",
            "mbpp-example:dev",
            "humaneval:test",
        )
        # the seed's instruct replies pass the gateway uncut
        assert config.solve.max_tokens_per_call >= prompts.MAX_NEW_TOKENS["instruct"]


@pytest.mark.docker
@pytest.mark.parametrize("protocol", ["instruct", "completion"])
def test_the_protocol_knob_picks_the_call(tiny_backend, sandbox_image, protocol: str) -> None:
    tasks = load_humaneval()[:2]
    template = tokenizer_chat_template(tiny_backend.tokenizer)
    files = seed_with(PROTOCOL=protocol, MAX_TOKENS=8, INSTRUCT_MAX_TOKENS=8)
    with (
        Gateway(tiny_backend, GatewayConfig(), template) as gateway,
        pool_for(gateway, sandbox_image) as pool,
    ):
        result = solve(files, tasks, pool, gateway, FAST)
    calls = {c.prompts[0]: c for s in result.sessions for c in s.calls}
    assert len(calls) == 2
    for attempt in result.attempts:
        task = attempt.task
        assert attempt.error is None, attempt.error
        if protocol == "instruct":
            call = calls[prompts.instruct_prompt(task.prompt, template)]
            assert call.endpoint == "chat/completions"
            assert call.request["messages"] == prompts.instruct_messages(task.prompt)
            assert call.request["continue_final_message"] is True
            assert tuple(call.request["stop"]) == prompts.INSTRUCT_STOPS
            assert attempt.program == reply_program(call.texts[0], task.entry_point)
        else:
            call = calls[task.prompt]
            assert call.endpoint == "completions"
            assert attempt.program == task.prompt + call.texts[0]


@pytest.mark.docker
def test_without_a_chat_template_the_seed_falls_back_to_completion(sandbox_image) -> None:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    backend = TransformersBackend(model, tokenizer)
    tasks = load_humaneval()[:2]
    files = seed_with(MAX_TOKENS=8, INSTRUCT_MAX_TOKENS=8)
    with Gateway(backend, GatewayConfig()) as gateway, pool_for(gateway, sandbox_image) as pool:
        result = solve(files, tasks, pool, gateway, FAST)
    for attempt in result.attempts:
        assert attempt.error is None, attempt.error
        assert attempt.program.startswith(attempt.task.prompt)
    calls = [c for s in result.sessions for c in s.calls]
    # each task's thread may try the chat once before the first refusal is seen; none succeed
    assert all(c.error and "chat template" in c.error for c in calls if c.endpoint != "completions")
    assert sum(c.endpoint == "completions" for c in calls) == 2


@pytest.mark.docker
@pytest.mark.slow
def test_base_node_programs_are_lineage_eval_instruct_programs(tmp_path: Path, sandbox_image):
    """SmolLM2 (fp32, greedy): the seed in the sandbox through the gateway writes, task for task,
    the program `lineage eval --protocol instruct` writes, and both are judged alike."""
    tokens = 96
    tasks = load_humaneval()[:3]
    threads = torch.get_num_threads()
    args = ["eval", "--model", "smollm2-135m", "--protocol", "instruct", "--limit", "3"]
    args += ["--max-new-tokens", str(tokens), "--dtype", "float32", "--threads", "1"]
    args += ["--workers", "1", "--out", str(tmp_path)]
    try:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        backend = TransformersBackend.from_config(
            TransformersBackendConfig(model="smollm2-135m", dtype="float32", threads=1)
        )
        template = tokenizer_chat_template(backend.tokenizer)
        files = seed_with(INSTRUCT_MAX_TOKENS=tokens)
        config = SolveConfig(tasks_per_job=3, threads=3, wall_s=300, max_tokens_per_call=tokens)
        with (
            Gateway(backend, GatewayConfig(), template) as gateway,
            pool_for(gateway, sandbox_image) as pool,
            SandboxPool(SandboxConfig(workers=1), image=sandbox_image) as scoring,
        ):
            judged = solve(files, tasks, pool, gateway, config, scoring=Scoring(scoring)).attempts
    finally:
        torch.set_num_threads(threads)
    lines = (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()
    evaluated = [json.loads(line) for line in lines]
    assert [a.program for a in judged] == [e["solution"] for e in evaluated]
    assert any(e["solution"] for e in evaluated)  # not all empty: the comparison means something
    assert [a.verdict.status is Status.PASSED for a in judged] == [e["passed"] for e in evaluated]
