"""A proposer served on this machine (`[edit] proposer_model` alone): a real vLLM server for
SmolLM2-135M, reached only through the gateway, as an edit's sessions reach it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.loop.config import EditSection, OperatorsSection


def test_the_proposer_keys_are_checked_together() -> None:
    assert EditSection(proposer_model="coder-1.5b").proposer_base_url is None  # served here
    with pytest.raises(ValidationError, match="proposer_base_url needs proposer_model"):
        EditSection(proposer_base_url="http://127.0.0.1:8000/v1")
    with pytest.raises(ValidationError, match="api_key_env is for a server"):
        EditSection(proposer_model="coder-1.5b", api_key_env="KEY")
    with pytest.raises(ValidationError, match="proposer_memory_fraction"):
        EditSection(proposer_model="coder-1.5b", proposer_memory_fraction=1.5)


def test_only_a_run_that_edits_needs_a_proposer() -> None:
    assert OperatorsSection().edits
    assert OperatorsSection(es_step=1, scaffold_edit=0, both=0.5).edits
    assert not OperatorsSection(es_step=1, scaffold_edit=0).edits  # Runtime serves no proposer


@pytest.mark.slow
def test_a_served_model_answers_through_the_gateway_and_stops_with_close(tmp_path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")
    from agent.gateway import Budget, Gateway, GatewayConfig
    from agent.policy.served_model import ServedModel, ServedModelConfig
    from agent.policy.tiny import TinyModelConfig, tiny_model
    from agent.policy.transformers_backend import TransformersBackend
    from agent.scaffold.llm_client import LLM

    local = TransformersBackend(*tiny_model(TinyModelConfig(seed=0)))  # the policy: never asked
    served = ServedModel(
        ServedModelConfig(model="smollm2-135m", max_model_len=2048, memory_fraction=0.1),
        tmp_path / "proposer.log",
    )
    with served, Gateway(local, GatewayConfig(batch_window_s=0.0)) as gateway:
        process = served.process
        assert served.endpoint is not None and served.endpoint.base_url.startswith("http://127.")
        token = gateway.open_session("edit:diagnose", Budget(tokens=40), external=served.endpoint)
        llm = LLM(gateway.socket_path, token)
        assert llm.models() == ["smollm2-135m", "lineage-policy"]  # the policy: if named
        reply = llm.chat([{"role": "user", "content": "Name a colour."}], max_tokens=16)
        record = gateway.close_session(token)
        assert len(reply) == 1 and reply[0].strip()
        assert 0 < record.tokens_used <= 16  # the server's own usage, within the budget
    assert process.poll() is not None  # closed with the run
    assert served.process is None


@pytest.mark.slow
def test_a_server_that_cannot_start_names_its_log(tmp_path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")
    from agent.policy.served_model import ServedModel, ServedModelConfig

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    served = ServedModel(ServedModelConfig(model=str(empty)), tmp_path / "proposer.log")
    with pytest.raises(RuntimeError, match="exited while starting; see .*proposer.log"):
        served.open()
    assert served.process is None
