"""The two prompting protocols: EvalPlus's instruct prompt word for word, rendered as EvalPlus
renders it and as the gateway renders a continued chat, programs built per protocol, and
`lineage eval --protocol` (chosen by the chat template, refused without one, named in the output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer
from typer.testing import CliRunner

from agent.cli import app
from agent.gateway import Budget, Gateway, GatewayConfig, tokenizer_chat_template
from agent.policy import assets, prompts
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend
from agent.scaffold.llm_client import LLM
from evaluators.datasets import load_humaneval

runner = CliRunner()
TASK = load_humaneval()[2]  # truncate_number: a docstring with an example


def test_instruct_messages_are_evalplus_prompt_word_for_word() -> None:
    user, assistant = prompts.instruct_messages(TASK.prompt)
    assert user == {
        "role": "user",
        "content": "Please provide a self-contained Python script that solves the following "
        "problem in a markdown code block:\n```\n" + TASK.prompt.strip() + "\n```\n",
    }
    assert assistant == {
        "role": "assistant",
        "content": "Below is a Python script with a self-contained function that solves the "
        "problem and passes corresponding tests:\n```python\n",
    }
    assert "\n```\n" in prompts.INSTRUCT_STOPS


@pytest.mark.parametrize("model", ["smollm2-135m", "default"])
def test_instruct_prompt_is_what_evalplus_renders(model: str) -> None:
    """EvalPlus renders the whole chat with a marker where the reply's code begins and cuts there;
    we render the user turn, open the assistant's and append the reply's start: same text."""
    tokenizer = AutoTokenizer.from_pretrained(assets.locate(model))
    marker = "-[[]]-this-is-really-our-highest-priority-[[]]-"
    user, assistant = prompts.instruct_messages(TASK.prompt)
    whole = [user, {"role": "assistant", "content": assistant["content"] + marker + "\n```\n"}]
    evalplus = tokenizer.apply_chat_template(whole, tokenize=False).split(marker)[0]
    ours = prompts.instruct_prompt(TASK.prompt, tokenizer_chat_template(tokenizer))
    assert ours == evalplus
    assert ours.endswith("passes corresponding tests:\n```python\n")


def test_instruct_prompt_is_what_the_gateway_sends_for_the_continued_chat() -> None:
    """The seed asks the gateway with these messages and `continue_final`; the backend must see
    exactly the prompt `lineage eval --protocol instruct` generates from."""
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    seen: list[list[str]] = []
    backend = TransformersBackend(model, tokenizer)

    class Recording:
        tokenizer = backend.tokenizer

        def generate(self, texts, config, perturbation=None, member_of_row=None, on_done=None):
            seen.append(list(texts))
            return backend.generate(texts, config, perturbation, member_of_row, on_done)

    template = tokenizer_chat_template(tokenizer)
    with Gateway(Recording(), GatewayConfig(batch_window_s=0.0), template) as gateway:
        llm = LLM(gateway.socket_path, gateway.open_session("t", Budget()))
        llm.chat(prompts.instruct_messages(TASK.prompt), max_tokens=2, continue_final=True)
    assert seen == [[prompts.instruct_prompt(TASK.prompt, template)]]


def test_default_protocol_follows_the_chat_template() -> None:
    _, tokenizer = tiny_model()
    assert prompts.default_protocol(tokenizer) == "completion"
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    assert prompts.default_protocol(tokenizer) == "instruct"


def test_programs_per_protocol() -> None:
    body = "    return number % 1.0\n"
    assert prompts.program("completion", TASK.prompt, TASK.entry_point, body) == TASK.prompt + body
    reply = (
        f"def truncate_number(number: float) -> float:\n{body}\nprint(truncate_number(3.5))\n```"
    )
    assert prompts.program("instruct", TASK.prompt, TASK.entry_point, reply) == (
        f"def truncate_number(number: float) -> float:\n{body}"
    )
    assert prompts.protocol_stops("completion") == prompts.COMPLETION_STOPS
    assert prompts.MAX_NEW_TOKENS == {"completion": 384, "instruct": 768}


def test_instruct_without_a_chat_template_is_refused(tmp_path: Path) -> None:
    model, tokenizer = tiny_model()
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    args = ["eval", "--model", str(tmp_path / "tiny"), "--protocol", "instruct", "--limit", "1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no chat template" in result.output and "--protocol completion" in result.output


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("protocol", [None, "completion"])
def test_eval_runs_the_protocol_and_says_which(tmp_path: Path, protocol: str | None) -> None:
    """SmolLM2 has a chat template, so instruct is its default; each protocol writes its own
    kind of sample (a `solution` with its `reply`, or a `completion`) and `lineage score`
    judges both."""
    threads = torch.get_num_threads()
    args = ["eval", "--model", "smollm2-135m", "--limit", "2", "--max-new-tokens", "24"]
    args += ["--batch-size", "2", "--threads", "1", "--workers", "1", "--out", str(tmp_path)]
    args += ["--protocol", protocol] if protocol else []
    try:
        result = runner.invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    ran = protocol or "instruct"
    assert f"protocol {ran}" in " ".join(result.output.split())
    assert json.loads((tmp_path / "eval.json").read_text())["protocol"] == ran
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    tasks = {t.task_id: t for t in load_humaneval()}
    for sample in samples:
        if ran == "instruct":
            assert "completion" not in sample
            assert sample["solution"] == prompts.program(
                "instruct", "", tasks[sample["task_id"]].entry_point, sample["reply"]
            )
        else:
            assert set(sample) >= {"completion"} and "solution" not in sample
    results = (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()
    assert len(results) == 2
